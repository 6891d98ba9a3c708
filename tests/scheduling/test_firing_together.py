"""Many schedules due at once fire together: one run each, by the rules of one at a time, in a few queries.

The service tests call `fire_schedules` at an explicit `now`; the round tests drive a real (paused)
APScheduler with django_apscheduler's job store, as `runscheduler` fires a round of due jobs.
"""

from datetime import UTC, datetime, timedelta
from unittest import mock

import dramatiq
from django.db import DatabaseError, connection
from django.test import TestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from parseq.core.models import Parser, Run
from parseq.scheduling import keeper
from parseq.scheduling.keeper import new_scheduler, stop_scheduler, sync_all
from parseq.scheduling.services import fire_schedule, fire_schedules
from tests.helpers import TemporaryMediaMixin, make_parser, wait_until
from tests.scheduling.test_keeper import InProcessSchedulerTestCase, job_time

DUE = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"


def minutes(n):
    return timedelta(minutes=n)


def sent_run_ids():
    """The run ids sent to the workers, from the in-memory broker's queue."""
    return [dramatiq.Message.decode(data).args[0] for data in dramatiq.get_broker().queues["runs"].queue]


class FiringTogetherTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        dramatiq.get_broker().flush_all()
        self.addCleanup(dramatiq.get_broker().flush_all)

    def make_parsers(self, count, prefix="parser", **fields):
        fields = {"scheduled_time": DUE, "repeat_after": minutes(10), **fields}
        return [make_parser(SCRIPT, name=f"{prefix}-{number}", **fields) for number in range(count)]

    def fire(self, due_times, *, now):
        with self.captureOnCommitCallbacks(execute=True):
            return fire_schedules(due_times=due_times, now=now)

    def runs_of(self, parser):
        return list(parser.runs.order_by("scheduled_for").values_list("status", "scheduled_for"))


class FiringManyTests(FiringTogetherTestCase):
    def test_many_parsers_due_in_one_round_get_one_enqueued_run_each_for_their_own_due_time(self):
        # Given twelve parsers, each due at its own second
        parsers = self.make_parsers(12)
        due_times = {parser.pk: [DUE + timedelta(seconds=number)] for number, parser in enumerate(parsers)}

        # When they are fired together
        fired = self.fire(due_times, now=DUE + timedelta(seconds=12))

        # Then each has one scheduled run, enqueued for its due time, and sent to the workers
        for number, parser in enumerate(parsers):
            self.assertEqual(self.runs_of(parser), [("enqueued", DUE + timedelta(seconds=number))])
            self.assertEqual((fired[parser.pk].parser_id, fired[parser.pk].trigger), (parser.pk, "schedule"))
        self.assertCountEqual(sent_run_ids(), [str(run.run_id) for run in fired.values()])

    def test_a_round_holding_a_due_time_fired_already_still_runs_the_others_and_adds_no_duplicate(self):
        # Given three parsers due at the same time, one of which another scheduler fired already
        first, second, third = self.make_parsers(3)
        with self.captureOnCommitCallbacks(execute=True):
            earlier = fire_schedule(parser_id=second.pk, due_times=[DUE], now=DUE)

        # When the three are fired together
        fired = self.fire({parser.pk: [DUE] for parser in (first, second, third)}, now=DUE)

        # Then the other two run, and the one fired already keeps its single run
        self.assertEqual(sorted(fired), sorted([first.pk, third.pk]))
        for parser in (first, second, third):
            self.assertEqual(self.runs_of(parser), [("enqueued", DUE)])
        self.assertEqual(second.runs.get(), earlier)
        self.assertCountEqual(sent_run_ids(), [str(earlier.run_id)] + [str(run.run_id) for run in fired.values()])

    def test_within_one_round_each_parser_keeps_its_own_overlap_and_misfire_rules(self):
        # Given parsers in every situation, due in the same round
        idle, busy, busy_allowed, late, too_late, disabled = (
            make_parser(SCRIPT, name=name, scheduled_time=DUE, repeat_after=minutes(10))
            for name in ("idle", "busy", "busy_allowed", "late", "too_late", "disabled")
        )
        running = Run.objects.create(parser=busy, status=Run.Status.RUNNING)
        Run.objects.create(parser=busy_allowed, status=Run.Status.ENQUEUED)
        Parser.objects.filter(pk=busy_allowed.pk).update(overlap=Parser.Overlap.ALLOW)
        Parser.objects.filter(pk=disabled.pk).update(enabled=False)
        now, due = DUE + minutes(25), DUE + minutes(20)

        # When they are fired together
        fired = self.fire(
            {
                idle.pk: [due],
                busy.pk: [due],
                busy_allowed.pk: [due],
                late.pk: [DUE, DUE + minutes(10), due],
                too_late.pk: [DUE - minutes(90)],
                disabled.pk: [due],
            },
            now=now,
        )

        # Then each gets what it would get alone
        self.assertEqual(self.runs_of(idle), [("enqueued", due)])
        self.assertEqual((fired[busy.pk].status, fired[busy.pk].scheduled_for), ("skipped", due))
        self.assertIn(f"while run {running.run_id} was still running", fired[busy.pk].error)
        self.assertEqual(fired[busy_allowed.pk].status, "enqueued")
        self.assertEqual(self.runs_of(late), [("skipped", DUE), ("enqueued", due)])
        self.assertIn("coalesced into the run due at 2026-11-28 12:20:00", late.runs.get(status="skipped").error)
        self.assertEqual(self.runs_of(too_late), [("skipped", DUE - minutes(90))])
        self.assertIn("older than the misfire grace period", fired[too_late.pk].error)
        self.assertNotIn(disabled.pk, fired)
        self.assertFalse(disabled.runs.exists())
        # And only the enqueued runs are sent
        self.assertCountEqual(
            sent_run_ids(), [str(run.run_id) for run in Run.objects.filter(status="enqueued", trigger="schedule")]
        )

    def test_firing_ten_times_as_many_parsers_together_takes_no_more_queries(self):
        def queries_to_fire(count, prefix):
            # Half of them busy with a run (overlap skip), one with missed due times.
            parsers = self.make_parsers(count, prefix)
            for parser in parsers[::2]:
                Run.objects.create(parser=parser, status=Run.Status.RUNNING)
            due_times = {parser.pk: [DUE + minutes(10)] for parser in parsers}
            due_times[parsers[1].pk] = [DUE, DUE + minutes(10)]
            with CaptureQueriesContext(connection) as queries:
                fired = self.fire(due_times, now=DUE + minutes(10))
            self.assertEqual(len(fired), count)
            return len(queries)

        few, many = queries_to_fire(2, "few"), queries_to_fire(20, "many")

        self.assertEqual(many, few)
        self.assertLessEqual(many, 5)  # the parsers with their busy runs, the INSERT, and the savepoint around it


class FiringRoundTests(TemporaryMediaMixin, TransactionTestCase):
    """A round of `runscheduler`: the due parsers' jobs fired together, then their next times stored."""

    def setUp(self):
        self.scheduler = new_scheduler()
        self.scheduler.start(paused=True)
        self.addCleanup(stop_scheduler, self.scheduler)
        self.addCleanup(dramatiq.get_broker().flush_all)
        self.now = timezone.now().replace(microsecond=0)
        self.due = self.now - timedelta(seconds=30)

    def due_parsers(self, count, prefix="parser", **fields):
        """Parsers whose jobs came due 30 s ago: every minute, or once."""
        fields = {"scheduled_time": self.due, "repeat_after": timedelta(minutes=1), **fields}
        parsers = [make_parser(SCRIPT, name=f"{prefix}-{number}", **fields) for number in range(count)]
        sync_all(scheduler=self.scheduler, now=self.now - timedelta(seconds=40))
        return parsers

    def test_one_round_fires_every_due_parser_and_stores_each_jobs_next_time(self):
        # Given ten parsers due every minute and two due once, all due 30 s ago
        every_minute = self.due_parsers(10, "every-minute")
        once = self.due_parsers(2, "once", repeat_after=None)

        # When the scheduler fires a round
        self.scheduler.fire_due_parsers(now=self.now)

        # Then each has one run for its due time
        for parser in every_minute + once:
            self.assertEqual(list(parser.runs.values_list("status", "scheduled_for")), [("enqueued", self.due)])
        # And each repeating job is next due a minute later, the one-offs' jobs are gone
        for parser in every_minute:
            self.assertEqual(job_time(parser), self.due + timedelta(minutes=1))
            self.assertEqual(self.scheduler.get_job(f"parser-{parser.pk}").next_run_time, job_time(parser))
        self.assertEqual([job_time(parser) for parser in once], [None, None])
        # And the admin shows an execution of each repeating job
        self.assertEqual(
            DjangoJobExecution.objects.filter(status=DjangoJobExecution.SUCCESS, run_time=self.due).count(), 10
        )

    def test_a_round_of_twelve_due_parsers_takes_as_many_queries_as_a_round_of_two(self):
        def queries_of_a_round(count, prefix):
            self.due_parsers(count - 1, prefix)
            self.due_parsers(1, f"{prefix}-once", repeat_after=None)
            with CaptureQueriesContext(connection) as queries:
                self.scheduler.fire_due_parsers(now=self.now)
            self.assertEqual(Run.objects.filter(parser__name__startswith=prefix).count(), count)
            return len(queries)

        many, few = queries_of_a_round(12, "many"), queries_of_a_round(2, "few")

        self.assertEqual(many, few)
        # The due jobs, the parsers, the runs' INSERT; the jobs' UPDATE, the fired one-off's DELETE (and its
        # executions'), the executions' INSERT; two transactions.
        self.assertLessEqual(many, 12)

    def test_a_round_stopped_before_it_stores_the_next_times_is_fired_again_without_a_second_run(self):
        # Given three parsers due, and a round that fails once their runs are recorded (a scheduler killed then)
        parsers = self.due_parsers(3)
        with (
            mock.patch.object(keeper, "_store_next_times", side_effect=DatabaseError("connection lost")),
            self.assertLogs("parseq.scheduling.keeper", "ERROR"),
        ):
            self.scheduler.fire_due_parsers(now=self.now)
        self.assertEqual([job_time(parser) for parser in parsers], [self.due] * 3)

        # When the next round fires them again
        self.scheduler.fire_due_parsers(now=self.now + timedelta(seconds=1))

        # Then each due time still has one run, and the jobs move on
        for parser in parsers:
            self.assertEqual(list(parser.runs.values_list("scheduled_for", flat=True)), [self.due])
            self.assertEqual(job_time(parser), self.due + timedelta(minutes=1))


class FallbackTests(InProcessSchedulerTestCase):
    def test_when_firing_together_keeps_failing_apscheduler_fires_the_due_parsers_one_by_one(self):
        # Given a scheduler whose batches always fail to store the next times
        with (
            mock.patch.object(keeper, "_store_next_times", side_effect=DatabaseError("broken")),
            self.assertLogs("parseq.scheduling.keeper", "ERROR"),
        ):
            schedule_keeper, _ = self.start_keeper()
            wait_until(schedule_keeper.active.is_set, timeout=10, message="the scheduler to become active")

            # When a parser is due every second
            first = timezone.now() + timedelta(seconds=1)
            parser = make_parser(SCRIPT, scheduled_time=first, repeat_after=timedelta(seconds=1), overlap="allow")

            # Then it still runs once per due time, and its job moves on
            wait_until(lambda: parser.runs.count() >= 3, timeout=6, message="three runs")
            dues = [run.scheduled_for for run in self.scheduled_runs(parser)][:3]
            self.assertEqual(dues, [first + timedelta(seconds=s) for s in range(3)])
            # The job's next time is stored just after the run it fired: a moment later on a busy machine.
            wait_until(lambda: job_time(parser) > dues[-1], timeout=3, message="the job to move on")
        self.assertTrue(DjangoJob.objects.filter(id=f"parser-{parser.pk}").exists())
