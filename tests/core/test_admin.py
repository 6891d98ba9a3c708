"""The admin: uploading parsers with validation, Run now, and read-only runs."""

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse

from parseq.core.models import Parser, Run
from tests.helpers import TemporaryMediaMixin, make_parser, script

VALID = script("import requests\n\ndef parse():\n    return {'a.txt': b'a'}\n")


class AdminTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.user = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        self.client.force_login(self.user)

    def add_parser(self, content, filename="weather.py", **fields):
        data = {
            "name": "weather",
            "description": "Forecast",
            "script": SimpleUploadedFile(filename, content),
            "enabled": "on",
            "timeout": "300",
            "max_attempts": "2",
            "network": "internet",
            "overlap": "skip",
            "webhook_on": "error",
            **fields,
        }
        return self.client.post(reverse("admin:core_parser_add"), data)


class ParserUploadTests(AdminTestCase):
    def test_extra_egress_ports_are_written_as_people_write_them(self):
        response = self.add_parser(VALID, extra_egress_ports="8080, 8443")

        self.assertEqual(response.status_code, 302)
        self.assertEqual(Parser.objects.get(name="weather").extra_egress_ports, [8080, 8443])
        refused = self.add_parser(VALID, name="other", extra_egress_ports="8080, http")
        self.assertContains(refused, "Give port numbers separated by commas")
        refused = self.add_parser(VALID, name="other", extra_egress_ports="80")
        self.assertContains(refused, "Port 80 is always open")

    def test_a_valid_script_is_accepted_and_stored(self):
        response = self.add_parser(VALID)

        self.assertEqual(response.status_code, 302)
        parser = Parser.objects.get(name="weather")
        self.assertTrue(parser.script.name.endswith("/weather.py"))
        with parser.script.open("rb") as stored:
            self.assertEqual(stored.read(), VALID)

    def test_a_broken_script_is_refused_on_the_form_with_line_and_reason(self):
        response = self.add_parser(script("import numpy\n\ndef parse(url):\n    return {}\n"))

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "line 1: module &#x27;numpy&#x27; is not allowed")
        self.assertContains(response, "line 3: parse() must take no required arguments, but requires url")
        self.assertFalse(Parser.objects.exists())

    def test_in_restricted_mode_escape_idioms_are_refused_on_the_form(self):
        response = self.add_parser(script("def parse():\n    return {'a': ().__class__}\n"), restricted="on")

        self.assertContains(response, "line 2: restricted mode: &quot;__class__&quot; is an invalid attribute name")
        self.assertFalse(Parser.objects.exists())

    def test_turning_restricted_mode_on_checks_the_stored_script_again(self):
        parser = make_parser("def parse():\n    return {'a': ().__class__}\n", name="weather", restricted=False)

        response = self.client.post(
            reverse("admin:core_parser_change", args=[parser.pk]),
            {
                "name": "weather",
                "timeout": "60",
                "max_attempts": "2",
                "network": "internet",
                "overlap": "skip",
                "webhook_on": "error",
                "restricted": "on",
            },
        )

        self.assertContains(response, "restricted mode: &quot;__class__&quot; is an invalid attribute name")
        parser.refresh_from_db()
        self.assertFalse(parser.restricted)

    def test_a_file_that_is_not_python_is_refused(self):
        response = self.add_parser(b"hello", filename="notes.txt")

        self.assertContains(response, "the script must be a .py file")
        self.assertFalse(Parser.objects.exists())

    def test_a_huge_upload_is_refused_with_its_real_size(self):
        response = self.add_parser(b"def parse():\n    return {}\n" + b"#" * (3 * 1024 * 1024))

        self.assertContains(response, "the script is 3145755 bytes; the limit is 262144 bytes (256 KiB)")
        self.assertFalse(Parser.objects.exists())

    def test_the_form_says_plainly_when_scripts_run_in_the_weaker_sandbox(self):
        with self.settings(SANDBOX_BACKEND="subprocess"):
            weaker = self.client.get(reverse("admin:core_parser_add"))
        with self.settings(SANDBOX_BACKEND="bwrap"):
            jail = self.client.get(reverse("admin:core_parser_add"))

        self.assertContains(weaker, "subprocess (weaker: no filesystem, process or network isolation)")
        self.assertNotContains(jail, "weaker")

    def test_a_timeout_above_the_maximum_is_refused(self):
        response = self.add_parser(VALID, timeout="999999")

        self.assertContains(response, "The timeout must be between 1 and")
        self.assertFalse(Parser.objects.exists())

    def test_editing_a_parser_without_a_new_file_keeps_its_script(self):
        parser = make_parser("def parse():\n    return {}\n", name="weather")
        original = parser.script.name

        response = self.client.post(
            reverse("admin:core_parser_change", args=[parser.pk]),
            {
                "name": "weather",
                "description": "changed",
                "timeout": "60",
                "max_attempts": "2",
                "scheduled_time_0": "2030-01-01",
                "scheduled_time_1": "06:00:00",
                "repeat_after": "01:00:00",
                "network": "internet",
                "overlap": "skip",
                "webhook_on": "error",
            },
        )

        self.assertEqual(response.status_code, 302)
        parser.refresh_from_db()
        self.assertEqual((parser.script.name, parser.description, parser.enabled), (original, "changed", False))
        self.assertEqual(parser.repeat_after.total_seconds(), 3600)


class EnvironmentTests(AdminTestCase):
    def test_variables_are_stored_and_shown_masked(self):
        response = self.add_parser(
            VALID, environment_text="API_KEY=s3cret-value\n# a comment\nBASE_URL=http://x/?a=b\n"
        )

        self.assertEqual(response.status_code, 302)
        parser = Parser.objects.get()
        self.assertEqual(parser.environment, {"API_KEY": "s3cret-value", "BASE_URL": "http://x/?a=b"})
        page = self.client.get(reverse("admin:core_parser_change", args=[parser.pk]))
        self.assertContains(page, "API_KEY=********")
        self.assertNotContains(page, "s3cret-value")

    def test_a_masked_value_left_as_it_is_keeps_its_value_and_a_new_one_replaces_it(self):
        parser = make_parser(VALID.decode(), name="weather", environment={"API_KEY": "old", "TOKEN": "t"})

        response = self.client.post(
            reverse("admin:core_parser_change", args=[parser.pk]),
            {
                "name": "weather",
                "timeout": "60",
                "max_attempts": "2",
                "network": "internet",
                "overlap": "skip",
                "webhook_on": "error",
                "environment_text": "API_KEY=********\nTOKEN=new",
            },
        )

        self.assertEqual(response.status_code, 302)
        parser.refresh_from_db()
        self.assertEqual(parser.environment, {"API_KEY": "old", "TOKEN": "new"})

    def test_bad_lines_are_refused_with_their_line_numbers(self):
        response = self.add_parser(
            VALID, environment_text="GOOD=1\nno equals sign\nPATH=/evil\n1BAD=x\nLD_PRELOAD=x.so"
        )

        self.assertContains(response, "line 2: expected NAME=value")
        self.assertContains(response, "line 3: PATH is set by the sandbox and cannot be changed")
        self.assertContains(response, "line 4: &#x27;1BAD&#x27; is not a valid variable name")
        self.assertContains(response, "line 5: LD_PRELOAD is set by the sandbox and cannot be changed")
        self.assertFalse(Parser.objects.exists())


class RunNowTests(AdminTestCase):
    def test_the_run_now_button_enqueues_a_manual_run_and_shows_it(self):
        parser = make_parser("def parse():\n    return {}\n")
        change_page = self.client.get(reverse("admin:core_parser_change", args=[parser.pk]))
        self.assertContains(change_page, reverse("admin:core_parser_run", args=[parser.pk]))
        self.assertContains(change_page, "Run now")

        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(reverse("admin:core_parser_run", args=[parser.pk]))

        run = Run.objects.get()
        self.assertRedirects(response, reverse("admin:core_run_change", args=[run.run_id]))
        self.assertEqual((run.status, run.trigger), (Run.Status.ENQUEUED, Run.Trigger.MANUAL))
        self.assertEqual(len(callbacks), 1)

    def test_run_now_by_get_changes_nothing(self):
        parser = make_parser("def parse():\n    return {}\n")

        self.client.get(reverse("admin:core_parser_run", args=[parser.pk]))

        self.assertFalse(Run.objects.exists())

    def test_the_run_now_action_enqueues_a_run_per_selected_parser(self):
        first = make_parser("def parse():\n    return {}\n", name="first")
        second = make_parser("def parse():\n    return {}\n", name="second")

        with self.captureOnCommitCallbacks(execute=False):
            response = self.client.post(
                reverse("admin:core_parser_changelist"),
                {"action": "run_now", "_selected_action": [first.pk, second.pk]},
                follow=True,
            )

        self.assertEqual(Run.objects.count(), 2)
        self.assertContains(response, "run ")
        self.assertEqual(set(Run.objects.values_list("parser__name", flat=True)), {"first", "second"})

    def test_the_parser_list_shows_the_last_run_status(self):
        parser = make_parser("def parse():\n    return {}\n", name="weather")
        Run.objects.create(parser=parser, status=Run.Status.ERROR)
        Run.objects.create(parser=parser, status=Run.Status.COMPLETED)

        response = self.client.get(reverse("admin:core_parser_changelist"))

        self.assertContains(
            response,
            '<td class="field-last_run_status">'
            '<span class="parseq-status parseq-status-completed">completed</span></td>',
            html=True,
        )


class RunPagesTests(AdminTestCase):
    def test_a_failed_run_page_shows_error_log_and_error_txt_read_only(self):
        parser = make_parser("def parse():\n    return {}\n")
        run = Run.objects.create(parser=parser, status=Run.Status.ERROR, error="ValueError: <boom>", log="step 1")

        response = self.client.get(reverse("admin:core_run_change", args=[run.run_id]))

        self.assertContains(response, "ValueError: &lt;boom&gt;")
        self.assertContains(response, "step 1")
        self.assertContains(response, f'href="/{run.run_id}/error.txt"')
        self.assertNotContains(response, 'name="_save"')

    def test_a_completed_run_page_links_its_files(self):
        parser = make_parser("def parse():\n    return {}\n")
        files = [{"name": "a b.csv", "size": 3, "content_type": "text/csv"}]
        run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED, files=files)

        response = self.client.get(reverse("admin:core_run_change", args=[run.run_id]))

        self.assertContains(response, f'href="/{run.run_id}/a%20b.csv"')

    def test_the_run_list_filters_by_status(self):
        parser = make_parser("def parse():\n    return {}\n")
        failed = Run.objects.create(parser=parser, status=Run.Status.ERROR)
        done = Run.objects.create(parser=parser, status=Run.Status.COMPLETED)

        response = self.client.get(reverse("admin:core_run_changelist"), {"status__exact": "error"})

        self.assertContains(response, str(failed.run_id))
        self.assertNotContains(response, str(done.run_id))

    def test_runs_cannot_be_added_by_hand(self):
        self.assertEqual(self.client.get(reverse("admin:core_run_add")).status_code, 403)
