"""The admin as a control room: run pages, cancelling, live updates, the parser page and the dashboard."""

import hashlib
from datetime import timedelta
from unittest import mock

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from parseq.core import intake
from parseq.core.models import Parser, Run
from tests.helpers import TemporaryMediaMixin, make_parser

SOURCE = "def parse():\n    return {'a.txt': b'a'}\n"
PARSER_FORM = {
    "timeout": "300",
    "max_attempts": "2",
    "network": "internet",
    "overlap": "skip",
    "webhook_on": "error",
    "restricted": "on",
}


class ControlRoomTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        self.client.force_login(self.admin)
        self.parser = make_parser(SOURCE, name="rates", filename="rates.py")

    def run_page(self, run):
        return self.client.get(reverse("admin:core_run_change", args=[run.run_id]))


class RunPageTests(ControlRoomTestCase):
    def test_result_files_show_size_type_download_links_and_image_thumbnails(self):
        files = [
            {"name": "chart.png", "size": 2048, "content_type": "image/png"},
            {"name": "rows.csv", "size": 10, "content_type": "text/csv"},
        ]
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED, files=files)

        response = self.run_page(run)

        self.assertContains(response, f'<img class="parseq-thumbnail" src="/{run.run_id}/chart.png"')
        self.assertContains(response, f'<a href="/{run.run_id}/rows.csv">rows.csv</a>', html=True)
        self.assertContains(response, "2.0 KiB")
        self.assertContains(response, "10 bytes")
        self.assertContains(response, "text/csv")
        self.assertNotContains(response, f'src="/{run.run_id}/rows.csv"')  # only images are previewed
        self.assertContains(response, f'href="/api/runs/{run.run_id}/archive.zip"')

    def test_a_long_log_shows_its_tail_first_and_links_the_whole(self):
        log = "".join(f"line {number}\n" for number in range(1, 1001))
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED, log=log)

        response = self.run_page(run)

        self.assertContains(response, "The last 200 of 1000 lines.")
        self.assertContains(response, "line 1000")
        self.assertContains(response, "line 801\n")
        self.assertNotContains(response, "line 800\n")
        self.assertContains(response, f'href="/api/runs/{run.run_id}/log"')
        self.assertContains(response, 'class="parseq-pre parseq-log"')

    def test_a_failed_run_shows_its_error_readably_escaped(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.ERROR, error="Traceback\n  <script>x</script>")

        response = self.run_page(run)

        self.assertContains(
            response, '<pre class="parseq-pre parseq-error">Traceback\n  &lt;script&gt;x&lt;/script&gt;'
        )
        self.assertContains(response, 'data-status="error"')

    def test_the_page_shows_the_script_hash_and_whether_the_script_changed_since(self):
        current = hashlib.sha256(SOURCE.encode()).hexdigest()
        same = Run.objects.create(parser=self.parser, status="completed", script_sha256=current)
        older = Run.objects.create(parser=self.parser, status="completed", script_sha256="0" * 64)

        self.assertContains(self.run_page(same), f"{current}</code> (the parser's current script)")
        self.assertContains(self.run_page(older), "(the script has changed since this run)")

    def test_the_page_never_reads_the_script_back_from_storage(self):
        run = Run.objects.create(parser=self.parser, status="completed", script_sha256=self.parser.script_sha256)
        storage = self.parser.script.storage

        with mock.patch.object(storage, "open", side_effect=AssertionError("the run page read the storage")):
            response = self.run_page(run)

        self.assertContains(response, "(the parser's current script)")

    def test_a_new_script_gets_its_hash_as_it_is_saved_and_older_runs_say_it_changed(self):
        run = Run.objects.create(parser=self.parser, status="completed", script_sha256=self.parser.script_sha256)
        replacement = b"def parse():\n    return {'new.txt': b'x'}\n"

        self.parser.script = SimpleUploadedFile("rates.py", replacement)
        self.parser.save(update_fields=["script"])

        self.parser.refresh_from_db()
        self.assertEqual(self.parser.script_sha256, hashlib.sha256(replacement).hexdigest())
        self.assertContains(self.run_page(run), "(the script has changed since this run)")

    def test_the_page_shows_the_settings_the_run_went_by_without_values(self):
        used = {"timeout": 42, "network": "none", "extra_egress_ports": [8080], "environment": ["API_KEY", "CITY"]}
        run = Run.objects.create(parser=self.parser, status="completed", parser_settings=used)

        response = self.run_page(run)

        self.assertContains(response, "<tr><th>timeout</th><td>42</td></tr>", html=True)
        self.assertContains(response, "<tr><th>environment</th><td>API_KEY, CITY</td></tr>", html=True)
        self.assertContains(response, "<tr><th>extra egress ports</th><td>8080</td></tr>", html=True)

    def test_a_running_run_shows_how_long_it_has_been_running_in_a_live_region(self):
        started = timezone.now() - timedelta(seconds=12)
        run = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING, started_time=started)

        response = self.run_page(run)

        self.assertContains(response, 'data-elapsed="12">running for 12 s</span>')
        self.assertContains(response, f'data-live-scope="run:{run.run_id}"')
        self.assertContains(response, 'src="/static/parseq/live.js"')
        self.assertNotContains(response, 'http-equiv="refresh"')


class RunListTests(ControlRoomTestCase):
    def setUp(self):
        super().setUp()
        self.failed = Run.objects.create(
            parser=self.parser,
            status=Run.Status.ERROR,
            error="Traceback (most recent call last):\n  ...\nLookupError: no table on the page",
        )
        self.other = make_parser(SOURCE, name="weather", filename="weather.py")
        self.completed = Run.objects.create(parser=self.other, status=Run.Status.COMPLETED)

    def run_list(self, **query):
        return self.client.get(reverse("admin:core_run_changelist"), query)

    def test_a_run_shows_its_short_id_linking_its_page_with_the_whole_id_on_hover(self):
        page = self.run_list().content.decode()

        url = reverse("admin:core_run_change", args=[self.failed.run_id])
        self.assertIn(
            f'<a href="{url}" title="{self.failed.run_id}" class="parseq-run-id">{str(self.failed.run_id)[:8]}</a>',
            page,
        )
        self.assertNotIn(f">{self.failed.run_id}<", page)  # the whole id is never a cell's text

    def test_the_parser_is_a_link_and_a_failed_run_shows_its_errors_last_line(self):
        page = self.run_list().content.decode()

        self.assertIn(f'<a href="{reverse("admin:core_parser_change", args=[self.parser.pk])}">rates</a>', page)
        self.assertIn('title="LookupError: no table on the page">LookupError: no table on the page</span>', page)
        self.assertNotIn("Traceback (most recent call last)", page)

    def test_times_read_to_the_second_as_on_the_run_page(self):
        page = self.run_list().content.decode()

        self.assertIn(timezone.localtime(self.failed.created_time).strftime("%Y-%m-%d %H:%M:%S"), page)

    def test_the_search_box_finds_a_run_by_a_word_of_its_error_its_short_id_or_its_parsers_name(self):
        for term, expected in [
            ("no table", [self.failed]),
            (str(self.completed.run_id)[:8], [self.completed]),
            (str(self.completed.run_id), [self.completed]),
            ("weather", [self.completed]),
            ("nothing like this", []),
        ]:
            with self.subTest(term=term):
                shown = list(self.run_list(q=term).context["cl"].result_list)

                self.assertEqual(shown, expected)


class CancelledLogTests(ControlRoomTestCase):
    def test_a_run_cancelled_a_moment_ago_says_its_log_is_on_its_way_and_later_that_nothing_was_printed(self):
        just = Run.objects.create(parser=self.parser, status=Run.Status.CANCELLED, finished_time=timezone.now())
        long_ago = Run.objects.create(
            parser=self.parser, status=Run.Status.CANCELLED, finished_time=timezone.now() - timedelta(minutes=1)
        )

        self.assertContains(self.run_page(just), "Stopping: what it printed until now shows here in a moment.")
        self.assertContains(self.run_page(long_ago), "Nothing was printed.")


class CancelInAdminTests(ControlRoomTestCase):
    def test_the_cancel_button_cancels_a_running_run_and_records_who(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING, started_time=timezone.now())
        self.assertContains(self.run_page(run), 'id="cancel-run"')

        response = self.client.post(reverse("admin:core_run_cancel", args=[run.run_id]), follow=True)

        run.refresh_from_db()
        self.assertEqual((run.status, run.cancelled_by), (Run.Status.CANCELLED, self.admin))
        self.assertContains(response, "Run cancelled.")
        self.assertContains(response, "cancelled by admin")
        self.assertNotContains(response, 'id="cancel-run"')

    def test_a_finished_run_has_no_cancel_button_and_cancelling_it_says_why_not(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        self.assertNotContains(self.run_page(run), 'id="cancel-run"')

        response = self.client.post(reverse("admin:core_run_cancel", args=[run.run_id]), follow=True)

        self.assertContains(response, "The run had already ended: it is completed.")
        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.COMPLETED)

    def test_the_cancel_action_cancels_the_selected_active_runs(self):
        queued = Run.objects.create(parser=self.parser)
        done = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)

        response = self.client.post(
            reverse("admin:core_run_changelist"),
            {"action": "cancel_runs", "_selected_action": [queued.run_id, done.run_id]},
            follow=True,
        )

        self.assertContains(response, "Cancelled 1 run(s). 1 had already ended.")
        queued.refresh_from_db()
        self.assertEqual(queued.status, Run.Status.CANCELLED)

    def test_staff_who_may_only_view_runs_cannot_cancel(self):
        viewer = get_user_model().objects.create_user("viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
        self.client.force_login(viewer)
        run = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING)

        self.assertNotContains(self.run_page(run), 'id="cancel-run"')
        self.client.post(reverse("admin:core_run_cancel", args=[run.run_id]))

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.RUNNING)


class LiveViewTests(ControlRoomTestCase):
    def live(self, *scopes):
        return self.client.get(reverse("admin:core_run_live"), [("scope", scope) for scope in scopes])

    def test_a_fingerprint_changes_when_a_run_in_its_scope_changes_and_only_then(self):
        run = Run.objects.create(parser=self.parser)
        other = make_parser(SOURCE, name="weather", filename="weather.py")
        scopes = ["runs", f"parser:{self.parser.pk}", f"run:{run.run_id}", f"parser:{other.pk}"]
        before = self.live(*scopes).json()["fingerprints"]

        Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, updated_time=timezone.now())
        after = self.live(*scopes).json()["fingerprints"]

        self.assertNotEqual(before["runs"], after["runs"])
        self.assertNotEqual(before[f"parser:{self.parser.pk}"], after[f"parser:{self.parser.pk}"])
        self.assertNotEqual(before[f"run:{run.run_id}"], after[f"run:{run.run_id}"])
        self.assertEqual(before[f"parser:{other.pk}"], after[f"parser:{other.pk}"])

    def test_a_page_is_drawn_with_the_fingerprint_the_live_view_answers(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING)

        fingerprint = self.live(f"run:{run.run_id}").json()["fingerprints"][f"run:{run.run_id}"]

        self.assertContains(self.run_page(run), f'data-live-fingerprint="{fingerprint}"')

    def test_malformed_scopes_are_400_and_anonymous_users_are_sent_to_log_in(self):
        for scopes in ([], ["parser:x"], ["run:not-a-uuid"], ["everything"]):
            with self.subTest(scopes=scopes):
                self.assertEqual(self.live(*scopes).status_code, 400)
        self.client.logout()
        self.assertEqual(self.live("runs").status_code, 302)


class ParserPageTests(ControlRoomTestCase):
    def change(self, **fields):
        data = {"name": "rates", **PARSER_FORM, **fields}
        return self.client.post(reverse("admin:core_parser_change", args=[self.parser.pk]), data)

    def test_the_page_shows_the_success_rate_of_the_last_20_finished_runs(self):
        for status in ["error"] * 5 + ["completed"] * 17 + ["error"] * 3 + ["running", "skipped"]:
            Run.objects.create(parser=self.parser, status=status)

        response = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk]))

        # the newest 20 that completed or failed: 17 completed, 3 errors (the 5 older errors are beyond)
        self.assertContains(response, "<strong>85%</strong> of the last 20 finished runs succeeded (17 of 20).")
        self.assertContains(response, f'data-live-scope="parser:{self.parser.pk}"')

    def test_the_page_links_the_parser_in_the_api_and_shows_its_script_as_text(self):
        response = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk]))

        self.assertContains(response, f'href="/api/parsers/{self.parser.pk}/"')
        self.assertContains(response, "def parse():\n    return {&#x27;a.txt&#x27;: b&#x27;a&#x27;}")
        self.assertContains(response, 'class="parseq-editor"')

    def test_the_stored_script_links_its_source_not_a_media_url_parseq_never_serves(self):
        page = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk])).content.decode()

        self.assertIn(f'Currently: <a href="/api/parsers/{self.parser.pk}/script/">{self.parser.script.name}</a>', page)
        self.assertNotIn("media-is-not-served", page)
        self.assertNotIn("script-clear", page)  # a parser always has a script: nothing to clear

    def test_an_edited_script_text_replaces_the_script(self):
        edited = "def parse():\n    return {'b.txt': b'b'}\n"

        response = self.change(script_text=edited)

        self.assertEqual(response.status_code, 302)
        self.parser.refresh_from_db()
        with self.parser.script.open("rb") as stored:
            self.assertEqual(stored.read(), edited.encode())

    def test_a_broken_script_text_is_refused_with_line_and_reason_and_nothing_changes(self):
        original = self.parser.script.name

        response = self.change(script_text="import os\n\ndef parse(:\n")

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "line 3")
        self.parser.refresh_from_db()
        self.assertEqual(self.parser.script.name, original)

    def test_an_unchanged_script_text_keeps_the_stored_file(self):
        original = self.parser.script.name

        self.assertEqual(self.change(script_text=SOURCE).status_code, 302)

        self.parser.refresh_from_db()
        self.assertEqual(self.parser.script.name, original)

    def test_uploading_a_file_and_editing_the_text_at_once_is_refused(self):
        upload = SimpleUploadedFile("rates.py", SOURCE.encode())

        response = self.change(script=upload, script_text="def parse():\n    return {}\n")

        self.assertContains(response, intake.BOTH_GIVEN)

    def test_a_new_parser_can_be_written_as_text_and_needs_a_script_one_way_or_the_other(self):
        add = reverse("admin:core_parser_add")

        refused = self.client.post(add, {"name": "written", **PARSER_FORM})
        self.assertContains(refused, intake.NONE_GIVEN)

        accepted = self.client.post(add, {"name": "written", "script_text": SOURCE, **PARSER_FORM})
        self.assertEqual(accepted.status_code, 302)
        parser = Parser.objects.get(name="written")
        self.assertTrue(parser.script.name.endswith("/written.py"))


class DashboardTests(ControlRoomTestCase):
    def test_the_index_counts_the_last_days_runs_lists_running_ones_and_failing_parsers(self):
        failing = make_parser(SOURCE, name="weather", filename="weather.py")
        Run.objects.create(parser=failing, status=Run.Status.ERROR)
        running = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING, started_time=timezone.now())
        Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        old = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        Run.objects.filter(pk=old.pk).update(created_time=timezone.now() - timedelta(days=2))

        response = self.client.get(reverse("admin:index"))

        self.assertContains(response, "Runs in the last 24 hours")
        counts = response.context["last_day"]
        self.assertEqual(dict(counts)["completed"], 1)
        self.assertEqual(dict(counts)["error"], 1)
        self.assertEqual(dict(counts)["running"], 1)
        self.assertContains(response, f'href="/admin/core/run/{running.run_id}/change/"')
        self.assertContains(response, f'<a href="/admin/core/parser/{failing.pk}/change/">weather</a>', html=True)
        self.assertContains(response, 'data-live-scope="runs"')

    def test_the_failing_parsers_list_is_bounded_and_links_the_rest(self):
        for n in range(13):
            Run.objects.create(parser=make_parser(SOURCE, name=f"failing {n:02}"), status=Run.Status.ERROR)

        response = self.client.get(reverse("admin:index"))

        self.assertEqual(len(response.context["failing"]), 10)
        self.assertContains(response, ">3 more: see the runs in error</a>")

    def test_parseqs_apps_come_first_and_djangos_recent_actions_are_gone(self):
        response = self.client.get(reverse("admin:index"))

        labels = [app["app_label"] for app in response.context["app_list"]]
        self.assertEqual(labels[0], "core")
        parseq = [app["name"].startswith("Parseq") for app in response.context["app_list"]]
        self.assertEqual(parseq, sorted(parseq, reverse=True))  # no Parseq app after another one
        self.assertNotContains(response, "Recent actions")

    def test_with_nothing_going_on_the_dashboard_says_so(self):
        response = self.client.get(reverse("admin:index"))

        self.assertContains(response, "Nothing is running.")
        self.assertContains(response, "None: every parser's last run went well.")
