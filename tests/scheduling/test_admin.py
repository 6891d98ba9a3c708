"""Schedules in the admin: the form's checks, the next run, skips on the parser's page, on/off actions."""

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse

from parseq.core.models import Parser, Run
from parseq.scheduling.coordination import coordinator_for_database
from tests.helpers import TemporaryMediaMixin, make_parser

SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"
NEXT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class ScheduleAdminTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        user = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        self.client.force_login(user)

    def add_parser(self, **fields):
        data = {
            "name": "rates",
            "script": SimpleUploadedFile("rates.py", SCRIPT.encode()),
            "enabled": "on",
            "timeout": "300",
            "max_attempts": "2",
            "network": "internet",
            "overlap": "skip",
            "webhook_on": "error",
            **fields,
        }
        return self.client.post(reverse("admin:core_parser_add"), data)


class ScheduleFormTests(ScheduleAdminTestCase):
    def test_a_cron_schedule_with_a_timezone_is_accepted(self):
        response = self.add_parser(cron="30 6 * * mon-fri", cron_timezone="Europe/Berlin", overlap="allow")

        self.assertEqual(response.status_code, 302)
        parser = Parser.objects.get()
        self.assertEqual(
            (parser.cron, parser.cron_timezone, parser.overlap), ("30 6 * * mon-fri", "Europe/Berlin", "allow")
        )

    def test_an_interval_with_its_first_run_is_accepted(self):
        response = self.add_parser(scheduled_time_0="2030-01-01", scheduled_time_1="06:00:00", repeat_after="00:00:03")

        self.assertEqual(response.status_code, 302)
        self.assertEqual(Parser.objects.get().repeat_after, timedelta(seconds=3))

    def test_bad_schedules_are_refused_with_the_reason(self):
        cases = [
            ({"cron": "61 * * * *"}, "Not a cron expression: Error validating expression &#x27;61&#x27;"),
            ({"cron": "0 9 * *"}, "Not a cron expression: it has 4 field(s), not five."),
            ({"cron": "@daily", "cron_timezone": "Mars/Olympus"}, "&#x27;Mars/Olympus&#x27; is not a timezone"),
            ({"repeat_after": "00:10:00"}, "An interval needs its first run: set the scheduled time."),
            (
                {"cron": "@daily", "repeat_after": "00:10:00", "scheduled_time_0": "2030-01-01"},
                "Choose either an interval (repeat after) or a cron expression, not both.",
            ),
            (
                {"repeat_after": "00:00:00", "scheduled_time_0": "2030-01-01", "scheduled_time_1": "06:00"},
                "The interval must be at least one second.",
            ),
        ]
        for fields, reason in cases:
            with self.subTest(fields=fields):
                if "scheduled_time_0" in fields:
                    fields.setdefault("scheduled_time_1", "06:00:00")
                response = self.add_parser(**fields)
                self.assertContains(response, reason)
                self.assertFalse(Parser.objects.exists())


class NextRunAndHistoryTests(ScheduleAdminTestCase):
    def test_the_list_shows_each_schedule_and_the_next_run(self):
        make_parser(SCRIPT, name="every 3 s", scheduled_time=NEXT, repeat_after=timedelta(seconds=3))
        make_parser(SCRIPT, name="cron", cron="0 9 * * *", cron_timezone="Asia/Tokyo", enabled=False)

        response = self.client.get(reverse("admin:core_parser_changelist"))

        self.assertContains(response, "every 0:00:03")
        self.assertContains(response, "cron 0 9 * * * (Asia/Tokyo), off")
        self.assertContains(response, "2030-01-02 03:04:05 UTC")

    def test_the_parser_page_shows_the_next_run_and_recent_runs_with_the_reason_of_a_skip(self):
        parser = make_parser(SCRIPT, scheduled_time=NEXT, repeat_after=timedelta(minutes=10))
        Run.objects.create(
            parser=parser,
            trigger="schedule",
            status="skipped",
            scheduled_for=NEXT - timedelta(minutes=10),
            error="Skipped: due at 2030-01-02 02:54:05 UTC while run 1234 was still running.",
        )

        response = self.client.get(reverse("admin:core_parser_change", args=[parser.pk]))

        self.assertContains(response, "2030-01-02 03:04:05 UTC")
        self.assertContains(response, 'data-status="skipped">skipped</span></td><td>-</td><td>schedule</td>')
        self.assertContains(response, "<td>2030-01-02 02:54:05 UTC</td>")
        self.assertContains(response, "while run 1234 was still running.")
        self.assertContains(response, f"?parser__id__exact={parser.pk}")

    def test_a_one_off_that_has_run_shows_no_next_run(self):
        parser = make_parser(SCRIPT, scheduled_time=NEXT - timedelta(days=3650))
        Run.objects.create(parser=parser, trigger="schedule", status="completed", scheduled_for=parser.scheduled_time)

        response = self.client.get(reverse("admin:core_parser_change", args=[parser.pk]))

        self.assertContains(response, '<div class="readonly">-</div>', html=False)

    def test_apschedulers_jobs_and_executions_are_in_the_admin(self):
        for model in ("djangojob", "djangojobexecution"):
            with self.subTest(model=model):
                self.assertEqual(self.client.get(f"/admin/django_apscheduler/{model}/").status_code, 200)

    def test_the_run_history_lists_skips_with_their_due_time(self):
        parser = make_parser(SCRIPT)
        Run.objects.create(parser=parser, trigger="schedule", status="skipped", scheduled_for=NEXT)

        response = self.client.get(reverse("admin:core_run_changelist") + "?status__exact=skipped")

        self.assertContains(response, "skipped")
        self.assertContains(response, 'title="schedule, due 2030-01-02 03:04:05 UTC">')  # to the second

    def test_a_warning_shows_while_no_scheduler_is_running(self):
        url = reverse("admin:core_parser_changelist")
        self.assertContains(self.client.get(url), "No scheduler is running")

        coordinator = coordinator_for_database()
        self.assertTrue(coordinator.try_lead())
        self.addCleanup(coordinator.release)
        self.assertNotContains(self.client.get(url), "No scheduler is running")


class AutomaticRunsActionTests(ScheduleAdminTestCase):
    def test_automatic_runs_are_switched_off_and_on_from_the_list(self):
        first, second = make_parser(SCRIPT, name="first"), make_parser(SCRIPT, name="second", enabled=False)
        url = reverse("admin:core_parser_changelist")
        selected = [first.pk, second.pk]

        response = self.client.post(
            url, {"action": "disable_automatic_runs", "_selected_action": selected}, follow=True
        )
        self.assertContains(response, "Automatic runs switched off for 1 parser(s).")
        self.assertFalse(Parser.objects.filter(enabled=True).exists())

        response = self.client.post(url, {"action": "enable_automatic_runs", "_selected_action": selected}, follow=True)
        self.assertContains(response, "Automatic runs switched on for 2 parser(s).")
        self.assertEqual(Parser.objects.filter(enabled=True).count(), 2)
