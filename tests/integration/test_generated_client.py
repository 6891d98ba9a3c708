"""A Python client generated from the live server's schema (openapi-python-client) imports and works.

Our schema is what clients are built from, and generators are stricter readers than Swagger UI.
openapi-python-client 0.29.1 wrote clients that did not import: a body offered under two content
types with `required: true` gets `| Unset` in its signature without `Unset` imported (its issue
#1451: NameError at import), and one schema under two content types becomes a union of a type
with itself (its issue #1276). Our fix is in the schema: multipart and JSON bodies are two
schemas (serializers ParserUploadSerializer and ParserTextSerializer) and such a body is marked
optional (parseq/api/schema.py, `optional_bodies_of_two_types`). These tests generate the client
the way a user would, import every module of it, and make a real round trip with its code alone:
a parser uploaded as a file, run, its result downloaded; a parser sent as JSON; a refusal.
"""

import importlib
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

import requests
from django.test import tag

from tests.helpers import shows_process_logs_on_failure, wait_until
from tests.live import LiveParseqTestCase

PACKAGE = "parseq_generated_client"  # a name nothing else on sys.path has
CONFIG = f"post_hooks: []\npackage_name_override: {PACKAGE}\nproject_name_override: parseq-generated-client\n"
SCRIPT = b'def parse():\n    return {"hello.txt": b"Hello from a generated client"}\n'
ENDED = ("completed", "error", "cancelled", "skipped")


def generate_client(base, directory):
    """Fetch the schema from the server at `base` and generate a client from it into `directory`/PACKAGE."""
    schema = Path(directory, "schema.json")
    response = requests.get(f"{base}/api/schema/?format=json", timeout=30)
    response.raise_for_status()
    schema.write_bytes(response.content)
    config = Path(directory, "config.yaml")
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(schema)]
    command += ["--output-path", str(Path(directory, PACKAGE)), "--meta", "none", "--config", str(config)]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=120)


def forget_generated_modules():
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@tag("slow")
class GeneratedClientTests(LiveParseqTestCase):
    """One client generated per class from the live server's schema; each test imports it afresh."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.mkdtemp(prefix="parseq-test-generated-client-")
        cls.addClassCleanup(shutil.rmtree, cls.directory, ignore_errors=True)
        cls.generator = generate_client(cls.base, cls.directory)
        cls.token = cls.parseq.manage("drf_create_token", "admin").split()[2]  # "Generated token <key> for user admin"

    def setUp(self):
        super().setUp()
        self.assertEqual(self.generator.returncode, 0, self.generator.stdout + self.generator.stderr)
        sys.path.insert(0, self.directory)
        self.addCleanup(forget_generated_modules)
        self.addCleanup(sys.path.remove, self.directory)
        importlib.invalidate_caches()
        self.client_of_the_test = None

    def generated(self, name=""):
        """The generated package, or a module of it, e.g. `api.api.api_parsers_create`."""
        return importlib.import_module(f"{PACKAGE}.{name}" if name else PACKAGE)

    def api(self):
        """The generated client, signed in with admin's token (one per test, closed after it)."""
        if self.client_of_the_test is None:
            client = self.generated("client").AuthenticatedClient(base_url=self.base, token=self.token, prefix="Token")
            self.client_of_the_test = self.enterContext(client)
        return self.client_of_the_test

    def upload(self, name, script, file_name="hello.py"):
        File = self.generated("types").File
        body = self.generated("models").ParserUploadRequest(
            name=name, script=File(payload=BytesIO(script), file_name=file_name)
        )
        return self.generated("api.api.api_parsers_create").sync_detailed(client=self.api(), body=body)

    def send_as_json(self, name, script_text):
        body = self.generated("models").ParserTextRequest(name=name, script_text=script_text)
        return self.generated("api.api.api_parsers_create").sync_detailed(client=self.api(), body=body)

    def run_to_its_end(self, parser_id):
        client = self.api()
        started = self.generated("api.api.api_parsers_run_create").sync_detailed(parser_id, client=client)
        self.assertEqual(started.status_code, 202, started.content)
        started = started.parsed
        retrieve = self.generated("api.api.api_runs_retrieve")

        def ended():
            run = retrieve.sync(started.run_id, client=client)
            return run if run.status.value in ENDED else None

        return wait_until(ended, timeout=60, message=f"run {started.run_id} to end")

    def download(self, run_id, filename):
        downloaded = self.generated("api.api.api_runs_files_retrieve").sync(run_id, filename, client=self.api())
        return downloaded.payload.read()

    def test_a_client_generated_from_the_schema_imports_every_module(self):
        # Given the client generated from the live server's schema (setUp: the generator exited 0)
        # When every module of its package is imported
        package = self.generated()
        modules, failures = [], []
        for module in pkgutil.walk_packages(package.__path__, PACKAGE + ".", onerror=lambda name: None):
            modules.append(module.name)
            try:
                importlib.import_module(module.name)
            except Exception as error:  # every module's failure is reported (#1451: NameError)
                failures.append(f"{module.name}: {type(error).__name__}: {error}")
        # Then none fails, the operation with a body of two types among them
        self.assertEqual(failures, [])
        self.assertIn(f"{PACKAGE}.api.api.api_parsers_create", modules)

    @shows_process_logs_on_failure
    def test_a_parser_uploaded_as_a_file_with_the_generated_client_runs_and_its_file_downloads_byte_for_byte(self):
        # Given a parser uploaded as a multipart form with a script file
        created = self.upload("generated-client-upload", SCRIPT)
        self.assertEqual(created.status_code, 201, created.content)
        self.assertEqual(created.parsed.script_version, 1)
        # When it is run and the run is polled until it ends
        run = self.run_to_its_end(created.parsed.id)
        # Then it completed, and its file comes back exactly
        self.assertEqual(run.status.value, "completed", run.error)
        self.assertEqual([file.name for file in run.files], ["hello.txt"])
        self.assertEqual(self.download(run.run_id, "hello.txt"), b"Hello from a generated client")

    def test_a_parser_sent_as_json_with_the_generated_client_gets_its_first_version(self):
        # Given a script as text
        # When it is sent as JSON
        created = self.send_as_json("generated-client-json", SCRIPT.decode())
        # Then the parser is made, at version 1 of its script
        self.assertEqual(created.status_code, 201, created.content)
        self.assertEqual(created.parsed.name, "generated-client-json")
        self.assertEqual(created.parsed.script_version, 1)

    def test_a_script_without_parse_sent_with_the_generated_client_gets_a_400_naming_the_problem(self):
        # Given a script that defines no parse()
        # When it is sent as JSON
        refused = self.send_as_json("generated-client-no-parse", "def main():\n    return {}\n")
        # Then the answer is a 400 whose parsed Error names the field and the reason
        self.assertEqual(refused.status_code, 400, refused.content)
        self.assertIsInstance(refused.parsed, self.generated("models").Error)
        self.assertEqual(refused.parsed.code, "invalid")
        problems = " ".join(refused.parsed.errors["script_text"])
        self.assertIn("must define a top-level function parse()", problems)
