"""The runner's imports: the sandbox's code stands alone, and the worker's modules import each other in no circle.

runner/sandbox/ runs in the sandbox's interpreter, which has the standard library and the sandbox's own
libraries but not Parseq: its files may import each other (as top-level modules, the way they run there)
and nothing of `runner`.
"""

import ast
import os
import subprocess
import sys
import unittest

from django.conf import settings

RUNNER = settings.BASE_DIR / "runner"
SANDBOX = RUNNER / "sandbox"
SANDBOX_LIBRARIES = {"RestrictedPython"}


def imported_names(path):
    """Every name `path` imports, anywhere in its code: `from a import b` as a.b, relative ones starting with "."."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield from (f"{base}.{alias.name}" for alias in node.names)


def runner_modules():
    """{dotted name: path} of the worker's modules (runner/sandbox/ is the sandbox's)."""
    found = {}
    for directory, _, files in os.walk(RUNNER):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path[:-3], settings.BASE_DIR).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def runner_imports(modules):
    """{module: the runner modules it imports}: `from runner.x import y` is runner.x.y where that is a module."""
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path):
            for candidate in (name, name.rpartition(".")[0]):
                if candidate in modules and candidate != module:
                    targets.add(candidate)
                    break
        graph[module] = targets
    return graph


def find_circle(graph):
    """One circle of imports as a list of modules, or None (depth-first search)."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


class SandboxCodeTests(unittest.TestCase):
    def test_the_sandboxs_files_import_only_the_standard_library_its_libraries_and_each_other(self):
        siblings = {name[:-3] for name in os.listdir(SANDBOX) if name.endswith(".py")}
        allowed = set(sys.stdlib_module_names) | SANDBOX_LIBRARIES | siblings
        wrong = [
            f"{name}: {imported}"
            for name in sorted(siblings - {"__init__"})
            for imported in imported_names(SANDBOX / f"{name}.py")
            if imported.startswith(".") or imported.split(".")[0] not in allowed
        ]

        self.assertEqual(wrong, [])

    def test_the_sandboxs_interpreter_loads_its_code_without_any_of_the_runner(self):
        # As the zygote does: its own directory first on the path, then its siblings by name.
        probe = (
            "import sys\n"
            f"sys.path.insert(0, {str(SANDBOX)!r})\n"
            "import bootstrap, restricted, self_jail, zygote\n"
            "print(sorted(name for name in sys.modules if name == 'runner' or name.startswith('runner.')))\n"
        )
        done = subprocess.run(
            [settings.SANDBOX_PYTHON, "-I", "-B", "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )

        self.assertEqual((done.returncode, done.stdout), (0, "[]\n"), done.stderr)


class WorkerModuleTests(unittest.TestCase):
    def test_the_runners_modules_import_each_other_in_no_circle(self):
        self.assertIsNone(find_circle(runner_imports(runner_modules())))

    def test_the_circle_finder_finds_a_circle(self):
        self.assertEqual(find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
