"""Cancelling: a queued run never starts, a running one has its sandbox killed, and both say who stopped them."""

import hashlib
import os
import threading
import time

from django.contrib.auth import get_user_model
from django.test import TransactionTestCase, tag

from parseq.core import execution, services
from parseq.core.cancellation import CancelWatcher
from parseq.core.events import run_finished
from parseq.core.models import AuditEntry, Run
from tests.helpers import TemporaryMediaMixin, live_processes_with, make_parser, wait_until

HANGING_SCRIPT = """
    import time

    def parse():
        print("started", flush=True)
        time.sleep(120)
        return {"never.txt": b"never"}
"""


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
class CancelTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.user = get_user_model().objects.create_user("alice", is_staff=True)
        self.finished = []
        run_finished.connect(self.record_finished)
        self.addCleanup(run_finished.disconnect, self.record_finished)

    def record_finished(self, sender, run_id, status, **kwargs):
        self.finished.append((run_id, status))

    def start_a_hanging_run(self, kind):
        """A script that hangs, running in a real sandbox in a worker thread: (parser, run, thread, marker).

        The script's name is on the sandbox's command line: the marker tells its processes apart.
        """
        marker = f"parseq-{kind}-{os.getpid()}-{time.monotonic_ns()}"
        parser = make_parser(HANGING_SCRIPT, filename=f"{marker}.py", timeout=300)
        run = Run.objects.create(parser=parser)
        worker = threading.Thread(target=execution.execute_run, kwargs={"run_id": run.run_id})
        worker.start()
        self.addCleanup(worker.join, 10)
        wait_until(lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING, message="the run to start")
        wait_until(lambda: live_processes_with(marker), message="the sandbox to start")
        return parser, run, worker, marker

    def test_a_running_run_has_its_sandbox_killed_within_two_seconds_and_ends_cancelled(self):
        # Given a script that hangs, running in a real sandbox in a worker thread
        _, run, worker, marker = self.start_a_hanging_run("cancel")

        # When a user cancels it
        cancelled_at = time.monotonic()
        self.assertTrue(services.cancel_run(run=run, user=self.user, source=AuditEntry.Source.ADMIN))
        worker.join(timeout=5)

        # Then the worker is done with it and its sandbox is gone within 2 s
        self.assertFalse(worker.is_alive())
        wait_until(lambda: not live_processes_with(marker), timeout=2, message="the sandbox to be killed")
        self.assertLess(time.monotonic() - cancelled_at, 2.0)
        # And the run says who cancelled it, keeps what it printed, and has no files
        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.CANCELLED)
        self.assertEqual(run.cancelled_by, self.user)
        self.assertEqual(run.error, "cancelled by alice")
        self.assertIn("started", run.log)
        self.assertEqual(run.files, [])
        self.assertIsNotNone(run.finished_time)
        self.assertEqual(self.finished, [(run.run_id, Run.Status.CANCELLED)])

    def test_deleting_a_parser_while_its_run_is_in_the_sandbox_kills_the_sandbox_and_leaves_no_file(self):
        # Given a run of a parser in a real sandbox, as in the test above
        parser, run, worker, marker = self.start_a_hanging_run("delete")

        script = parser.script.name

        # When a user deletes the parser
        deleted_at = time.monotonic()
        services.delete_parser(parser=parser, user=self.user, source=AuditEntry.Source.ADMIN)

        # Then the sandbox is gone within 2 s, the worker is done, and storage keeps nothing of the parser
        wait_until(lambda: not live_processes_with(marker), timeout=2, message="the sandbox to be killed")
        self.assertLess(time.monotonic() - deleted_at, 2.0)
        worker.join(timeout=5)
        self.assertFalse(worker.is_alive())
        self.assertFalse(Run.objects.filter(pk=run.pk).exists())
        self.assertFalse(os.path.exists(os.path.join(self.media_dir, script)))
        self.assertFalse(os.path.exists(os.path.join(self.media_dir, str(run.run_id))))

    def test_a_queued_run_that_is_cancelled_never_starts(self):
        parser = make_parser("def parse():\n    return {'a.txt': b'a'}\n")
        run = Run.objects.create(parser=parser)

        self.assertTrue(services.cancel_run(run=run, user=self.user, source=AuditEntry.Source.ADMIN))
        execution.execute_run(run_id=run.run_id)  # the message arrives afterwards

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.CANCELLED)
        self.assertIsNone(run.started_time)

    def test_a_run_that_has_ended_cannot_be_cancelled(self):
        parser = make_parser("def parse():\n    return {'a.txt': b'a'}\n")
        run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED)

        self.assertFalse(services.cancel_run(run=run, user=self.user, source=AuditEntry.Source.ADMIN))

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.COMPLETED)
        self.assertIsNone(run.cancelled_by)
        self.assertEqual(self.finished, [])

    def test_a_run_records_the_hash_of_the_script_it_ran_and_the_settings_it_went_by(self):
        source = "def parse():\n    return {'a.txt': b'a'}\n"
        parser = make_parser(source, timeout=42, environment={"API_KEY": "secret-value"}, extra_egress_ports=[8080])
        run = Run.objects.create(parser=parser)

        execution.execute_run(run_id=run.run_id)

        run.refresh_from_db()
        self.assertEqual(run.script_sha256, hashlib.sha256(source.encode()).hexdigest())
        self.assertEqual(run.parser_settings["timeout"], 42)
        self.assertEqual(run.parser_settings["extra_egress_ports"], [8080])
        self.assertEqual(run.parser_settings["environment"], ["API_KEY"])
        self.assertNotIn("secret-value", str(run.parser_settings))
        self.assertEqual(run.parser_settings["script"], "demo.py")
        self.assertEqual(run.parser_settings["sandbox"], f"{execution.sandbox_backend()} (warm start)")


class CancelWatcherTests(TemporaryMediaMixin, TransactionTestCase):
    def test_a_watched_run_learns_within_a_second_that_it_was_cancelled_and_others_do_not(self):
        parser = make_parser("def parse():\n    return {'a.txt': b'a'}\n")
        cancelled_run, other = (Run.objects.create(parser=parser, status=Run.Status.RUNNING) for _ in range(2))
        watcher = CancelWatcher(poll_seconds=0.1)
        cancelled, still_running = watcher.watch(cancelled_run.pk), watcher.watch(other.pk)
        self.addCleanup(watcher.forget, cancelled_run.pk)
        self.addCleanup(watcher.forget, other.pk)

        Run.objects.filter(pk=cancelled_run.pk).update(status=Run.Status.CANCELLED)

        self.assertTrue(cancelled.wait(timeout=1))
        self.assertFalse(still_running.is_set())

    def test_the_watcher_thread_ends_once_no_run_is_watched(self):
        parser = make_parser("def parse():\n    return {'a.txt': b'a'}\n")
        run = Run.objects.create(parser=parser, status=Run.Status.RUNNING)
        watcher = CancelWatcher(poll_seconds=0.05)
        watcher.watch(run.pk)
        thread = watcher.thread

        watcher.forget(run.pk)

        thread.join(timeout=2)
        self.assertFalse(thread.is_alive())
        self.assertIsNone(watcher.thread)
