"""/api/parsers/: who may do what, uploads with the admin's checks, schedules, environment, Run now."""

import codecs
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APITestCase

from parseq.core import intake
from parseq.core.environment import MASK
from parseq.core.models import Parser, Run
from tests.api.helpers import FAST_PASSWORDS, VALID, basic, make_users, token_header
from tests.helpers import TemporaryMediaMixin, make_parser

LIST = "/api/parsers/"


@FAST_PASSWORDS
class ParserApiTestCase(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.editor)

    def upload(self, content=VALID, filename="weather.py", **fields):
        data = {"name": "weather", "script": SimpleUploadedFile(filename, content), **fields}
        return self.client.post(LIST, data, format="multipart")

    def detail(self, parser):
        return f"{LIST}{parser.pk}/"


class PermissionTests(ParserApiTestCase):
    def test_anonymous_requests_get_401_asking_for_credentials_in_the_error_shape(self):
        self.client.force_authenticate(None)

        response = self.client.get(LIST)

        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["WWW-Authenticate"], 'Basic realm="api"')
        self.assertEqual(response.json()["code"], "not_authenticated")

    def test_a_viewer_reads_but_cannot_change_delete_or_run(self):
        parser = make_parser("def parse():\n    return {}\n")
        self.client.force_authenticate(self.viewer)

        self.assertEqual(self.client.get(LIST).status_code, 200)
        self.assertEqual(self.client.get(self.detail(parser)).status_code, 200)
        for response in (
            self.upload(),
            self.client.patch(self.detail(parser), {"description": "x"}),
            self.client.delete(self.detail(parser)),
            self.client.post(f"{self.detail(parser)}run/"),
        ):
            with self.subTest(request=response.request["REQUEST_METHOD"] + " " + response.request["PATH_INFO"]):
                self.assertEqual(response.status_code, 403)
                self.assertEqual(response.json()["code"], "permission_denied")
        self.assertFalse(Run.objects.exists())

    def test_http_basic_and_tokens_authenticate(self):
        self.client.force_authenticate(None)

        self.assertEqual(self.client.get(LIST, **basic("viewer", "viewer-pass")).status_code, 200)
        self.assertEqual(self.client.get(LIST, **basic("viewer", "wrong")).status_code, 401)
        self.assertEqual(self.client.get(LIST, **token_header(self.viewer)).status_code, 200)
        self.assertEqual(self.client.get(LIST, HTTP_AUTHORIZATION="Token nope").status_code, 401)


class UploadTests(ParserApiTestCase):
    def test_a_multipart_upload_with_only_name_and_script_gets_every_default(self):
        response = self.upload()

        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        self.assertEqual(
            {key: body[key] for key in ("name", "script_name", "enabled", "restricted", "timeout", "overlap")},
            {
                "name": "weather",
                "script_name": "weather.py",
                "enabled": True,
                "restricted": True,
                "timeout": 300,
                "overlap": "skip",
            },
        )
        self.assertNotIn("script", body)
        with Parser.objects.get().script.open("rb") as stored:
            self.assertEqual(stored.read(), VALID)

    def test_a_script_can_be_sent_as_text_in_json(self):
        response = self.client.post(LIST, {"name": "My Rates", "script_text": VALID.decode()}, format="json")

        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["script_name"], "my_rates.py")
        self.assertEqual(self.client.get(f"{LIST}{response.json()['id']}/script/").content, VALID)

    def test_a_utf8_script_saved_with_a_byte_order_mark_is_taken_and_stored_without_it(self):
        # As Windows Notepad saves UTF-8: a mark the restricted policy's compiler would choke on
        uploaded = self.upload(codecs.BOM_UTF8 + VALID)
        written = self.client.post(LIST, {"name": "typed", "script_text": "\ufeff" + VALID.decode()}, format="json")

        self.assertEqual((uploaded.status_code, written.status_code), (201, 201), uploaded.content)
        for body in (uploaded.json(), written.json()):
            self.assertEqual(self.client.get(f"{LIST}{body['id']}/script/").content, VALID)

    def test_the_list_is_searched_by_words_of_the_name_or_description_and_filtered_by_enabled(self):
        Parser.objects.create(name="Oslo weather", description="hourly", script="scripts/a.py", enabled=False)
        Parser.objects.create(name="Rates", description="weather of the markets", script="scripts/b.py")
        Parser.objects.create(name="News", script="scripts/c.py")

        def names(query):
            return [parser["name"] for parser in self.client.get(f"{LIST}?{query}").json()["results"]]

        self.assertEqual(names("search=weather"), ["Oslo weather", "Rates"])
        self.assertEqual(names("search=oslo%20WEATHER"), ["Oslo weather"])
        self.assertEqual(names("search=nothing"), [])
        self.assertEqual(names("enabled=false"), ["Oslo weather"])
        self.assertEqual(self.client.get(f"{LIST}?enabled=-58800").status_code, 400)  # found by schemathesis

    def test_a_broken_script_is_refused_with_line_and_reason_and_nothing_is_stored(self):
        response = self.upload(b"import numpy\n\ndef parse(url):\n    return {}\n")

        self.assertEqual(response.status_code, 400)
        body = response.json()
        self.assertEqual((body["code"], body["detail"]), ("invalid", "The request has invalid fields."))
        self.assertIn("line 1: module 'numpy' is not allowed", body["errors"]["script"][0])
        self.assertIn("line 3: parse() must take no required arguments, but requires url", body["errors"]["script"][1])
        self.assertFalse(Parser.objects.exists())

    def test_a_script_is_required_once_and_in_one_form(self):
        missing = self.client.post(LIST, {"name": "x"}, format="multipart")
        both = self.upload(script_text="def parse():\n    return {}\n")

        self.assertIn("A script is required", missing.json()["errors"]["script"][0])
        self.assertEqual(both.json()["errors"]["script_text"], [intake.BOTH_GIVEN])

    def test_names_are_unique(self):
        self.upload()

        self.assertEqual(self.upload().json()["errors"]["name"], ["parser with this name already exists."])

    def test_switching_restricted_mode_on_checks_the_stored_script_again(self):
        parser = make_parser("def parse():\n    return {'a': ().__class__}\n", restricted=False)

        response = self.client.patch(self.detail(parser), {"restricted": True}, format="json")

        self.assertEqual(response.status_code, 400)
        self.assertIn("restricted mode", response.json()["errors"]["script"][0])

    def test_editing_other_fields_keeps_the_script(self):
        parser = make_parser("def parse():\n    return {}\n")
        original = parser.script.name

        response = self.client.patch(self.detail(parser), {"description": "changed"}, format="multipart")

        self.assertEqual(response.status_code, 200, response.content)
        parser.refresh_from_db()
        self.assertEqual((parser.script.name, parser.description, parser.enabled), (original, "changed", True))

    def test_deleting_a_parser_deletes_its_runs_and_script(self):
        parser = make_parser("def parse():\n    return {}\n")
        Run.objects.create(parser=parser)

        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.delete(self.detail(parser))

        self.assertEqual(response.status_code, 204)
        self.assertFalse(Parser.objects.exists() or Run.objects.exists())
        self.assertFalse(parser.script.storage.exists(parser.script.name))

    def test_unknown_parsers_are_404_in_the_error_shape(self):
        for path in (f"{LIST}999/", f"{LIST}abc/", f"{LIST}99999999999999999999999/", "/api/nothing", f"{LIST}%0Ax/"):
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertEqual(response.status_code, 404)
                self.assertEqual(response.json()["code"], "not_found")


class ScheduleTests(ParserApiTestCase):
    def test_an_interval_schedule_is_accepted_and_its_next_run_shown(self):
        first = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)

        response = self.upload(scheduled_time=first.isoformat(), repeat_after="00:00:03")

        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["repeat_after"], "00:00:03")
        self.assertEqual(response.json()["next_run_time"], first.isoformat().replace("+00:00", "Z"))

    def test_bad_schedules_get_the_admins_reasons(self):
        cases = [
            ({"cron": "0 9 * *"}, "cron", "Not a cron expression: it has 4 field(s), not five."),
            ({"cron": "@daily", "cron_timezone": "Mars/Olympus"}, "cron_timezone", "'Mars/Olympus' is not a timezone"),
            ({"repeat_after": "00:10:00"}, "scheduled_time", "An interval needs its first run"),
            (
                {"cron": "@daily", "repeat_after": "600", "scheduled_time": "2030-01-01T00:00:00Z"},
                "cron",
                "Choose either an interval (repeat after) or a cron expression, not both.",
            ),
            ({"timeout": "0"}, "timeout", "The timeout must be between 1 and"),
        ]
        for fields, field, reason in cases:
            with self.subTest(fields=fields):
                response = self.upload(**fields)
                self.assertEqual(response.status_code, 400)
                self.assertIn(reason, response.json()["errors"][field][0])
        self.assertFalse(Parser.objects.exists())


class EgressPortTests(ParserApiTestCase):
    def test_extra_egress_ports_are_a_list_of_ports_besides_80_and_443_each_once(self):
        parser = make_parser("def parse():\n    return {}\n")

        accepted = self.client.patch(self.detail(parser), {"extra_egress_ports": [8080, 8443]}, format="json")

        self.assertEqual(accepted.status_code, 200, accepted.content)
        self.assertEqual(accepted.json()["extra_egress_ports"], [8080, 8443])
        for ports, reason in [
            ([443], "always open"),
            ([70000], "less than or equal to 65535"),
            ([8080, 8080], "listed twice"),
            ("8080", "list"),
            (list(range(2000, 2021)), "At most 20"),
        ]:
            with self.subTest(ports=ports):
                refused = self.client.patch(self.detail(parser), {"extra_egress_ports": ports}, format="json")

                self.assertEqual(refused.status_code, 400)
                self.assertIn(reason, str(refused.json()["errors"]["extra_egress_ports"]))
        parser.refresh_from_db()
        self.assertEqual(parser.extra_egress_ports, [8080, 8443])


class EnvironmentTests(ParserApiTestCase):
    def test_values_are_stored_shown_masked_and_kept_when_sent_back_masked(self):
        response = self.client.post(
            LIST, {"name": "x", "script_text": VALID.decode(), "environment": {"API_KEY": "s3cret"}}, format="json"
        )
        parser = Parser.objects.get()
        self.assertEqual(response.json()["environment"], {"API_KEY": MASK})
        self.assertEqual(parser.environment, {"API_KEY": "s3cret"})

        response = self.client.patch(
            self.detail(parser), {"environment": {"API_KEY": MASK, "CITY": "Oslo"}}, format="json"
        )

        parser.refresh_from_db()
        self.assertEqual(parser.environment, {"API_KEY": "s3cret", "CITY": "Oslo"})
        self.assertNotIn("s3cret", response.content.decode())

    def test_bad_and_reserved_names_are_refused(self):
        parser = make_parser("def parse():\n    return {}\n")

        response = self.client.patch(
            self.detail(parser), {"environment": {"1X": "a", "LD_PRELOAD": "b"}}, format="json"
        )

        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["errors"]["environment"],
            ["'1X' is not a valid variable name", "LD_PRELOAD is set by the sandbox and cannot be changed"],
        )


class RunNowTests(ParserApiTestCase):
    def test_run_now_answers_202_with_the_run_and_its_location(self):
        parser = make_parser("def parse():\n    return {}\n")

        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(f"{self.detail(parser)}run/")

        self.assertEqual(response.status_code, 202)
        run = Run.objects.get()
        self.assertEqual((run.trigger, run.status), ("api", "enqueued"))
        self.assertEqual(response["Location"], f"http://testserver/api/runs/{run.run_id}/")
        self.assertEqual(response.json()["run_id"], str(run.run_id))


class CurlFormTests(ParserApiTestCase):
    def test_a_multipart_form_can_set_variables_as_environment_dot_name(self):
        response = self.upload(**{"environment.API_KEY": "s3cret"})

        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(Parser.objects.get().environment, {"API_KEY": "s3cret"})


class TokenAdminTests(ParserApiTestCase):
    def test_tokens_are_managed_in_the_admin(self):
        admin = get_user_model().objects.create_superuser("root", password="root-pass")
        self.client.force_login(admin)

        response = self.client.get("/admin/authtoken/tokenproxy/add/")

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Token")


class BrowsableApiTests(ParserApiTestCase):
    def test_a_signed_in_admin_session_browses_the_api_in_html(self):
        self.client.force_authenticate(None)
        self.client.force_login(self.editor)

        response = self.client.get("/api/parsers/", HTTP_ACCEPT="text/html")

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Parser List")


class MalformedBodyTests(ParserApiTestCase):
    def test_a_multipart_body_without_fields_is_refused_and_json_that_is_not_an_object_too(self):
        parser = make_parser("def parse():\n    return {}\n")
        boundary = "0d37f771f3609e9b"
        body = f"--{boundary}\r\nTrue--{boundary}--\r\n"

        multipart = self.client.generic(
            "PATCH", self.detail(parser), body, content_type=f"multipart/form-data; boundary={boundary}"
        )
        not_an_object = self.client.patch(self.detail(parser), "true", content_type="application/json")

        self.assertEqual((multipart.status_code, multipart.json()["code"]), (400, "parse_error"))
        self.assertEqual(not_an_object.status_code, 400)
        self.assertEqual(self.client.patch(self.detail(parser), "a=1", content_type="text/plain").status_code, 415)
