"""What the `parseq` client stands on: a token for a password, a script checked without saving, a parser found by
its exact name with its script's hash, and the run's status beside its log.
"""

import hashlib

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APITestCase

from parseq.core.models import Parser, Run, ScriptVersion
from tests.access.helpers import forget_verified_credentials
from tests.api.helpers import FAST_PASSWORDS, VALID, basic, make_users, token_header, user_in
from tests.helpers import TemporaryMediaMixin

CHECK = "/api/parsers/check/"
TOKEN = "/api/token/"
UNRESTRICTED_ONLY = "def parse():\n    return {'a.txt': eval('b\"a\"')}\n"


@FAST_PASSWORDS
class TokenTests(APITestCase):
    def setUp(self):
        forget_verified_credentials(self)
        self.editor, self.viewer = make_users()

    def test_a_name_and_password_get_the_users_token_and_the_same_one_again(self):
        first = self.client.post(TOKEN, **basic("viewer", "viewer-pass"))
        second = self.client.post(TOKEN, **basic("viewer", "viewer-pass"))

        self.assertEqual(first.status_code, 200, first.content)
        self.assertEqual(first.json(), {"token": Token.objects.get(user=self.viewer).key, "username": "viewer"})
        self.assertEqual(second.json()["token"], first.json()["token"])
        self.assertEqual(first["Cache-Control"], "no-store")

    def test_a_wrong_password_is_a_401_and_makes_no_token(self):
        response = self.client.post(TOKEN, **basic("viewer", "wrong"))

        self.assertEqual(response.status_code, 401)
        self.assertFalse(Token.objects.exists())

    def test_a_token_or_a_session_cannot_get_a_token_only_a_password_can(self):
        self.client.force_login(self.viewer)
        by_session = self.client.post(TOKEN)
        self.client.logout()
        by_token = self.client.post(TOKEN, **token_header(self.editor))

        self.assertEqual((by_session.status_code, by_token.status_code), (401, 401))

    def test_five_wrong_passwords_lock_the_user_out_of_getting_a_token(self):
        for _ in range(5):
            self.client.post(TOKEN, **basic("viewer", "wrong"))

        response = self.client.post(TOKEN, **basic("viewer", "viewer-pass"))

        self.assertEqual(response.status_code, 429)
        self.assertIn("Retry-After", response)


@FAST_PASSWORDS
class ScriptCheckTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.editor)

    def test_a_good_script_is_valid_with_the_hash_it_would_be_stored_with_and_nothing_is_saved(self):
        response = self.client.post(CHECK, {"script_text": VALID.decode(), "name": "weather"}, format="json")

        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"valid": True, "problems": [], "sha256": hashlib.sha256(VALID).hexdigest()})
        self.assertFalse(Parser.objects.exists())

    def test_a_bad_script_gets_every_problem_with_its_line(self):
        source = "import django\n\ndef parse(x):\n    return {}\n"

        verdict = self.client.post(CHECK, {"script_text": source}, format="json").json()

        self.assertFalse(verdict["valid"])
        self.assertEqual([problem["line"] for problem in verdict["problems"]], [1, 3])
        self.assertIn("django", verdict["problems"][0]["reason"])
        self.assertIn("parse() must take no required arguments", verdict["problems"][1]["reason"])

    def test_a_new_parser_is_checked_restricted_unless_asked_otherwise(self):
        restricted = self.client.post(CHECK, {"script_text": UNRESTRICTED_ONLY}, format="json").json()
        unrestricted = self.client.post(
            CHECK, {"script_text": UNRESTRICTED_ONLY, "restricted": False}, format="json"
        ).json()

        self.assertEqual(
            restricted["problems"], [{"line": 2, "reason": "restricted mode: Eval calls are not allowed."}]
        )
        self.assertTrue(unrestricted["valid"])

    def test_a_parsers_check_goes_by_that_parsers_restricted_mode_whatever_the_body_says(self):
        parser = Parser.objects.create(name="free", script=SimpleUploadedFile("free.py", VALID), restricted=False)

        verdict = self.client.post(
            f"/api/parsers/{parser.pk}/check/", {"script_text": UNRESTRICTED_ONLY, "restricted": True}, format="json"
        ).json()

        self.assertTrue(verdict["valid"], verdict)
        self.assertFalse(ScriptVersion.objects.exists())

    def test_checking_needs_the_permission_saving_would(self):
        parser = Parser.objects.create(name="weather", script=SimpleUploadedFile("weather.py", VALID))
        operator = user_in("Operators", "operator")
        self.client.force_authenticate(operator)

        new = self.client.post(CHECK, {"script_text": VALID.decode()}, format="json")
        existing = self.client.post(f"/api/parsers/{parser.pk}/check/", {"script_text": VALID.decode()}, format="json")

        self.assertEqual((new.status_code, existing.status_code), (403, 403))
        self.assertIn("core.add_parser", new.json()["detail"])
        self.assertIn("core.change_parser", existing.json()["detail"])

    def test_bad_bodies_get_400s_naming_the_field_and_a_form_gets_415(self):
        cases = {
            "no script": ({}, "script_text"),
            "a list": ({"script_text": ["x"]}, "script_text"),
            "a number for text": ({"script_text": 0}, "script_text"),
            "a number for a name": ({"script_text": "x", "name": 0}, "name"),
            "an unknown restricted": ({"script_text": "x", "restricted": "perhaps"}, "restricted"),
            "a number for restricted": ({"script_text": "x", "restricted": 0}, "restricted"),
            "a long name": ({"script_text": "x", "name": "n" * 201}, "name"),
        }
        for case, (body, field) in cases.items():
            with self.subTest(case):
                response = self.client.post(CHECK, body, format="json")

                self.assertEqual(response.status_code, 400)
                self.assertIn(field, response.json()["errors"])
        form = self.client.post(CHECK, {"script_text": VALID.decode()}, format="multipart")
        self.assertEqual(form.status_code, 415)

    def test_a_script_nested_deeper_than_the_compilers_can_go_is_a_problem_not_a_server_error(self):
        long_sum = "def parse():\n    return {}\n\nx = " + "1+" * 300 + "1\n"  # RestrictedPython's limit
        deep = "def parse():\n    return {}\n\nx = a" + ".b" * 50000 + "\n"  # Python's own

        for case, source in (("a long sum", long_sum), ("a long chain of attributes", deep)):
            with self.subTest(case):
                verdict = self.client.post(CHECK, {"script_text": source}, format="json").json()

                self.assertFalse(verdict["valid"])
                self.assertIn("nests too deeply to be checked", verdict["problems"][0]["reason"])

    def test_thousands_of_problems_are_cut_to_the_first_fifty_and_a_count(self):
        source = "def parse():\n    return {}\n" + "import numpy\n" * 3000

        problems = self.client.post(CHECK, {"script_text": source}, format="json").json()["problems"]

        self.assertEqual(len(problems), 51)
        self.assertEqual(problems[-1], {"line": None, "reason": "and 2950 more problems"})

    def test_json_nested_deeper_than_the_parser_can_go_is_a_400(self):
        body = '{"script_text": "x", "name": ' + "[" * 100000 + "]" * 100000 + "}"

        response = self.client.generic("POST", CHECK, body, content_type="application/json")

        self.assertEqual(response.status_code, 400)
        self.assertIn("nested too deeply", response.json()["detail"])

    def test_a_script_too_large_is_one_problem_saying_the_limit(self):
        verdict = self.client.post(CHECK, {"script_text": "#" * (256 * 1024 + 1)}, format="json").json()

        self.assertEqual(len(verdict["problems"]), 1)
        self.assertIn("the limit is 262144 bytes", verdict["problems"][0]["reason"])


@FAST_PASSWORDS
class FindingParsersAndFollowingRunsTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.viewer)

    def test_a_parser_is_found_by_its_exact_name_with_its_scripts_hash(self):
        for name in ("http_cat", "http_cat_2", "HTTP_CAT"):
            Parser.objects.create(name=name, script=SimpleUploadedFile(f"{name}.py", VALID))

        found = self.client.get("/api/parsers/", {"name": "http_cat"}).json()["results"]
        padded = self.client.get("/api/parsers/", {"name": " http_cat"}).json()["results"]

        self.assertEqual([parser["name"] for parser in found], ["http_cat"])
        self.assertEqual(found[0]["script_sha256"], hashlib.sha256(VALID).hexdigest())
        self.assertEqual(padded, [])

    def test_a_name_with_control_characters_is_refused(self):
        self.client.force_authenticate(self.editor)

        for name in ("red\x1b[31m", "two\nlines", "flipped\u202etxt.exe"):
            with self.subTest(name=name):
                response = self.client.post(
                    "/api/parsers/", {"name": name, "script_text": VALID.decode()}, format="json"
                )

                self.assertEqual(response.status_code, 400)
                self.assertIn("control characters", response.json()["errors"]["name"][0])

    def test_the_log_says_the_runs_status_and_attempt_as_it_was_read(self):
        parser = Parser.objects.create(name="weather", script=SimpleUploadedFile("weather.py", VALID))
        for status, attempt in (("running", 2), ("completed", 1)):
            run = Run.objects.create(parser=parser, status=status, attempt=attempt, log="a line\n")

            response = self.client.get(f"/api/runs/{run.run_id}/log")

            self.assertEqual((response["X-Run-Status"], response["X-Run-Attempt"]), (status, str(attempt)))
