"""The reaper acts on lapsed leases only after reaching the database promptly for a whole PARSEQ_LOST_RUN_SECONDS,
and a worker keeps renewing its runs' leases until its last run has ended, shutting down included.
"""

import threading
from unittest import mock

from django.db import OperationalError
from django.test import SimpleTestCase, override_settings

from parseq.core import housekeeping
from parseq.core.middleware import LostRunReaper, Reaper
from tests.helpers import ManualClock


@override_settings(LOST_RUN_SECONDS=30, HEARTBEAT_SECONDS=5, REAPER_INTERVAL=10)
class ReaperTests(SimpleTestCase):
    def setUp(self):
        self.clock = ManualClock()
        self.reaper = Reaper(clock=self.clock)
        self.reruns = 0
        self.resend_takes = 0.0
        patches = {
            "rerun_or_fail_lost_runs": self.count_rerun,
            "resend_waiting_runs": lambda: self.clock.advance(self.resend_takes),
        }
        for name, replacement in patches.items():
            patch = mock.patch.object(housekeeping, name, replacement)
            patch.start()
            self.addCleanup(patch.stop)
        sweep = mock.patch("parseq.core.execution.remove_stale_temporary_directories")
        sweep.start()
        self.addCleanup(sweep.stop)

    def count_rerun(self):
        self.reruns += 1

    def checks(self, count):
        for _ in range(count):
            self.reaper.check()
            self.clock.advance(10)

    def test_it_reruns_only_after_reaching_the_database_for_the_whole_lost_run_time(self):
        self.checks(3)  # 0, 10 and 20 s: not yet
        self.assertEqual(self.reruns, 0)

        self.checks(1)  # 30 s
        self.assertEqual(self.reruns, 1)

    def test_after_an_outage_it_waits_the_whole_time_again(self):
        self.checks(4)
        self.reaper.failed()  # a check that could not reach the database

        self.checks(3)
        self.assertEqual(self.reruns, 1)  # only the one from before the outage
        self.checks(1)
        self.assertEqual(self.reruns, 2)

    def test_a_database_that_answers_late_counts_as_an_outage(self):
        self.checks(4)
        self.resend_takes = 6  # a lock held the runs' table: heartbeats may have waited as long
        self.checks(1)
        self.resend_takes = 0

        self.checks(3)
        self.assertEqual(self.reruns, 1)

    def test_a_check_that_comes_late_counts_as_an_outage(self):
        self.checks(4)
        self.clock.advance(60)  # this process was paused (or the machine suspended)

        self.checks(3)
        self.assertEqual(self.reruns, 1)


class HeartbeatShutdownTests(SimpleTestCase):
    def test_the_heartbeat_outlives_the_reaper_until_the_runs_in_progress_have_ended(self):
        renewals = threading.Semaphore(0)
        middleware = LostRunReaper()
        with (
            override_settings(HEARTBEAT_SECONDS=1, REAPER_INTERVAL=1, LOST_RUN_SECONDS=3),
            mock.patch("parseq.core.execution.renew_leases", side_effect=lambda: renewals.release()),
            mock.patch.object(Reaper, "check"),
        ):
            middleware.after_worker_boot(broker=None, worker=None)
            self.assertTrue(renewals.acquire(timeout=5))

            # When dramatiq starts shutting down, it waits for the runs in progress
            middleware.before_worker_shutdown(broker=None, worker=None)
            self.assertTrue(middleware.stopping["parseq-reaper"].is_set())

            # Then their leases are still renewed meanwhile
            self.assertTrue(renewals.acquire(timeout=5))
            self.assertTrue(renewals.acquire(timeout=5))

            # And only once they have ended does the heartbeat stop
            middleware.after_worker_shutdown(broker=None, worker=None)
        self.assertTrue(middleware.stopping["parseq-heartbeat"].is_set())


class OutageLoggingTests(SimpleTestCase):
    def test_an_outage_is_logged_once_and_its_end_with_the_count(self):
        from parseq.core.middleware import every

        outcomes = iter([OperationalError("down"), OperationalError("down"), OperationalError("down"), None])
        stopping = threading.Event()

        def action():
            outcome = next(outcomes, None)
            if outcome:
                raise outcome
            stopping.set()

        with self.assertLogs("parseq.core.middleware") as logs:
            every(0, action, stopping=stopping, what="check the runs")

        self.assertEqual(len(logs.records), 2)
        self.assertIn("could not check the runs", logs.records[0].getMessage())
        self.assertEqual(logs.records[1].getMessage(), "could check the runs again after 3 failed attempt(s)")
