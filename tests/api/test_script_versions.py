"""/api/parsers/{id}/versions/: every script kept, compared and restored; runs with parameters."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TransactionTestCase
from rest_framework.test import APIClient, APITestCase

from parseq.core import execution
from parseq.core.environment import MASK
from parseq.core.models import AuditEntry, Parser, Run, ScriptVersion
from tests.api.helpers import FAST_PASSWORDS, make_users, user_in
from tests.helpers import TemporaryMediaMixin

LIST = "/api/parsers/"
CITY_SCRIPT = b"import os\n\ndef parse():\n    return {'city.txt': os.environ['CITY'].encode()}\n"


def version_source(number):
    return f"def parse():\n    return {{'v.txt': b'{number}'}}\n".encode()


@FAST_PASSWORDS
class ScriptVersionApiTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.editor)

    def create(self, content, **fields):
        data = {"name": "weather", "script": SimpleUploadedFile("weather.py", content), **fields}
        response = self.client.post(LIST, data, format="multipart")
        self.assertEqual(response.status_code, 201, response.content)
        return response.json()["id"]

    def upload(self, parser_id, content, **fields):
        data = {"script": SimpleUploadedFile("weather.py", content), **fields}
        response = self.client.patch(f"{LIST}{parser_id}/", data, format="multipart")
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def test_three_different_uploads_make_versions_one_to_three_and_an_identical_fourth_adds_none(self):
        parser_id = self.create(version_source(1), script_message="first")
        self.upload(parser_id, version_source(2))
        third = self.upload(parser_id, version_source(3), script_message="third, with a message")
        again = self.upload(parser_id, version_source(3))

        versions = self.client.get(f"{LIST}{parser_id}/versions/").json()["results"]
        self.assertEqual([version["number"] for version in versions], [3, 2, 1])
        self.assertEqual([version["message"] for version in versions], ["third, with a message", "", "first"])
        self.assertEqual({version["author"] for version in versions}, {"editor"})
        self.assertNotIn("source", versions[0])
        self.assertEqual((third["script_version"], again["script_version"]), (3, 3))
        self.assertEqual(ScriptVersion.objects.count(), 3)

    def test_a_version_gives_its_source_and_restoring_it_appends_a_new_version(self):
        parser_id = self.create(version_source(1))
        self.upload(parser_id, version_source(2))
        self.upload(parser_id, version_source(3))

        first = self.client.get(f"{LIST}{parser_id}/versions/1/").json()
        restored = self.client.post(f"{LIST}{parser_id}/versions/1/restore/")

        self.assertEqual(first["source"], version_source(1).decode())
        self.assertEqual(restored.status_code, 200, restored.content)
        self.assertEqual((restored.json()["number"], restored.json()["message"]), (4, "restored version 1"))
        self.assertEqual(self.client.get(f"{LIST}{parser_id}/script/").content, version_source(1))
        self.assertEqual(self.client.get(f"{LIST}{parser_id}/versions/3/").json()["source"], version_source(3).decode())
        changed = AuditEntry.objects.filter(parser_id=parser_id, action="changed").first()
        self.assertEqual(changed.fields, ["script"])

    def test_restoring_the_current_content_adds_no_version(self):
        parser_id = self.create(version_source(1))

        response = self.client.post(f"{LIST}{parser_id}/versions/1/restore/")

        self.assertEqual(response.json()["number"], 1)
        self.assertEqual(ScriptVersion.objects.count(), 1)

    def test_a_version_that_breaks_todays_restricted_mode_is_refused_with_the_reason(self):
        parser_id = self.create(
            b"import os\ndef parse():\n    return {'a': os.system.__name__.encode()}\n", restricted="false"
        )
        self.upload(parser_id, version_source(2), restricted="true")

        response = self.client.post(f"{LIST}{parser_id}/versions/1/restore/")

        self.assertEqual(response.status_code, 400)
        self.assertIn("Version 1 cannot be restored as it is", response.json()["errors"]["script"][0])
        self.assertIn("restricted mode", response.json()["errors"]["script"][0])
        self.assertEqual(ScriptVersion.objects.count(), 2)

    def test_readers_list_versions_but_neither_read_their_sources_nor_restore(self):
        parser_id = self.create(version_source(1))
        self.client.force_authenticate(self.viewer)

        self.assertEqual(self.client.get(f"{LIST}{parser_id}/versions/").status_code, 200)
        self.assertEqual(self.client.get(f"{LIST}{parser_id}/versions/1/").status_code, 403)
        self.assertEqual(self.client.post(f"{LIST}{parser_id}/versions/1/restore/").status_code, 403)

    def test_a_version_that_does_not_exist_is_a_404(self):
        parser_id = self.create(version_source(1))

        for path in ("versions/2/", "versions/2/restore/", "versions/x/", "versions/99999999999/"):
            method = self.client.post if path.endswith("restore/") else self.client.get
            with self.subTest(path=path):
                self.assertEqual(method(f"{LIST}{parser_id}/{path}").status_code, 404)

    def test_a_script_given_as_text_and_the_demo_loader_make_versions_too(self):
        response = self.client.post(LIST, {"name": "typed", "script_text": version_source(1).decode()}, format="json")
        parser_id = response.json()["id"]
        self.client.patch(f"{LIST}{parser_id}/", {"script_text": version_source(2).decode()}, format="json")

        self.assertEqual(
            list(Parser.objects.get(pk=parser_id).script_versions.values_list("number", flat=True)), [2, 1]
        )

    def test_the_parser_list_names_each_current_version_in_a_fixed_number_of_queries(self):
        for index in range(3):
            response = self.client.post(LIST, {"name": f"p{index}", "script_text": version_source(1).decode()})
            self.assertEqual(response.status_code, 201)
        self.client.get(LIST)

        with self.assertNumQueries(2):
            parsers = self.client.get(LIST).json()["results"]

        self.assertEqual([parser["script_version"] for parser in parsers], [1, 1, 1])


@FAST_PASSWORDS
class RunParametersApiTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.editor)
        response = self.client.post(
            LIST,
            {"name": "weather", "script_text": CITY_SCRIPT.decode(), "environment": {"CITY": "Bergen"}},
            format="json",
        )
        self.parser_id = response.json()["id"]

    def run_with(self, body):
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(f"{LIST}{self.parser_id}/run/", body, format="json")

    def test_a_run_keeps_its_parameters_and_shows_their_values_masked(self):
        response = self.run_with({"environment": {"CITY": "Oslo-the-capital", "DEPTH": "2"}, "timeout": 40})

        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(response.json()["parameters"], {"environment": {"CITY": MASK, "DEPTH": MASK}, "timeout": 40})
        run = Run.objects.get()
        self.assertEqual(run.parameters, {"environment": {"CITY": "Oslo-the-capital", "DEPTH": "2"}, "timeout": 40})
        self.assertEqual(Parser.objects.get().environment, {"CITY": "Bergen"})

    def test_bad_parameters_are_refused_with_each_reason_and_no_run(self):
        cases = {
            "reserved name": ({"environment": {"PATH": "/x"}}, "environment", "PATH is set by the sandbox"),
            "loader tunables": ({"environment": {"GLIBC_TUNABLES": "x"}}, "environment", "set by the sandbox"),
            "a name too long": ({"environment": {"A" * 300: "v"}}, "environment", "at most 256 characters"),
            "bad name": ({"environment": {"1X": "a"}}, "environment", "'1X' is not a valid variable name"),
            "not a string": ({"environment": {"A": {"b": 1}}}, "environment", "Not a valid string"),
            "the mask": ({"environment": {"A": MASK}}, "environment", "give the value itself"),
            "a NUL": ({"environment": {"A": "a\u0000b"}}, "environment", "Null characters are not allowed"),
            "too long": ({"environment": {"A": "a" * 40000}}, "environment", "longer than"),
            "not an object": ({"environment": ["A=1"]}, "environment", "Expected a dictionary"),
            "timeout too large": ({"timeout": 10**9}, "timeout", "between 1 and"),
            "timeout zero": ({"timeout": 0}, "timeout", "between 1 and"),
            "timeout a word": ({"timeout": "soon"}, "timeout", "valid integer"),
            "unknown key": ({"env": {"A": "1"}}, "env", "Not a parameter"),
        }
        for case, (body, field, reason) in cases.items():
            with self.subTest(case=case):
                response = self.run_with(body)

                self.assertEqual(response.status_code, 400, response.content)
                self.assertIn(reason, str(response.json()["errors"][field]))
        self.assertFalse(Run.objects.exists())

    def test_a_body_that_is_not_json_is_refused(self):
        for body, content_type, status in ((b"{", "application/json", 400), (b"a=1", "text/plain", 415)):
            with self.subTest(content_type=content_type):
                response = self.client.post(f"{LIST}{self.parser_id}/run/", body, content_type=content_type)
                self.assertEqual(response.status_code, status)
        self.assertFalse(Run.objects.exists())

    def test_an_operator_may_give_a_run_a_timeout_but_not_variables_which_could_send_its_secrets_elsewhere(self):
        operator = user_in("Operators", "operator")
        self.client.force_authenticate(operator)

        refused = self.run_with({"environment": {"API_URL": "https://attacker.example/"}})
        timed = self.run_with({"timeout": 30})

        self.assertEqual(refused.status_code, 403)
        self.assertEqual(refused.json()["detail"], "Giving a run variables needs the permission core.change_parser.")
        self.assertEqual(timed.status_code, 202, timed.content)
        self.assertEqual(Run.objects.get().parameters, {"timeout": 30})


@FAST_PASSWORDS
class VersionsAndParametersEndToEndTests(TemporaryMediaMixin, TransactionTestCase):
    """The issue's acceptance: versions 1-3, restore 1 as 4 run by the next run, and a run given CITY=Oslo."""

    def setUp(self):
        self.editor, _ = make_users()
        self.client = APIClient()
        self.client.force_authenticate(self.editor)

    def run_now(self, parser_id, body=None):
        response = self.client.post(f"{LIST}{parser_id}/run/", body, format="json")
        self.assertEqual(response.status_code, 202, response.content)
        run_id = response.json()["run_id"]
        execution.execute_run(run_id=run_id)
        return self.client.get(f"/api/runs/{run_id}/").json()

    def download(self, run, name):
        [entry] = [entry for entry in run["files"] if entry["name"] == name]
        response = self.client.get(entry["url"])
        return b"".join(response.streaming_content) if response.streaming else response.content

    def test_a_restored_version_is_the_one_the_next_run_records(self):
        data = {"name": "versions", "script_text": version_source(1).decode()}
        parser_id = self.client.post(LIST, data, format="json").json()["id"]
        for number in (2, 3):
            self.client.patch(f"{LIST}{parser_id}/", {"script_text": version_source(number).decode()}, format="json")
        self.client.post(f"{LIST}{parser_id}/versions/1/restore/")

        run = self.run_now(parser_id)

        self.assertEqual(run["status"], "completed", run["error"])
        self.assertEqual(run["script_version"], 4)
        self.assertEqual(self.download(run, "v.txt"), b"1")

    def test_a_run_given_a_variable_uses_it_once_and_the_parser_keeps_its_own(self):
        data = {"name": "city", "script_text": CITY_SCRIPT.decode(), "environment": {"CITY": "Bergen"}}
        parser_id = self.client.post(LIST, data, format="json").json()["id"]

        given = self.run_now(parser_id, {"environment": {"CITY": "Oslo"}})
        plain = self.run_now(parser_id)

        self.assertEqual(given["status"], "completed", given["error"])
        self.assertEqual(self.download(given, "city.txt"), b"Oslo")
        self.assertEqual(self.download(plain, "city.txt"), b"Bergen")
        self.assertEqual(Parser.objects.get(pk=parser_id).environment, {"CITY": "Bergen"})
        self.assertEqual(given["parser_settings"]["environment"], ["CITY"])

    def test_a_runs_own_timeout_stops_it(self):
        source = "import time\n\ndef parse():\n    time.sleep(30)\n    return {}\n"
        parser_id = self.client.post(LIST, {"name": "slow", "script_text": source}, format="json").json()["id"]

        run = self.run_now(parser_id, {"timeout": 1})

        self.assertEqual(run["status"], "error")
        self.assertEqual(run["error"], "timed out after 1 s")
        self.assertEqual(run["parser_settings"]["timeout"], 1)

    def test_a_run_given_a_secret_shows_it_masked_in_its_log_and_error(self):
        source = (
            "import os\n\ndef parse():\n    print('token', os.environ['TOKEN'])\n"
            "    raise ValueError(os.environ['TOKEN'])\n"
        )
        parser_id = self.client.post(LIST, {"name": "secret", "script_text": source}, format="json").json()["id"]

        run = self.run_now(parser_id, {"environment": {"TOKEN": "tok-9f8e7d6c"}})
        log = self.client.get(run["log_url"]).content.decode()

        self.assertEqual(run["status"], "error")
        self.assertNotIn("tok-9f8e7d6c", run["error"] + log)
        self.assertIn(MASK, run["error"])
        self.assertIn(f"token {MASK}", log)
