"""The restricted mode's check at upload, in the worker: what a run under the policy would refuse.

The policy itself runs inside the sandbox (runner/sandbox/restricted.py); this module shares its
transformer and its list of denied modules, so an upload is refused for what a run would refuse.
"""

import ast

from RestrictedPython import compile_restricted_exec

from runner.sandbox.restricted import DENIED_MODULES, ScraperPolicy

__all__ = ["DENIED_MODULES", "policy_errors"]


def policy_errors(source: str, filename: str) -> list[str]:
    """The policy's refusals of a script, as "Line N: reason" strings.

    With what a run would refuse and the source shows: str.format on a string literal or on str itself.
    """
    errors = list(compile_restricted_exec(source, filename, policy=ScraperPolicy).errors)
    return errors or string_format_errors(source)


def string_format_errors(source: str) -> list[str]:
    """`"...".format(...)` and `str.format`: the guard refuses them at run time (a format string reaches attributes)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and node.attr in ("format", "format_map")):
            continue
        literal = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if literal or (isinstance(node.value, ast.Name) and node.value.id == "str"):
            found.append((node.lineno, node.col_offset, node.attr))
    reason = "is not allowed in restricted mode; use an f-string"
    return [f"Line {line}: str.{name}() {reason}" for line, _, name in sorted(found)]
