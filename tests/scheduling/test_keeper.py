"""The scheduler's jobs follow the parsers, and a scheduler in this process fires them on time.

The sync tests drive a real (paused) APScheduler with django_apscheduler's job store; the
keeper tests run a whole scheduler in a thread, as `make run` does, against the real clock.
"""

import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from unittest import mock

import dramatiq
from django.conf import settings
from django.test import TransactionTestCase, override_settings, tag
from django.utils import timezone
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from parseq.core import retention
from parseq.core.models import Parser, Run
from parseq.scheduling import jobs, keeper, selectors
from parseq.scheduling.coordination import FileCoordinator
from parseq.scheduling.jobs import PRUNE_JOB_ID
from parseq.scheduling.keeper import ScheduleKeeper, new_scheduler, stop_scheduler, sync_all
from tests.helpers import TemporaryMediaMixin, make_parser, wait_until

SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"


def job_time(parser):
    job = DjangoJob.objects.filter(id=f"parser-{parser.pk}").first()
    return job.next_run_time if job else None


class SyncTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.scheduler = new_scheduler()
        self.scheduler.start(paused=True)
        self.addCleanup(stop_scheduler, self.scheduler)
        self.now = timezone.now().replace(microsecond=0)

    def sync(self, now=None):
        sync_all(scheduler=self.scheduler, now=now or self.now)

    def test_a_scheduled_parser_gets_a_job_due_at_its_first_run(self):
        parser = make_parser(SCRIPT, scheduled_time=self.now + timedelta(seconds=5), repeat_after=timedelta(seconds=3))

        self.sync()

        self.assertEqual(job_time(parser), self.now + timedelta(seconds=5))
        self.assertEqual(selectors.next_run_time(parser=parser, now=self.now), job_time(parser))

    def test_an_edited_schedule_replaces_the_job_and_an_unchanged_one_keeps_its_missed_time(self):
        parser = make_parser(SCRIPT, scheduled_time=self.now - timedelta(seconds=30), repeat_after=timedelta(minutes=1))
        self.sync(now=self.now - timedelta(seconds=40))
        missed = job_time(parser)

        self.sync()  # the scheduler restarts: the same schedule keeps the time it missed
        self.assertEqual(job_time(parser), missed)

        parser.repeat_after = timedelta(minutes=2)
        parser.save()
        self.sync()  # an edit starts the schedule afresh from now
        self.assertEqual(job_time(parser), self.now + timedelta(seconds=90))
        self.assertEqual(selectors.next_run_time(parser=parser, now=self.now), job_time(parser))

    def test_disabling_removing_the_schedule_or_deleting_the_parser_removes_its_job(self):
        first_run = self.now + timedelta(hours=1)
        disabled = make_parser(SCRIPT, name="disabled", scheduled_time=first_run)
        unscheduled = make_parser(SCRIPT, name="unscheduled", scheduled_time=first_run)
        deleted = make_parser(SCRIPT, name="deleted", scheduled_time=first_run)
        self.sync()
        self.assertEqual(DjangoJob.objects.count(), 3)

        Parser.objects.filter(pk=disabled.pk).update(enabled=False)
        Parser.objects.filter(pk=unscheduled.pk).update(scheduled_time=None)
        deleted.delete()
        self.sync()

        self.assertFalse(DjangoJob.objects.exists())

    def test_a_one_off_that_has_run_is_not_scheduled_again(self):
        passed = self.now - timedelta(minutes=5)
        parser = make_parser(SCRIPT, scheduled_time=passed)
        Run.objects.create(parser=parser, trigger=Run.Trigger.SCHEDULE, scheduled_for=passed, status="completed")

        self.sync()

        self.assertIsNone(job_time(parser))

    def test_a_one_off_whose_time_passed_without_a_run_stays_due(self):
        passed = self.now - timedelta(minutes=5)
        parser = make_parser(SCRIPT, scheduled_time=passed)

        self.sync()

        self.assertEqual(job_time(parser), passed)

    def test_a_cron_schedule_gets_its_next_time_in_its_timezone(self):
        parser = make_parser(SCRIPT, cron="0 9 * * *", cron_timezone="Asia/Tokyo")

        self.sync()

        self.assertEqual(timezone.localtime(job_time(parser), timezone.get_fixed_timezone(9 * 60)).hour, 9)


@tag("slow")  # real seconds of a real scheduler: not in `make test-fast`
class InProcessSchedulerTestCase(TemporaryMediaMixin, TransactionTestCase):
    """A scheduler thread with a file lock, as `runparseq` runs one; the runs stay enqueued (no worker)."""

    def setUp(self):
        self.lock_dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.lock_dir.cleanup)
        self.addCleanup(dramatiq.get_broker().flush_all)

    def start_keeper(self):
        keeper = ScheduleKeeper(coordinator=FileCoordinator(str(Path(self.lock_dir.name) / "scheduler.lock")))
        stopping = threading.Event()
        thread = threading.Thread(target=keeper.run, args=(stopping,), daemon=True)
        thread.start()

        def stop():
            stopping.set()
            thread.join(timeout=10)

        self.addCleanup(stop)
        return keeper, stop

    def scheduled_runs(self, parser):
        return list(Run.objects.filter(parser=parser).order_by("scheduled_for"))


class InProcessSchedulerTests(InProcessSchedulerTestCase):
    def test_a_parser_created_two_seconds_ahead_runs_once_within_a_second_of_its_time(self):
        keeper, _ = self.start_keeper()
        wait_until(keeper.active.is_set, timeout=10, message="the scheduler to become active")

        due = timezone.now() + timedelta(seconds=2)
        parser = make_parser(SCRIPT, scheduled_time=due)
        run = wait_until(lambda: Run.objects.filter(parser=parser).first(), timeout=5, message="the scheduled run")

        self.assertEqual((run.scheduled_for, run.trigger), (due, "schedule"))
        self.assertLess(abs((run.created_time - due).total_seconds()), 1.0)
        wait_until(lambda: job_time(parser) is None, timeout=2, message="the one-off job to be gone")
        self.assertEqual(Run.objects.filter(parser=parser).count(), 1)

    def test_an_edit_moves_the_next_run_and_disabling_stops_the_runs(self):
        keeper, _ = self.start_keeper()
        wait_until(keeper.active.is_set, timeout=10, message="the scheduler to become active")
        later, every_second = timezone.now() + timedelta(hours=1), timedelta(seconds=1)
        parser = make_parser(SCRIPT, scheduled_time=later, repeat_after=every_second, overlap="allow")
        wait_until(lambda: job_time(parser), timeout=2, message="the parser's job")

        # When the first run is moved from an hour ahead to a second ahead
        parser.scheduled_time = moved = timezone.now() + timedelta(seconds=1)
        parser.save()

        # Then it runs then, and every second after
        wait_until(lambda: Run.objects.filter(parser=parser).count() >= 3, timeout=6, message="three runs")
        dues = [run.scheduled_for for run in self.scheduled_runs(parser)][:3]
        self.assertEqual(dues, [moved + timedelta(seconds=s) for s in range(3)])

        # When it is disabled, no more runs come
        parser.enabled = False
        parser.save()
        wait_until(lambda: job_time(parser) is None, timeout=2, message="the job to be removed")
        count = Run.objects.filter(parser=parser).count()
        threading.Event().wait(2)
        self.assertEqual(Run.objects.filter(parser=parser).count(), count)

    def test_a_second_scheduler_in_the_same_place_stands_by_until_the_first_stops(self):
        first, stop_first = self.start_keeper()
        wait_until(first.active.is_set, timeout=10, message="the first scheduler to become active")
        second, _ = self.start_keeper()
        threading.Event().wait(1.5)
        self.assertFalse(second.active.is_set())

        stop_first()

        wait_until(second.active.is_set, timeout=5, message="the second scheduler to take over")
        self.assertFalse(first.active.is_set())


@override_settings(KEEP_RUNS=None, KEEP_DAYS=None)
class PruneJobTests(InProcessSchedulerTestCase):
    """The active scheduler deletes old runs by the retention rules (tests/core/test_retention.py has the rules)."""

    def old_runs(self, parser, count):
        for age in range(count):
            run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED)
            Run.objects.filter(pk=run.pk).update(created_time=timezone.now() - timedelta(hours=age + 1))

    def prune_job_succeeded(self):
        return DjangoJobExecution.objects.filter(job_id=PRUNE_JOB_ID, status=DjangoJobExecution.SUCCESS).exists()

    @override_settings(PRUNE_INTERVAL=1)
    def test_the_active_scheduler_deletes_old_runs_soon_after_it_starts_and_every_interval(self):
        # Given a parser that keeps one run, with three
        parser = make_parser(SCRIPT, keep_last_runs=1)
        self.old_runs(parser, 3)

        # When a scheduler becomes active
        with mock.patch.object(keeper, "PRUNE_FIRST_DELAY", timedelta(0)):
            schedule_keeper, _ = self.start_keeper()
            wait_until(schedule_keeper.active.is_set, timeout=10, message="the scheduler to become active")

        # Then its cleanup job deletes the two older ones
        self.assertTrue(DjangoJob.objects.filter(id=PRUNE_JOB_ID).exists())
        wait_until(lambda: parser.runs.count() == 1, timeout=5, message="the first cleanup")

        # And, an interval later, the runs that came meanwhile
        self.old_runs(parser, 2)
        wait_until(lambda: parser.runs.count() == 1, timeout=5, message="the next cleanup")
        # And APScheduler records the job as a success
        wait_until(self.prune_job_succeeded, timeout=5, message="the cleanup job to finish")

    def test_the_schedule_sync_leaves_the_cleanup_job_alone(self):
        scheduler = new_scheduler()
        scheduler.start(paused=True)
        self.addCleanup(stop_scheduler, scheduler)
        now = timezone.now()
        keeper.add_prune_job(scheduler=scheduler, now=now)
        make_parser(SCRIPT, scheduled_time=now + timedelta(hours=1))

        sync_all(scheduler=scheduler, now=now)

        job = scheduler.get_job(PRUNE_JOB_ID)
        self.assertEqual((job.func_ref, job.next_run_time), (jobs.PRUNE, now + keeper.PRUNE_FIRST_DELAY))
        self.assertEqual(job.trigger.interval, timedelta(seconds=settings.PRUNE_INTERVAL))

    def test_a_slow_cleanup_does_not_delay_a_parsers_due_run(self):
        # Given a cleanup that takes until the end of the test
        cleanup_started, test_ended = threading.Event(), threading.Event()
        self.addCleanup(test_ended.set)

        def slow_prune_runs(**options):
            cleanup_started.set()
            test_ended.wait(30)
            return retention.PruneReport(dry_run=False)

        with mock.patch.object(retention, "prune_runs", slow_prune_runs):
            with mock.patch.object(keeper, "PRUNE_FIRST_DELAY", timedelta(0)):
                self.start_keeper()
                wait_until(cleanup_started.is_set, timeout=10, message="the cleanup to start")

            # When a parser comes due meanwhile
            due = timezone.now() + timedelta(seconds=1)
            parser = make_parser(SCRIPT, scheduled_time=due)

            # Then it runs on time
            run = wait_until(lambda: parser.runs.first(), timeout=5, message="the parser's run")
            self.assertLess(abs((run.created_time - due).total_seconds()), 1.0)
            test_ended.set()

    def test_the_cleanup_job_logs_what_it_deleted(self):
        parser = make_parser(SCRIPT, name="http_cat", keep_last_runs=1)
        self.old_runs(parser, 3)

        with self.assertLogs("parseq.scheduling.jobs", "INFO") as logs:
            jobs.prune_runs(due_times=[timezone.now()])

        self.assertEqual(
            logs.output, ["INFO:parseq.scheduling.jobs:retention: Deleted 2 runs (and their files): http_cat 2"]
        )
