"""Parseq's layers point one way: api, alerts → scheduling → core → runner (README: Architecture).

Read from the source, function-level imports included: no import may point up a layer or
across to another app of the same layer, and no modules may import each other in a circle.
"""

import ast
import os
import unittest
from collections import defaultdict

from django.conf import settings

PACKAGE = settings.BASE_DIR / "parseq"
# Higher imports lower, never the other way. An app's admin pages are in its layer: each app adds its own
# parts to the parser pages. The project's own modules (urls, health, settings) sit above everything.
LAYERS = {"project": 4, "api": 3, "alerts": 3, "scheduling": 2, "worker": 2, "core": 1, "access": 1}
# parseq.env, parseq.logs, parseq.database and parseq.host: settings helpers, log formats, the database's waits and
# turns, the host's memory; used by all
LAYERS |= {"foundation": 0}
FOUNDATION = {"parseq.env", "parseq.logs", "parseq.database", "parseq.host"}


def modules():
    """{dotted name: path} of parseq's modules, migrations left out (they only record history)."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        if "migrations" in directory.split(os.sep):
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path[:-3], settings.BASE_DIR).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(known):
    """{module: the parseq modules it imports anywhere in its code}."""
    graph = defaultdict(set)
    for module, path in known.items():
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in ast.walk(tree):
            for name in imported_names(node, package):
                target = innermost_module(name, known)
                if target and target != module and target != package:
                    graph[module].add(target)
    return graph


def imported_names(node, package):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        return [f"{base}.{alias.name}" for alias in node.names] + [base]
    return []


def innermost_module(name, known):
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(module):
    parts = module.split(".")
    if module in FOUNDATION:
        return "foundation"
    if len(parts) < 3 and not os.path.isdir(PACKAGE / parts[-1]):
        return "project"  # parseq itself, or a module of its own such as parseq.urls
    return parts[1]


def circles(graph):
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in list(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


class LayerTests(unittest.TestCase):
    def setUp(self):
        self.graph = imports(modules())

    def test_every_app_has_a_layer(self):
        self.assertEqual({layer_of(module) for module in modules()} - set(LAYERS), set())

    def test_no_import_points_up_a_layer_or_across_to_another_app_of_the_same_layer(self):
        wrong = [
            f"{module} -> {target}"
            for module, targets in sorted(self.graph.items())
            for target in sorted(targets)
            if LAYERS[layer_of(target)] > LAYERS[layer_of(module)]
            or (LAYERS[layer_of(target)] == LAYERS[layer_of(module)] and layer_of(target) != layer_of(module))
        ]

        self.assertEqual(wrong, [])

    def test_no_modules_import_each_other_in_a_circle(self):
        self.assertEqual(circles(self.graph), [])

    def test_the_circle_finder_finds_a_circle_through_three_modules(self):
        self.assertEqual(circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [{"a", "b", "c"}])
