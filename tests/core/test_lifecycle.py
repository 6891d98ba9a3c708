"""A run's life: each transition leaves one status for another, only from that status, and says so once."""

from datetime import timedelta
from unittest import mock

from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings
from django.utils import timezone

from parseq.core.events import run_finished, runs_enqueued
from parseq.core.lifecycle import LOST_RUN_ERROR, STOPPED_RUN_ERROR, RunQuerySet
from parseq.core.models import Parser, Run
from tests.helpers import TemporaryMediaMixin, make_parser

FILES = [{"name": "a.txt", "size": 1, "content_type": "text/plain"}]


class RunLifecycleTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.parser = make_parser("def parse():\n    return {}\n", timeout=42)
        self.user = get_user_model().objects.create_user("alice")
        self.finished, self.sent = [], []
        run_finished.connect(self.record_finished)
        self.addCleanup(run_finished.disconnect, self.record_finished)
        runs_enqueued.connect(self.record_sent)
        self.addCleanup(runs_enqueued.disconnect, self.record_sent)

    def record_sent(self, sender, run_ids, **kwargs):
        self.sent.extend(run_ids)

    def record_finished(self, sender, run_id, status, **kwargs):
        self.finished.append((run_id, status))

    def run_in(self, status, **fields):
        return Run.objects.create(parser=self.parser, status=status, **fields)

    def test_a_claimed_run_is_running_with_a_deadline_of_its_timeout_plus_the_grace(self):
        run = self.run_in(Run.Status.ENQUEUED)

        claimed = Run.objects.claim(run_id=run.run_id, grace=7)

        run.refresh_from_db()
        self.assertEqual((claimed, run.status), (run, Run.Status.RUNNING))
        self.assertEqual(run.deadline - run.started_time, timedelta(seconds=49))

    def test_a_run_is_claimed_once_however_often_its_message_arrives(self):
        run = self.run_in(Run.Status.ENQUEUED)

        first = Run.objects.claim(run_id=run.run_id, grace=7)
        second = Run.objects.claim(run_id=run.run_id, grace=7)

        self.assertEqual((first, second), (run, None))

    def test_a_completed_run_keeps_its_files_and_log_and_is_announced_once(self):
        run = self.run_in(Run.Status.RUNNING, started_time=timezone.now(), deadline=timezone.now())

        self.assertTrue(Run.objects.complete(run_id=run.run_id, attempt=1, log="hello\n", files=FILES))
        self.assertFalse(Run.objects.complete(run_id=run.run_id, attempt=1, log="again\n", files=[]))

        run.refresh_from_db()
        self.assertEqual((run.status, run.log, run.files, run.deadline), (Run.Status.COMPLETED, "hello\n", FILES, None))
        self.assertIsNotNone(run.finished_time)
        self.assertEqual(self.finished, [(run.run_id, Run.Status.COMPLETED)])

    def test_a_run_cancelled_while_it_runs_keeps_that_end_when_its_worker_finishes_it(self):
        run = self.run_in(Run.Status.RUNNING)

        self.assertTrue(Run.objects.cancel(run_id=run.run_id, user=self.user))
        self.assertFalse(Run.objects.fail(run_id=run.run_id, attempt=1, error="killed"))
        self.assertFalse(Run.objects.complete(run_id=run.run_id, attempt=1, log="", files=FILES))
        Run.objects.keep_log_of_cancelled(run_id=run.run_id, log="printed until then\n")

        run.refresh_from_db()
        self.assertEqual(
            (run.status, run.error, run.cancelled_by), (Run.Status.CANCELLED, "cancelled by alice", self.user)
        )
        self.assertEqual((run.log, run.files), ("printed until then\n", []))
        self.assertEqual(self.finished, [(run.run_id, Run.Status.CANCELLED)])

    def test_only_an_enqueued_run_can_fail_to_be_sent(self):
        enqueued, running = self.run_in(Run.Status.ENQUEUED), self.run_in(Run.Status.RUNNING)

        self.assertTrue(Run.objects.fail_unsent(run_id=enqueued.run_id, error="connection refused"))
        self.assertFalse(Run.objects.fail_unsent(run_id=running.run_id, error="connection refused"))

        enqueued.refresh_from_db()
        running.refresh_from_db()
        self.assertEqual(enqueued.error, "could not enqueue the run: the broker did not accept it (connection refused)")
        self.assertEqual(running.status, Run.Status.RUNNING)

    @override_settings(LOST_RUN_SECONDS=30)
    def test_a_run_whose_lease_lapsed_is_rerun_as_its_next_attempt_and_sent_again(self):
        now = timezone.now()
        lost = self.run_in(
            Run.Status.RUNNING, worker="a:1", started_time=now, heartbeat_time=now - timedelta(seconds=31)
        )
        alive = self.run_in(Run.Status.RUNNING, worker="b:2", heartbeat_time=now - timedelta(seconds=29))
        queued = self.run_in(Run.Status.ENQUEUED)

        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(Run.objects.rerun_or_fail_lost(now=now), (1, 0))

        lost.refresh_from_db()
        self.assertEqual((lost.status, lost.attempt, lost.worker, lost.heartbeat_time), ("enqueued", 2, "", None))
        [first] = lost.attempts
        self.assertEqual((first["attempt"], first["worker"], first["ended"]), (1, "a:1", now.isoformat()))
        self.assertEqual(self.sent, [lost.run_id])
        self.assertEqual(Run.objects.get(pk=alive.pk).status, Run.Status.RUNNING)
        self.assertEqual(Run.objects.get(pk=queued.pk).status, Run.Status.ENQUEUED)
        self.assertEqual(self.finished, [])  # not an end: the run goes on

    @override_settings(LOST_RUN_SECONDS=30)
    def test_a_lost_run_on_its_last_attempt_ends_in_error_with_its_attempts(self):
        Parser.objects.filter(pk=self.parser.pk).update(max_attempts=2)
        now = timezone.now()
        lost = self.run_in(Run.Status.RUNNING, attempt=2, worker="a:1", heartbeat_time=now - timedelta(seconds=31))

        self.assertEqual(Run.objects.rerun_or_fail_lost(now=now), (0, 1))

        lost.refresh_from_db()
        self.assertEqual((lost.status, lost.error), (Run.Status.ERROR, LOST_RUN_ERROR))
        self.assertEqual([attempt["attempt"] for attempt in lost.attempts], [2])
        self.assertEqual(self.finished, [(lost.run_id, Run.Status.ERROR)])

    def test_a_run_handed_back_by_its_stopping_worker_is_rerun_as_its_next_attempt_and_sent_again(self):
        now = timezone.now()
        run = self.run_in(Run.Status.RUNNING, worker="a:1", started_time=now, heartbeat_time=now)

        with self.captureOnCommitCallbacks(execute=True):
            became = Run.objects.hand_back(run_id=run.pk, attempt=1, why="its worker was stopped")

        run.refresh_from_db()
        self.assertEqual(became, Run.Status.ENQUEUED)
        self.assertEqual((run.status, run.attempt, run.worker), (Run.Status.ENQUEUED, 2, ""))
        [first] = run.attempts
        self.assertEqual((first["attempt"], first["worker"], first["why"]), (1, "a:1", "its worker was stopped"))
        self.assertEqual(self.sent, [run.run_id])
        self.assertEqual(self.finished, [])

    def test_a_run_handed_back_on_its_last_attempt_ends_in_error_saying_its_worker_stopped(self):
        Parser.objects.filter(pk=self.parser.pk).update(max_attempts=1)
        run = self.run_in(Run.Status.RUNNING, worker="a:1")

        became = Run.objects.hand_back(run_id=run.pk, attempt=1, why="its worker was stopped")

        run.refresh_from_db()
        self.assertEqual(became, Run.Status.ERROR)
        self.assertEqual((run.status, run.error), (Run.Status.ERROR, STOPPED_RUN_ERROR))
        self.assertEqual([attempt["why"] for attempt in run.attempts], ["its worker was stopped"])
        self.assertEqual(self.finished, [(run.run_id, Run.Status.ERROR)])
        self.assertEqual(self.sent, [])

    def test_only_the_attempt_a_run_is_on_can_be_handed_back(self):
        cancelled = self.run_in(Run.Status.CANCELLED)
        replaced = self.run_in(Run.Status.RUNNING, attempt=2)

        self.assertIsNone(Run.objects.hand_back(run_id=cancelled.pk, attempt=1, why="stopped"))
        self.assertIsNone(Run.objects.hand_back(run_id=replaced.pk, attempt=1, why="stopped"))

        self.assertEqual(Run.objects.get(pk=cancelled.pk).status, Run.Status.CANCELLED)
        self.assertEqual(Run.objects.get(pk=replaced.pk).attempt, 2)
        self.assertEqual((self.sent, self.finished), ([], []))

    @override_settings(LOST_RUN_SECONDS=30)
    def test_the_outcome_of_an_attempt_that_was_replaced_is_refused(self):
        now = timezone.now()
        run = self.run_in(Run.Status.RUNNING, worker="a:1", heartbeat_time=now - timedelta(seconds=31))
        Run.objects.rerun_or_fail_lost(now=now)
        Run.objects.claim(run_id=run.run_id, grace=7, worker="b:2")

        self.assertFalse(Run.objects.is_current(run_id=run.run_id, attempt=1))
        self.assertFalse(Run.objects.complete(run_id=run.run_id, attempt=1, log="late\n", files=FILES))
        self.assertTrue(Run.objects.complete(run_id=run.run_id, attempt=2, log="done\n", files=FILES))
        run.refresh_from_db()
        self.assertEqual((run.status, run.log, run.attempt), (Run.Status.COMPLETED, "done\n", 2))

    @override_settings(LOST_RUN_SECONDS=30)
    def test_leases_are_judged_on_the_databases_clock_not_the_reapers(self):
        run = self.run_in(Run.Status.RUNNING, worker="a:1")
        Run.objects.renew(run_ids=[run.pk], worker="a:1")

        # A reaper whose host clock runs an hour ahead still sees a fresh lease
        self.assertEqual(Run.objects.rerun_or_fail_lost(now=timezone.now() + timedelta(hours=1)), (0, 0))

    @override_settings(LOST_RUN_SECONDS=30)
    def test_a_heartbeat_that_comes_while_the_reaper_decides_wins(self):
        run = self.run_in(Run.Status.RUNNING, worker="a:1", heartbeat_time=timezone.now() - timedelta(seconds=31))
        real_rerun = RunQuerySet._rerun

        def renewed_meanwhile(queryset, **kwargs):
            Run.objects.renew(run_ids=[run.pk], worker="a:1")
            return real_rerun(queryset, **kwargs)

        with mock.patch.object(RunQuerySet, "_rerun", renewed_meanwhile):
            self.assertEqual(Run.objects.rerun_or_fail_lost(), (0, 0))

        self.assertEqual(Run.objects.get(pk=run.pk).attempt, 1)

    @override_settings(RECORD_RETRY_SECONDS=600)
    def test_a_run_far_past_its_deadline_is_not_renewed_so_a_stuck_worker_lets_it_go(self):
        long_ago = timezone.now() - timedelta(seconds=700)
        stuck = self.run_in(Run.Status.RUNNING, worker="a:1", deadline=long_ago, heartbeat_time=long_ago)

        self.assertEqual(Run.objects.renew(run_ids=[stuck.pk], worker="a:1"), 0)

    def test_a_heartbeat_renews_only_the_workers_own_running_runs(self):
        old = timezone.now() - timedelta(seconds=20)
        mine = self.run_in(Run.Status.RUNNING, worker="a:1", heartbeat_time=old)
        theirs = self.run_in(Run.Status.RUNNING, worker="b:2", heartbeat_time=old)
        ended = self.run_in(Run.Status.COMPLETED, worker="a:1", heartbeat_time=old)

        renewed = Run.objects.renew(run_ids=[mine.pk, theirs.pk, ended.pk], worker="a:1")

        self.assertEqual(renewed, 1)
        self.assertGreater(Run.objects.get(pk=mine.pk).heartbeat_time, old)
        self.assertEqual(Run.objects.get(pk=theirs.pk).heartbeat_time, old)
        self.assertEqual(Run.objects.get(pk=ended.pk).heartbeat_time, old)

    def test_a_finished_or_skipped_run_never_changes_again(self):
        ended = [self.run_in(status) for status in (Run.Status.COMPLETED, Run.Status.ERROR, Run.Status.SKIPPED)]

        for run in ended:
            self.assertIsNone(Run.objects.claim(run_id=run.run_id, grace=7))
            self.assertFalse(Run.objects.cancel(run_id=run.run_id, user=self.user))
            self.assertFalse(Run.objects.fail(run_id=run.run_id, attempt=1, error="late"))
            self.assertFalse(Run.objects.fail_unsent(run_id=run.run_id, error="late"))

        self.assertEqual([Run.objects.get(pk=run.pk).status for run in ended], [run.status for run in ended])
        self.assertEqual(self.finished, [])
