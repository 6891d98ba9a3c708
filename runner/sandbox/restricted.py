"""RestrictedPython as a policy layer, run inside the sandbox (it needs only the sandbox's libraries).

It is not the boundary (the jail is): it refuses the idioms of escapes early and
plainly, names and attributes starting with "_", exec/eval/compile, dynamic
imports, and confines imports to the allowed modules. It is permissive enough
for ordinary scrapers: printing goes to the log, and a script may set items and
attributes of its own objects and of library objects (session.headers[...]).
Imported by the bootstrap by path, so it must import nothing of Parseq's. The worker checks scripts
at upload with the same policy (runner/restricted.py).
"""

import ast
import builtins
import copy
import operator
import sys
import types

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_exec, limited_builtins, safe_builtins
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence, safer_getattr
from RestrictedPython.transformer import IOPERATOR_TO_STR, copy_locations

# Modules that only serve to get around the policy, even when the standard library is allowed: they reach the real
# builtins, frames and code objects, or import and run code the policy never saw.
DENIED_MODULES = frozenset(
    {
        "builtins", "code", "codeop", "ctypes", "gc", "imp", "importlib", "inspect", "marshal", "modulefinder",
        "pkgutil", "pydoc", "runpy", "zipimport",
    }
)  # fmt: skip
# What sys holds that leads to every module already imported, or to the import machinery.
DENIED_SYS_ATTRIBUTES = frozenset({"modules", "meta_path", "path_hooks", "path_importer_cache"})
# Objects that lead to a function's globals, its code or the interpreter's stack.
DENIED_TYPES = (types.FrameType, types.CodeType, types.TracebackType)
# Private modules the standard library imports by itself when a script calls it
# (datetime.strptime and time.strptime import _strptime on first use).
STDLIB_LAZY_IMPORTS = frozenset({"_strptime"})
# Real types, not RestrictedPython's `limited_list`/`limited_tuple` functions: isinstance() needs them.
EXTRA_BUILTINS = [
    "all",
    "any",
    "bytearray",
    "bytes",
    "classmethod",
    "dict",
    "enumerate",
    "filter",
    "format",
    "frozenset",
    "hasattr",
    "iter",
    "list",
    "map",
    "max",
    "memoryview",
    "min",
    "next",
    "object",
    "open",
    "property",
    "reversed",
    "set",
    "sorted",
    "staticmethod",
    "sum",
    "super",
    "tuple",
    "type",
    "zip",
]
# The parent's special methods a class may reach with super(): calling them gives nothing away.
SUPER_METHODS = frozenset({"__init__", "__post_init__", "__str__", "__repr__", "__eq__", "__hash__", "__setitem__"})
IN_PLACE = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor, "@=": operator.imatmul,
}  # fmt: skip


class PolicyError(Exception):
    """The script broke the RestrictedPython policy; the message names the line when it can."""


class ScraperPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy, plus two things ordinary code does all the time.

    Annotated names (dataclass fields, `total: int = 0`) are allowed,
    `obj.count += 1` or `totals[key] += 1` become guarded plain assignments,
    where RestrictedPython itself refuses them, a class may call its parent's
    special methods through `super()` (`super().__init__(message)`), and
    `if __name__ == "__main__":` may be read (it is never true in a run).
    """

    def visit_Name(self, node):
        if node.id == "__name__" and isinstance(node.ctx, ast.Load):
            return node
        return super().visit_Name(node)

    def visit_Attribute(self, node):
        if is_call_to_super(node.value) and node.attr in SUPER_METHODS and isinstance(node.ctx, ast.Load):
            node.value = self.node_contents_visit(node.value)
            return node
        return super().visit_Attribute(node)

    def visit_AnnAssign(self, node):
        if not isinstance(node.target, ast.Name):
            self.error(node, "Annotated assignment of attributes or items is not allowed.")
            return node
        return self.node_contents_visit(node)

    def visit_AugAssign(self, node):
        if not isinstance(node.target, (ast.Attribute, ast.Subscript)):
            return super().visit_AugAssign(node)
        current = copy.deepcopy(node.target)
        current.ctx = ast.Load()
        operation = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        value = ast.Call(
            func=ast.Name("_inplacevar_", ast.Load()),
            args=[operation, self.visit(current), self.visit(node.value)],
            keywords=[],
        )
        assignment = ast.Assign(targets=[self.visit(node.target)], value=value)
        copy_locations(assignment, node)
        return assignment


def is_call_to_super(node):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def compile_script(source, filename):
    result = compile_restricted_exec(source, filename, policy=ScraperPolicy)
    if result.errors:
        raise PolicyError("refused by the restricted mode:\n" + "\n".join(result.errors))
    return result.code


def namespace(allowed_modules, name):
    """Globals for running a compiled script under the policy's guards."""
    allowed = frozenset(allowed_modules) - DENIED_MODULES

    def guarded_import(module, globals=None, locals=None, fromlist=(), level=0):
        top = module.split(".")[0]
        private = top.startswith("_") and top not in STDLIB_LAZY_IMPORTS
        if level or top not in allowed or private:
            raise ImportError(f"module {module!r} is not allowed in restricted mode")
        return builtins.__import__(module, globals, locals, fromlist, level)

    def vetted(obj, attribute, value):
        """`value`, unless it leads where the policy does not go: a denied or private module, sys's module map, a frame.

        The libraries' own dependencies stay reachable (`requests.packages.urllib3.disable_warnings()`).
        """
        if obj is sys and attribute in DENIED_SYS_ATTRIBUTES:
            raise AttributeError(f"sys.{attribute} is not allowed in restricted mode")
        if isinstance(value, types.ModuleType) and is_denied_module(value.__name__):
            raise AttributeError(f"{attribute!r} is the module {value.__name__!r}, not allowed in restricted mode")
        if isinstance(value, DENIED_TYPES):
            raise AttributeError(f"{attribute!r} is a {type(value).__name__} object, not allowed in restricted mode")
        return value

    def guarded_attribute(obj, attribute, default=None):
        """`obj.attribute` in a script: RestrictedPython's guard (no "_" names, no str.format), then `vetted`."""
        return vetted(obj, attribute, safer_getattr(obj, attribute, default))

    def guarded_getattr(obj, attribute, *default):
        """The builtin getattr(): no name starting with "_", then `vetted`."""
        if isinstance(attribute, str) and attribute.startswith("_"):
            raise AttributeError(f"{attribute!r} starts with '_' and is not allowed in restricted mode")
        return vetted(obj, attribute, getattr(obj, attribute, *default))

    allowed_builtins = {**safe_builtins, **limited_builtins}
    allowed_builtins.update({builtin: getattr(builtins, builtin) for builtin in EXTRA_BUILTINS})
    allowed_builtins.update({"__import__": guarded_import, "getattr": guarded_getattr})
    return {
        "__builtins__": allowed_builtins,
        "__name__": name,
        "__metaclass__": type,
        "_getattr_": guarded_attribute,
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": guarded_write,
        "_inplacevar_": lambda op, x, y: IN_PLACE[op](x, y),
        "_apply_": lambda function, *args, **kwargs: function(*args, **kwargs),
        "_print_": LogPrinter,
    }


def is_denied_module(name):
    top = name.split(".")[0]
    return top in DENIED_MODULES or (top.startswith("_") and top not in STDLIB_LAZY_IMPORTS)


def guarded_write(obj):
    """Writes to objects are fine, except to modules and classes: no monkey-patching the libraries."""
    if isinstance(obj, (types.ModuleType, type)):
        raise TypeError(f"changing {getattr(obj, '__name__', obj)!r} is not allowed in restricted mode")
    return obj


class LogPrinter:
    """print() under RestrictedPython: straight to the run's log."""

    def __init__(self, _getattr_=None):
        pass

    def _call_print(self, *objects, **options):
        options.setdefault("file", sys.stdout)
        print(*objects, **options)

    def __call__(self):
        return ""
