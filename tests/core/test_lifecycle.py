"""A run's life: each transition leaves one status for another, only from that status, and says so once."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import TestCase
from django.utils import timezone

from parseq.core.events import run_finished
from parseq.core.lifecycle import LOST_RUN_ERROR
from parseq.core.models import Run
from tests.helpers import TemporaryMediaMixin, make_parser

FILES = [{"name": "a.txt", "size": 1, "content_type": "text/plain"}]


class RunLifecycleTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.parser = make_parser("def parse():\n    return {}\n", timeout=42)
        self.user = get_user_model().objects.create_user("alice")
        self.finished = []
        run_finished.connect(self.record_finished)
        self.addCleanup(run_finished.disconnect, self.record_finished)

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

        self.assertTrue(Run.objects.complete(run_id=run.run_id, log="hello\n", files=FILES))
        self.assertFalse(Run.objects.complete(run_id=run.run_id, log="again\n", files=[]))

        run.refresh_from_db()
        self.assertEqual((run.status, run.log, run.files, run.deadline), (Run.Status.COMPLETED, "hello\n", FILES, None))
        self.assertIsNotNone(run.finished_time)
        self.assertEqual(self.finished, [(run.run_id, Run.Status.COMPLETED)])

    def test_a_run_cancelled_while_it_runs_keeps_that_end_when_its_worker_finishes_it(self):
        run = self.run_in(Run.Status.RUNNING)

        self.assertTrue(Run.objects.cancel(run_id=run.run_id, user=self.user))
        self.assertFalse(Run.objects.fail(run_id=run.run_id, error="killed"))
        self.assertFalse(Run.objects.complete(run_id=run.run_id, log="", files=FILES))
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

    def test_only_running_runs_past_their_deadline_are_lost(self):
        now = timezone.now()
        lost = self.run_in(Run.Status.RUNNING, deadline=now - timedelta(seconds=1))
        alive = self.run_in(Run.Status.RUNNING, deadline=now + timedelta(seconds=60))
        queued = self.run_in(Run.Status.ENQUEUED)

        self.assertEqual(Run.objects.fail_lost(now=now), 1)

        self.assertEqual(Run.objects.get(pk=lost.pk).error, LOST_RUN_ERROR)
        self.assertEqual(Run.objects.get(pk=alive.pk).status, Run.Status.RUNNING)
        self.assertEqual(Run.objects.get(pk=queued.pk).status, Run.Status.ENQUEUED)
        self.assertEqual(self.finished, [(lost.run_id, Run.Status.ERROR)])

    def test_a_finished_or_skipped_run_never_changes_again(self):
        ended = [self.run_in(status) for status in (Run.Status.COMPLETED, Run.Status.ERROR, Run.Status.SKIPPED)]

        for run in ended:
            self.assertIsNone(Run.objects.claim(run_id=run.run_id, grace=7))
            self.assertFalse(Run.objects.cancel(run_id=run.run_id, user=self.user))
            self.assertFalse(Run.objects.fail(run_id=run.run_id, error="late"))
            self.assertFalse(Run.objects.fail_unsent(run_id=run.run_id, error="late"))

        self.assertEqual([Run.objects.get(pk=run.pk).status for run in ended], [run.status for run in ended])
        self.assertEqual(self.finished, [])
