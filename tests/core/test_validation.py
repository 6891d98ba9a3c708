"""Upload validation: every refusal names the line and the reason; a valid script passes."""

from django.test import SimpleTestCase

from parseq.core.validation import validate_script
from runner.modules import modules_of_requirements
from tests.helpers import script


def problems_of(source, filename="parser.py"):
    content = source if isinstance(source, bytes) else script(source)
    return [str(problem) for problem in validate_script(filename=filename, content=content)]


class ValidScriptTests(SimpleTestCase):
    def test_a_script_using_the_standard_library_and_allowed_libraries_passes(self):
        self.assertEqual(
            problems_of("""
                import json
                from datetime import date
                import requests
                from bs4 import BeautifulSoup
                import xml.etree.ElementTree as ET

                def parse(limit=10, *, verbose=False):
                    return {"a.json": json.dumps([]).encode()}
            """),
            [],
        )


class RefusalTests(SimpleTestCase):
    def test_a_file_that_is_not_py_is_refused(self):
        self.assertEqual(
            problems_of("def parse(): return {}", filename="parser.txt"),
            ["the script must be a .py file, not 'parser.txt'"],
        )

    def test_a_script_over_256_kib_is_refused(self):
        content = b"def parse():\n    return {}\n" + b"#" * (256 * 1024)

        self.assertIn("the limit is 262144 bytes (256 KiB)", problems_of(content)[0])

    def test_a_script_that_is_not_utf8_is_refused_with_the_line(self):
        self.assertEqual(
            problems_of(b"x = 1\ny = '\xff'\ndef parse():\n    return {}\n"),
            ["line 2: the script is not valid UTF-8 text"],
        )

    def test_a_syntax_error_is_refused_with_its_line(self):
        self.assertEqual(
            problems_of("x = 1\ndef parse():\n    return {'a': b'1'}}\n"), ["line 3: syntax error: unmatched '}'"]
        )

    def test_a_script_without_parse_is_refused(self):
        self.assertEqual(
            problems_of("def main():\n    return {}\n"), ["the script must define a top-level function parse()"]
        )

    def test_a_parse_nested_in_a_class_does_not_count(self):
        self.assertEqual(
            problems_of("class Spider:\n    def parse(self):\n        return {}\n"),
            ["the script must define a top-level function parse()"],
        )

    def test_a_parse_with_required_arguments_is_refused(self):
        self.assertEqual(
            problems_of("x = 1\ny = 2\ndef parse(url, retries=3, *, session):\n    return {}\n"),
            ["line 3: parse() must take no required arguments, but requires url, session"],
        )

    def test_an_async_parse_is_refused(self):
        self.assertEqual(
            problems_of("async def parse():\n    return {}\n"), ["line 1: parse() must be a plain function, not async"]
        )

    def test_imports_outside_the_allowed_list_are_refused_each_with_its_line(self):
        problems = problems_of("""
            import os
            import numpy
            from django.conf import settings

            def parse():
                import parseq.settings
                return {}
        """)

        self.assertEqual(len(problems), 3)
        self.assertTrue(problems[0].startswith("line 2: module 'numpy' is not allowed"))
        self.assertIn("use the standard library or PIL, bs4, lxml, requests", problems[0])
        self.assertTrue(problems[1].startswith("line 3: module 'django' is not allowed"))
        self.assertTrue(problems[2].startswith("line 6: module 'parseq' is not allowed"))

    def test_relative_imports_are_refused(self):
        self.assertEqual(
            problems_of("from . import helpers\ndef parse():\n    return {}\n"),
            ["line 1: relative imports are not allowed: a script is a single file"],
        )

    def test_a_nul_byte_is_refused(self):
        self.assertEqual(len(problems_of(b"def parse():\n    return {}\n\x00")), 1)


class SandboxRequirementsTests(SimpleTestCase):
    def test_module_names_come_from_the_distribution_or_an_import_comment(self):
        text = "# comment\nrequests==2.0\nbeautifulsoup4==4.0  # import: bs4\nPy-Thing[extra]>=1\n\nfoo.bar==1\n"

        self.assertEqual(modules_of_requirements(text), {"requests", "bs4", "py_thing", "foo_bar"})
