"""The OpenAPI schema and its docs, and schemathesis fuzzing the live API from that schema."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import TestCase, override_settings, tag
from drf_spectacular.validation import validate_schema
from rest_framework.authtoken.models import Token

from parseq.core.models import Run
from tests.api.helpers import FAST_PASSWORDS, completed_run, make_users
from tests.helpers import TemporaryMediaMixin, make_parser

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Each operation gets this many generated cases per phase; raise it locally for a deeper search.
FUZZ_EXAMPLES = os.environ.get("PARSEQ_FUZZ_EXAMPLES", "12")
# The same cases on every run, so that CI is repeatable; another seed explores others.
FUZZ_SEED = os.environ.get("PARSEQ_FUZZ_SEED", "1")


class SchemaTests(TestCase):
    def test_the_schema_is_valid_openapi_3_and_covers_every_endpoint(self):
        response = self.client.get("/api/schema/", {"format": "json"})

        self.assertEqual(response.status_code, 200)
        schema = response.json()
        validate_schema(schema)
        self.assertTrue(schema["openapi"].startswith("3."))
        self.assertEqual(
            sorted(schema["paths"]),
            [
                "/api/audit/",
                "/api/audit/{id}/",
                "/api/parsers/",
                "/api/parsers/check/",
                "/api/parsers/{id}/",
                "/api/parsers/{id}/audit/",
                "/api/parsers/{id}/check/",
                "/api/parsers/{id}/environment/",
                "/api/parsers/{id}/run/",
                "/api/parsers/{id}/script/",
                "/api/parsers/{id}/versions/",
                "/api/parsers/{id}/versions/{number}/",
                "/api/parsers/{id}/versions/{number}/restore/",
                "/api/runs/",
                "/api/runs/{run_id}/",
                "/api/runs/{run_id}/archive.zip",
                "/api/runs/{run_id}/cancel/",
                "/api/runs/{run_id}/files/{filename}",
                "/api/runs/{run_id}/log",
                "/api/token/",
            ],
        )
        run_now = schema["paths"]["/api/parsers/{id}/run/"]["post"]["responses"]
        self.assertEqual(sorted(run_now), ["202", "400", "401", "403", "404", "415", "429", "503"])
        cancel = schema["paths"]["/api/runs/{run_id}/cancel/"]["post"]["responses"]
        self.assertEqual(sorted(cancel), ["200", "401", "403", "404", "409", "429", "503"])
        self.assertEqual(cancel["409"]["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/Error"})
        self.assertEqual(set(schema["components"]["securitySchemes"]), {"basicAuth", "cookieAuth", "tokenAuth"})

    def test_the_docs_page_loads_its_assets_from_parseq_never_a_cdn(self):
        response = self.client.get("/api/docs/")

        self.assertEqual(response.status_code, 200)
        sources = re.findall(r'(?:src|href)="([^"]+)"', response.content.decode())
        self.assertTrue(any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in source for source in sources))
        self.assertEqual([source for source in sources if "//" in source], [])


@FAST_PASSWORDS
class BrowsableApiTests(TestCase):
    def test_a_list_page_has_a_breadcrumb_per_real_page_and_a_description_for_users(self):
        editor, _ = make_users()
        self.client.force_login(editor)

        for path, description in (
            ("/api/runs/", "Runs, newest first: status, times, error, result files and log"),
            ("/api/parsers/", "Parsers: their scripts (every version kept)"),
        ):
            with self.subTest(path=path):
                page = self.client.get(path, HTTP_ACCEPT="text/html").content.decode()
                crumbs = re.search(r'<ul class="breadcrumb">(.*?)</ul>', page, re.S).group(1)

                self.assertEqual(re.findall(r'<a href="([^"]+)">', crumbs), ["/api/", path])
                self.assertNotIn("Not Found", crumbs)
                self.assertIn(description, page)
                self.assertNotIn("file_view", page)

    def test_an_unknown_path_is_still_a_json_404_for_every_method(self):
        for method in ("get", "post", "delete"):
            response = getattr(self.client, method)("/api/runs")
            self.assertEqual((response.status_code, response.json()["code"]), (404, "not_found"))


@tag("slow")  # two minutes of fuzzing: not in `make test-fast`
@FAST_PASSWORDS
# The fuzzer sends wrong credentials by the hundred on purpose: it would lock itself out (README: Sign-ins).
@override_settings(LOGIN_FAILURES_PER_USER=10**6, LOGIN_FAILURES_PER_ADDRESS=10**6)
class FuzzTests(TemporaryMediaMixin, StaticLiveServerTestCase):
    """schemathesis generates requests from /api/schema/ against a live server, as an editor."""

    def test_no_request_gets_a_server_error_or_a_response_that_breaks_the_schema(self):
        editor, _ = make_users()
        parser = make_parser("def parse():\n    return {}\n", name="rates")
        completed_run(parser, {"report.txt": b"hello"})
        Run.objects.create(parser=parser, status="error", error="ValueError: boom")
        token = Token.objects.create(user=editor).key
        with tempfile.TemporaryDirectory() as scratch:
            # `positive_data_acceptance` is left out: a schema cannot say which scripts are valid Python.
            # The stateful phase follows the schema's links from created parsers and runs to the rest.
            command = [
                str(SCHEMATHESIS),
                "run",
                f"{self.live_server_url}/api/schema/",
                "--header",
                f"Authorization: Token {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                FUZZ_EXAMPLES,
                "--seed",
                FUZZ_SEED,
                "--workers",
                "1",
                "--no-color",
            ]
            result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=600)

        self.assertEqual(result.returncode, 0, result.stdout[-20000:] + result.stderr[-2000:])
        self.assertIn("passed", result.stdout)
