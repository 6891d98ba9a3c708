"""What a due schedule does, at an explicit `now`: a run, or a skip recorded in the history."""

from datetime import UTC, datetime, timedelta

from django.test import TestCase, override_settings

from parseq.core.models import Parser, Run
from parseq.scheduling.services import fire_schedule
from tests.helpers import TemporaryMediaMixin, make_parser

DUE = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"


def minutes(n):
    return timedelta(minutes=n)


class FiringTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.parser = make_parser(SCRIPT, name="rates", scheduled_time=DUE, repeat_after=minutes(10))

    def fire(self, *due_times, now, active_since=None):
        with self.captureOnCommitCallbacks(execute=False):
            return fire_schedule(
                parser_id=self.parser.pk, due_times=list(due_times), now=now, active_since=active_since
            )

    def runs(self):
        return list(Run.objects.order_by("scheduled_for").values_list("status", "scheduled_for"))


class OnTimeTests(FiringTestCase):
    def test_a_due_schedule_enqueues_a_scheduled_run_for_its_due_time(self):
        run = self.fire(DUE, now=DUE + timedelta(milliseconds=3))

        self.assertEqual((run.status, run.trigger, run.scheduled_for), ("enqueued", "schedule", DUE))

    def test_a_due_time_fired_twice_gets_one_run(self):
        first = self.fire(DUE, now=DUE)
        second = self.fire(DUE, now=DUE + timedelta(seconds=1))

        self.assertIsNotNone(first)
        self.assertIsNone(second)
        self.assertEqual(self.runs(), [("enqueued", DUE)])

    def test_a_parser_disabled_or_deleted_since_does_not_run(self):
        Parser.objects.filter(pk=self.parser.pk).update(enabled=False)
        self.assertIsNone(self.fire(DUE, now=DUE))

        self.parser.delete()
        self.assertIsNone(self.fire(DUE, now=DUE))
        self.assertFalse(Run.objects.exists())


class OverlapTests(FiringTestCase):
    def test_by_default_a_run_due_while_the_previous_one_is_running_is_skipped_and_recorded(self):
        previous = Run.objects.create(parser=self.parser, status=Run.Status.RUNNING)

        skipped = self.fire(DUE, now=DUE)

        self.assertEqual((skipped.status, skipped.scheduled_for, skipped.trigger), ("skipped", DUE, "schedule"))
        self.assertIn(f"while run {previous.run_id} was still running", skipped.error)
        self.assertIn("overlap policy is skip", skipped.error)
        self.assertIsNotNone(skipped.finished_time)

    def test_an_enqueued_previous_run_counts_as_overlapping_too(self):
        Run.objects.create(parser=self.parser, status=Run.Status.ENQUEUED)

        self.assertEqual(self.fire(DUE, now=DUE).status, "skipped")

    def test_with_overlap_allowed_the_run_starts_anyway(self):
        Parser.objects.filter(pk=self.parser.pk).update(overlap=Parser.Overlap.ALLOW)
        Run.objects.create(parser=self.parser, status=Run.Status.RUNNING)

        self.assertEqual(self.fire(DUE, now=DUE).status, "enqueued")

    def test_finished_runs_do_not_overlap(self):
        for status in (Run.Status.COMPLETED, Run.Status.ERROR, Run.Status.SKIPPED):
            Run.objects.create(parser=self.parser, status=status)

        self.assertEqual(self.fire(DUE, now=DUE).status, "enqueued")


class MisfireTests(FiringTestCase):
    def test_due_times_missed_within_the_grace_period_are_coalesced_into_one_run_and_a_recorded_skip(self):
        missed = [DUE, DUE + minutes(10), DUE + minutes(20)]

        run = self.fire(*missed, now=DUE + minutes(25))

        self.assertEqual(run.scheduled_for, DUE + minutes(20))
        self.assertEqual(self.runs(), [("skipped", DUE), ("enqueued", DUE + minutes(20))])
        skip = Run.objects.get(status="skipped")
        self.assertIn("2 scheduled runs due from 2026-11-28 12:00:00 UTC to 2026-11-28 12:10:00 UTC", skip.error)
        self.assertIn("while no scheduler was running: coalesced into the run due at 2026-11-28 12:20:00", skip.error)

    def test_due_times_missed_after_the_scheduler_took_over_say_it_was_held_up_not_that_none_was_running(self):
        # Given a scheduler active since before the due times, whose rounds were blocked (a frozen broker)
        missed = [DUE, DUE + minutes(10), DUE + minutes(20)]

        self.fire(*missed, now=DUE + minutes(25), active_since=DUE - minutes(1))

        skip = Run.objects.get(status="skipped")
        self.assertIn("while the scheduler was held up (the database or the broker did not answer in time)", skip.error)
        self.assertNotIn("no scheduler was running", skip.error)

    def test_due_times_missed_before_the_scheduler_took_over_were_missed_while_none_was_running(self):
        self.fire(DUE, DUE + minutes(10), now=DUE + minutes(11), active_since=DUE + minutes(11))

        self.assertIn("while no scheduler was running", Run.objects.get(status="skipped").error)

    def test_a_single_late_due_time_within_the_grace_period_just_runs(self):
        run = self.fire(DUE, now=DUE + minutes(59))

        self.assertEqual(self.runs(), [("enqueued", DUE)])
        self.assertEqual(run.status, "enqueued")

    def test_due_times_older_than_the_grace_period_are_skipped_and_recorded(self):
        skip = self.fire(DUE, DUE + minutes(10), now=DUE + minutes(10) + timedelta(hours=1, seconds=1))

        self.assertEqual(self.runs(), [("skipped", DUE + minutes(10))])
        self.assertIn("2 scheduled runs due while no scheduler was running, the last at 2026-11-28 12:10", skip.error)
        self.assertIn("older than the misfire grace period of 1 h (PARSEQ_MISFIRE_GRACE)", skip.error)

    @override_settings(MISFIRE_GRACE=30)
    def test_the_grace_period_is_a_setting(self):
        skip = self.fire(DUE, now=DUE + timedelta(seconds=31))

        self.assertEqual(skip.status, "skipped")
        self.assertIn("grace period of 30 s", skip.error)
