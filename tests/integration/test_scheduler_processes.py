"""Real `manage.py runscheduler` processes on PostgreSQL and RabbitMQ, as in production.

The test process edits parsers through the ORM (its saves NOTIFY the scheduler, as the admin's
and the API's do) and reads the runs the scheduler enqueued; no worker runs, so scheduled runs
stay `enqueued` and the parsers here allow overlapping runs unless a test says otherwise.
"""

import glob
import math
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.test import TransactionTestCase
from django.utils import timezone
from django_apscheduler.models import DjangoJob
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from parseq.core.models import Run
from tests.helpers import (
    TemporaryMediaMixin,
    database_url,
    make_parser,
    rabbitmq_url,
    require,
    requires_postgresql_and_rabbitmq,
    shows_process_logs_on_failure,
    wait_until,
)
from tests.processes import Process

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"
EVERY_SECOND = timedelta(seconds=1)
# libfaketime's thread-safe build: preloaded, it makes a process's clock start at a given time.
LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")), None)


def job_time(parser):
    job = DjangoJob.objects.filter(id=f"parser-{parser.pk}").first()
    return job.next_run_time if job else None


@requires_postgresql_and_rabbitmq
class SchedulerProcessTestCase(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        super().setUp()
        self.var_dir = Path(tempfile.mkdtemp(prefix="parseq-test-scheduler-"))
        self.addCleanup(shutil.rmtree, self.var_dir, ignore_errors=True)
        self.broker = RabbitmqBroker(url=rabbitmq_url())
        self.addCleanup(self.broker.close)
        self.broker.declare_queue("runs", ensure=True)
        self.broker.flush("runs")
        self.addCleanup(self.broker.flush, "runs")  # nothing a worker of a later test would pick up
        self.process_logs = []

    def start_scheduler(self, *, fake_start=None, **variables):
        """A `runscheduler` process; with `fake_start`, its clock starts at that UTC time (libfaketime)."""
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "PARSEQ_BROKER_URL": rabbitmq_url(),
            "PARSEQ_VAR_DIR": str(self.var_dir),
            "DEBUG": "true",
            "LOG_LEVEL": "INFO",
            **variables,
        }
        if fake_start is not None:
            env.update(
                LD_PRELOAD=LIBFAKETIME,
                FAKETIME=fake_start.strftime("@%Y-%m-%d %H:%M:%S"),
                FAKETIME_DONT_FAKE_MONOTONIC="1",
                TZ="UTC",
            )
        log_path = self.var_dir / f"scheduler-{len(self.process_logs) + 1}.log"
        process = Process(
            [sys.executable, "manage.py", "runscheduler"],
            name=log_path.stem,
            log_path=log_path,
            cwd=REPOSITORY,
            env=env,
        )
        self.process_logs.append(log_path)
        self.addCleanup(process.kill)
        return process

    def start_active_scheduler(self, **options):
        process = self.start_scheduler(**options)
        self.wait_for_log(process, "scheduler active", timeout=20)
        return process

    def wait_for_log(self, process, text, *, timeout):
        process.wait_until(lambda: process.logged(text), timeout=timeout, message=f"{text!r} in its log")

    def wait_until_fired_at(self, moment, *, timeout=10):
        """Wait until the active scheduler has fired what was due at `moment`: a one-off parser due then has run.

        Parsers due together fire in one round, and earlier ones in an earlier round: once this one has
        run, so would have any other due by `moment`. A positive signal instead of sleeping past a time.
        """
        fence = make_parser(SCRIPT, name=f"due at {moment.isoformat()}", scheduled_time=moment)
        wait_until(
            lambda: Run.objects.filter(parser=fence).exists(), timeout=timeout, message=f"the run due at {moment}"
        )

    def dues(self, parser, **filters):
        runs = Run.objects.filter(parser=parser, trigger=Run.Trigger.SCHEDULE, **filters)
        return list(runs.order_by("scheduled_for").values_list("scheduled_for", flat=True))


class OnTimeTests(SchedulerProcessTestCase):
    @shows_process_logs_on_failure
    def test_a_parser_due_two_seconds_ahead_runs_once_within_a_second_of_its_time(self):
        # Given an active scheduler
        self.start_active_scheduler()

        # When a parser is created to run once, two seconds from now
        due = timezone.now() + timedelta(seconds=2)
        parser = make_parser(SCRIPT, scheduled_time=due)

        # Then it runs once, within a second of that time, and not again
        run = wait_until(lambda: Run.objects.filter(parser=parser).first(), timeout=6, message="the run")
        self.assertEqual(run.scheduled_for, due)
        self.assertLess(abs((run.created_time - due).total_seconds()), 1.0)
        self.wait_until_fired_at(due + timedelta(seconds=1))
        self.assertEqual(Run.objects.filter(parser=parser).count(), 1)
        self.assertIsNone(job_time(parser))

    @shows_process_logs_on_failure
    def test_an_interval_produces_one_run_per_due_time(self):
        self.start_active_scheduler()
        start = timezone.now() + timedelta(seconds=1)
        parser = make_parser(SCRIPT, scheduled_time=start, repeat_after=EVERY_SECOND, overlap="allow")

        last = start + timedelta(seconds=4)
        wait_until(lambda: self.dues(parser, scheduled_for__gte=last), timeout=10, message="the fifth run")

        self.assertEqual(self.dues(parser, scheduled_for__lte=last), [start + timedelta(seconds=s) for s in range(5)])
        for run in Run.objects.filter(parser=parser):
            self.assertLess((run.created_time - run.scheduled_for).total_seconds(), 1.0)


class LiveEditTests(SchedulerProcessTestCase):
    @shows_process_logs_on_failure
    def test_an_edit_moves_the_next_run_at_once_and_disabling_or_deleting_stops_the_runs(self):
        self.start_active_scheduler()
        parser = make_parser(
            SCRIPT,
            name="moved",
            scheduled_time=timezone.now() + timedelta(hours=1),
            repeat_after=EVERY_SECOND,
            overlap="allow",
        )
        other = make_parser(SCRIPT, name="deleted", scheduled_time=timezone.now() + timedelta(hours=1))
        wait_until(lambda: job_time(parser) and job_time(other), timeout=2, message="both jobs")

        # When the first run is moved from an hour ahead to one second ahead
        parser.scheduled_time = moved = timezone.now() + timedelta(seconds=1)
        parser.save()

        # Then the scheduler follows within two seconds, and the runs start then
        wait_until(lambda: job_time(parser) == moved, timeout=2, message="the job to move")
        wait_until(lambda: len(self.dues(parser)) >= 2, timeout=5, message="two runs")
        self.assertEqual(self.dues(parser)[:2], [moved, moved + EVERY_SECOND])

        # When it is disabled, and the other parser deleted
        parser.enabled = False
        parser.save()
        other.delete()

        # Then both jobs are gone within two seconds and no more runs come
        wait_until(lambda: job_time(parser) is None, timeout=2, message="the disabled parser's job to go")
        wait_until(lambda: not DjangoJob.objects.filter(id=f"parser-{other.pk}").exists(), timeout=2, message="other")
        count = Run.objects.filter(parser=parser).count()
        # (not at its next due time, which the scheduler reaches)
        next_due = moved + EVERY_SECOND * math.ceil((timezone.now() - moved).total_seconds() + 0.2)
        self.wait_until_fired_at(next_due)
        self.assertEqual(Run.objects.filter(parser=parser).count(), count)


class DaylightSavingTests(SchedulerProcessTestCase):
    """The scheduler's clock starts a few seconds before Europe/Berlin changes its clocks (libfaketime)."""

    @require(LIBFAKETIME, "needs libfaketime: apt-get install faketime")
    @shows_process_logs_on_failure
    def test_a_daily_cron_in_berlin_runs_at_local_time_across_both_changes_and_once_on_the_repeated_hour(self):
        # Spring: 03:00 CEST on 2026-03-29 is 01:00 UTC, the very moment summer time starts.
        spring = make_parser(SCRIPT, name="spring", cron="0 3 * * *", cron_timezone="Europe/Berlin")
        scheduler = self.start_active_scheduler(fake_start=datetime(2026, 3, 29, 0, 59, 57, tzinfo=UTC))
        wait_until(lambda: self.dues(spring), timeout=8, message="the spring run")
        self.assertEqual(self.dues(spring), [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)])
        wait_until(lambda: job_time(spring) == datetime(2026, 3, 30, 1, 0, tzinfo=UTC), timeout=2, message="next day")
        scheduler.kill()
        spring.delete()

        # Autumn: 02:30 happens twice on 2026-10-25 (00:30 and 01:30 UTC); a daily job runs at the first only.
        autumn = make_parser(SCRIPT, name="autumn", cron="30 2 * * *", cron_timezone="Europe/Berlin")
        self.start_active_scheduler(fake_start=datetime(2026, 10, 25, 0, 29, 57, tzinfo=UTC))
        wait_until(lambda: self.dues(autumn), timeout=8, message="the autumn run")
        self.assertEqual(self.dues(autumn), [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)])
        first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
        wait_until(lambda: job_time(autumn) not in (None, first), timeout=2, message="the next autumn run")
        self.assertEqual(job_time(autumn), datetime(2026, 10, 26, 1, 30, tzinfo=UTC))


class StandbyTests(SchedulerProcessTestCase):
    @shows_process_logs_on_failure
    def test_a_second_scheduler_stands_by_and_takes_over_when_the_first_is_killed_with_no_run_twice(self):
        # Given an active scheduler, a parser due every second, and a second scheduler
        first = self.start_active_scheduler()
        parser = make_parser(
            SCRIPT, scheduled_time=timezone.now() + EVERY_SECOND, repeat_after=EVERY_SECOND, overlap="allow"
        )
        second = self.start_scheduler()
        self.wait_for_log(second, "standing by", timeout=20)
        wait_until(lambda: len(self.dues(parser)) >= 3, timeout=8, message="three runs")

        # Then the second stays idle
        self.assertNotIn("Running job", second.log_path.read_text())

        # When the first is killed outright
        first.kill()
        killed_at = timezone.now()

        # Then the second takes over within ten seconds and the runs go on, one per due time
        self.wait_for_log(second, "scheduler active", timeout=10)
        wait_until(
            lambda: Run.objects.filter(parser=parser, created_time__gt=killed_at).exists(),
            timeout=10,
            message="a run by the second scheduler",
        )
        resumed = Run.objects.filter(parser=parser, created_time__gt=killed_at).earliest("created_time")
        self.assertLess((resumed.created_time - killed_at).total_seconds(), 10)
        wait_until(lambda: len(self.dues(parser, created_time__gt=killed_at)) >= 3, timeout=8, message="3 more runs")
        dues = self.dues(parser)
        self.assertEqual(len(dues), len(set(dues)))
        after = self.dues(parser, created_time__gt=resumed.created_time)
        self.assertEqual(after, [after[0] + EVERY_SECOND * i for i in range(len(after))])


class MisfireTests(SchedulerProcessTestCase):
    @require(LIBFAKETIME, "needs libfaketime: apt-get install faketime")
    @shows_process_logs_on_failure
    def test_runs_missed_while_down_are_coalesced_into_one_and_the_skip_recorded(self):
        scheduler = self.start_active_scheduler()
        parser = make_parser(
            SCRIPT, scheduled_time=timezone.now() + EVERY_SECOND, repeat_after=EVERY_SECOND, overlap="allow"
        )
        wait_until(lambda: self.dues(parser), timeout=5, message="a first run")
        scheduler.stop(grace=15)
        stopped_at = timezone.now()

        # The next scheduler's clock starts 4 to 5 s later (libfaketime), as if it had been down meanwhile
        self.start_active_scheduler(fake_start=stopped_at + timedelta(seconds=5))

        skip = wait_until(
            lambda: Run.objects.filter(parser=parser, status=Run.Status.SKIPPED).first(), timeout=5, message="a skip"
        )
        self.assertIn("while no scheduler was running: coalesced into the run due at", skip.error)
        coalesced = (
            Run.objects.filter(parser=parser, created_time__gt=stopped_at).exclude(pk=skip.pk).earliest("created_time")
        )
        self.assertEqual(coalesced.status, Run.Status.ENQUEUED)
        self.assertGreater(coalesced.scheduled_for, skip.scheduled_for)
        self.assertLess(abs((coalesced.created_time - skip.created_time).total_seconds()), 0.5)

    @shows_process_logs_on_failure
    def test_a_one_off_missed_beyond_the_grace_period_is_skipped_and_never_fires_after_a_restart(self):
        # Given a one-off due 2 s ago, while no scheduler ran
        due = timezone.now() - timedelta(seconds=2)
        parser = make_parser(SCRIPT, scheduled_time=due)

        scheduler = self.start_active_scheduler(PARSEQ_MISFIRE_GRACE="1")
        skip = wait_until(lambda: Run.objects.filter(parser=parser).first(), timeout=5, message="the skip")
        self.assertEqual((skip.status, skip.scheduled_for), (Run.Status.SKIPPED, due))
        self.assertIn("older than the misfire grace period of 1 s", skip.error)

        scheduler.stop(grace=15)
        self.start_active_scheduler()
        # (once the new scheduler's first round is done: what is due at once fires in it)
        self.wait_until_fired_at(timezone.now())
        self.assertEqual(Run.objects.filter(parser=parser).count(), 1)
