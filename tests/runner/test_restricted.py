"""The RestrictedPython policy: ordinary scrapers run, the idioms of escapes are refused plainly."""

import os

from django.test import SimpleTestCase

import runner
from parseq.core.validation import validate_script
from tests.helpers import script
from tests.runner.test_sandbox import SandboxTestCase, under_bwrap, under_docker, warm_start, warm_under_bwrap

TYPICAL_SCRAPER = os.path.join(os.path.dirname(__file__), "typical_scraper.py")


class RestrictedRunTests(SandboxTestCase):
    def run_restricted(self, source):
        return self.run_source(source, restricted=True)

    def test_a_typical_requests_and_beautifulsoup_scraper_runs_unchanged(self):
        with open(TYPICAL_SCRAPER) as file:
            outcome = self.run_restricted(file.read())

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertIn("parsed 2 rows, total 3.5, first a and 1 more, calls 1", outcome.log)
        self.assertIn("handled unexpected page at http://example.invalid for http://example.invalid", outcome.log)
        with open(os.path.join(self.out_dir, "rows.json")) as file:
            self.assertEqual(file.read(), '{"a": 1.5, "b": 2.0}')

    def test_escape_idioms_are_refused_with_their_lines(self):
        for body, expected in [
            ("return ().__class__", 'Line 2: "__class__" is an invalid attribute name'),
            ("return __import__('os')", 'Line 2: "__import__" is an invalid variable name'),
            ("return eval('1')", "Line 2: Eval calls are not allowed."),
            ("exec('x = 1')", "Line 2: Exec calls are not allowed."),
        ]:
            with self.subTest(body=body):
                outcome = self.run_restricted(f"def parse():\n    {body}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertIn("refused by the restricted mode", outcome.error)
                self.assertIn(expected, outcome.error)

    def test_dynamic_escapes_are_refused_at_run_time(self):
        for body, expected in [
            ("return getattr((), '__class__')", "'__class__' starts with '_'"),
            ("import importlib\n    return {}", "module 'importlib' is not allowed in restricted mode"),
            ("import numpy\n    return {}", "module 'numpy' is not allowed in restricted mode"),
            ("import json\n    json.dumps = None", "changing 'json' is not allowed in restricted mode"),
        ]:
            with self.subTest(body=body):
                outcome = self.run_restricted(f"def parse():\n    {body}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertIn(expected, outcome.error)

    def test_no_route_reaches_the_real_builtins_the_import_machinery_or_a_frame(self):
        # Each was a way out once (found by an attacker): sys.modules["builtins"].eval, a module's own imports...
        for body, expected in [
            ("import sys\n    sys.modules['builtins'].eval('1')", "sys.modules is not allowed"),
            ("import sys\n    getattr(sys, 'modules')", "sys.modules is not allowed"),
            ("import os\n    os.sys.meta_path", "sys.meta_path is not allowed"),
            ("import dataclasses\n    dataclasses.builtins.eval('1')", "the module 'builtins', not allowed"),
            ("import enum\n    enum.bltns.eval('1')", "the module 'builtins', not allowed"),
            ("import zipfile\n    zipfile.importlib.import_module('ctypes')", "the module 'importlib', not allowed"),
            ("import pkgutil", "module 'pkgutil' is not allowed"),
            ("import zipimport", "module 'zipimport' is not allowed"),
            (
                # RestrictedPython refuses these names as written; getattr() with a computed name reaches the value
                "import sys\n    try:\n        1 / 0\n    except ZeroDivisionError:\n"
                "        getattr(sys.exc_info()[2], 'tb_' + 'frame')",
                "'tb_frame' is a frame object, not allowed",
            ),
            ("g = (x for x in [1])\n    getattr(g, 'gi_' + 'frame')", "'gi_frame' is a frame object, not allowed"),
            ("g = (x for x in [1])\n    getattr(g, 'gi_' + 'code')", "'gi_code' is a code object, not allowed"),
        ]:
            with self.subTest(body=body):
                outcome = self.run_restricted(f"def parse():\n    {body}\n    return {{}}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR, outcome.error)
                self.assertIn(expected, outcome.error)

    def test_allowed_modules_and_their_ordinary_attributes_still_work(self):
        outcome = self.run_restricted("""
            import os, sys, json, dataclasses, zipfile, io
            import requests

            def parse():
                requests.packages.urllib3.disable_warnings()  # a library's own dependency, as scrapers reach it
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as archive:
                    archive.writestr("a.txt", "a")
                parts = [sys.version_info.major, os.path.join("a", "b"), json.dumps({"ok": True})]
                return {"r.txt": repr(parts).encode(), "a.zip": buffer.getvalue()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)

    def test_the_same_script_unrestricted_may_use_any_name(self):
        outcome = self.run_source("def parse():\n    return {'c.txt': ().__class__.__name__.encode()}\n")

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)


BwrapRestrictedRunTests = under_bwrap(RestrictedRunTests)
DockerRestrictedRunTests = under_docker(RestrictedRunTests)
WarmRestrictedRunTests = warm_start(RestrictedRunTests)
WarmBwrapRestrictedRunTests = warm_under_bwrap(RestrictedRunTests)


class RestrictedUploadTests(SimpleTestCase):
    def problems(self, source):
        content = script(source)
        return [str(p) for p in validate_script(filename="p.py", content=content, restricted=True)]

    def test_a_typical_scraper_passes(self):
        with open(TYPICAL_SCRAPER, "rb") as file:
            self.assertEqual(validate_script(filename="p.py", content=file.read(), restricted=True), [])

    def test_escapes_are_refused_at_upload_each_with_its_line(self):
        problems = self.problems("""
            import importlib

            def parse():
                x = ().__class__
                return eval("1")
        """)

        self.assertEqual(
            problems,
            [
                "line 1: module 'importlib' is not allowed: use the standard library or PIL, bs4, lxml, requests",
                'line 4: restricted mode: "__class__" is an invalid attribute name because it starts with "_".',
                "line 5: restricted mode: Eval calls are not allowed.",
            ],
        )

    def test_super_reaches_its_parents_special_methods_and_nothing_beyond(self):
        self.assertEqual(
            self.problems(
                "class E(Exception):\n    def __init__(self):\n        super().__init__('x')\n"
                "def parse():\n    return {}\n"
            ),
            [],
        )
        self.assertEqual(
            self.problems("def parse():\n    return super().__init__.__globals__\n"),
            ['line 2: restricted mode: "__globals__" is an invalid attribute name because it starts with "_".'],
        )

    def test_the_main_guard_may_read_the_module_name_but_nothing_may_set_it(self):
        self.assertEqual(self.problems("def parse():\n    return {}\nif __name__ == '__main__':\n    parse()\n"), [])
        self.assertEqual(
            self.problems("__name__ = 'x'\ndef parse():\n    return {}\n"),
            ['line 1: restricted mode: "__name__" is an invalid variable name because it starts with "_"'],
        )

    def test_str_format_on_a_literal_or_on_str_is_refused_at_upload_with_its_line(self):
        problems = self.problems(
            "def parse():\n    a = '{}'.format(1)\n    b = str.format('{}', 2)\n"
            "    c = '{x}'.format_map({})\n    return {f'{a}.txt': b''}\n"
        )

        self.assertEqual(
            problems,
            [
                "line 2: restricted mode: str.format() is not allowed in restricted mode; use an f-string",
                "line 3: restricted mode: str.format() is not allowed in restricted mode; use an f-string",
                "line 4: restricted mode: str.format_map() is not allowed in restricted mode; use an f-string",
            ],
        )

    def test_without_restricted_mode_the_same_names_pass(self):
        content = script("def parse():\n    return {'a': ().__class__.__name__.encode()}\n")

        self.assertEqual(validate_script(filename="p.py", content=content, restricted=False), [])


class EverydayStandardLibraryTests(SandboxTestCase):
    def test_strptime_and_isinstance_of_lists_and_tuples_work_in_restricted_mode(self):
        outcome = self.run_source(
            """
            import datetime

            def parse():
                day = datetime.datetime.strptime("28.11.2026", "%d.%m.%Y").date()
                kinds = [isinstance([], list), isinstance((), tuple), isinstance(1.5, int | float)]
                return {"out.txt": f"{day} {kinds}".encode()}
            """,
            restricted=True,
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "out.txt")) as file:
            self.assertEqual(file.read(), "2026-11-28 [True, True, True]")

    def test_other_private_modules_stay_refused(self):
        outcome = self.run_source("import _posixsubprocess\n\ndef parse():\n    return {}\n", restricted=True)

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn('"_posixsubprocess" is an invalid variable name', outcome.error)
