"""A finished run's outcome is kept: retried through a database outage, and storage keeps no file without its run.

The outcome is handed to the worker's recording step as the sandbox returns it; the database
outage is a query that fails as a lost connection does (the real outage, a stopped PostgreSQL,
is tests/integration/test_faults.py).
"""

import os
import tempfile
from datetime import timedelta
from unittest import mock

from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import OperationalError
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

import runner
from parseq.core import execution
from parseq.core.lifecycle import LOST_RUN_ERROR, RunQuerySet
from parseq.core.models import Parser, Run, result_path
from tests.helpers import ManualClock, TemporaryMediaMixin, make_parser

LOGGER = "parseq.core.execution"
LOST_CONNECTION = OperationalError("server closed the connection unexpectedly")


class RecordingTestCase(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.run = Run.objects.create(
            parser=make_parser("def parse():\n    return {}\n"), status=Run.Status.RUNNING, started_time=timezone.now()
        )
        self.out_dir = tempfile.mkdtemp()
        # The backoff's waits turn a clock of the test's own instead of passing.
        self.waits, clock = [], ManualClock()
        for name, replacement in (
            ("_clock", clock),
            ("_sleep", lambda seconds: (self.waits.append(seconds), clock.advance(seconds))),
        ):
            patch = mock.patch.object(execution, name, replacement)
            patch.start()
            self.addCleanup(patch.stop)

    def outcome(self, out_dir=None, **files):
        """A completed outcome with `files`, written where the sandbox would have left them."""
        out_dir = out_dir or self.out_dir
        for name, content in files.items():
            with open(os.path.join(out_dir, name), "wb") as file:
                file.write(content)
        entries = [runner.ResultFile(name=name, size=len(content)) for name, content in files.items()]
        outcome = runner.Outcome(runner.COMPLETED, log="done\n", files=entries)
        outcome.out_dir = out_dir
        return outcome

    def keep(self, outcome):
        return execution._keep_outcome(run_id=self.run.run_id, attempt=1, outcome=outcome, out_dir=self.out_dir)

    def stored(self, name):
        return default_storage.exists(result_path(run_id=self.run.run_id, filename=name))


class DatabaseOutageTests(RecordingTestCase):
    def test_an_outcome_is_recorded_once_the_database_answers_again(self):
        # Given a database that loses the first two attempts to record the outcome
        real_complete = RunQuerySet.complete
        attempts = [LOST_CONNECTION, LOST_CONNECTION, None]

        def flaky_complete(queryset, **kwargs):
            failure = attempts.pop(0)
            if failure:
                raise failure
            return real_complete(queryset, **kwargs)

        # When the worker records a completed run
        with mock.patch.object(RunQuerySet, "complete", flaky_complete):
            completed = self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        # Then it waited and retried, and the run completed with its file, stored once
        self.run.refresh_from_db()
        self.assertTrue(completed)
        self.assertEqual((self.run.status, [entry["name"] for entry in self.run.files]), ("completed", ["a.csv"]))
        self.assertEqual(self.waits, [1, 2])
        self.assertTrue(self.stored("a.csv"))
        # And the run counts the two failed tries, for /metrics
        self.assertEqual(self.run.recording_retries, 2)

    @override_settings(RECORD_RETRY_SECONDS=20)
    def test_a_worker_gives_up_after_the_retry_time_and_keeps_the_files_its_last_try_may_have_named(self):
        unreachable = mock.patch.object(RunQuerySet, "complete", side_effect=LOST_CONNECTION)
        with unreachable, self.assertRaises(OperationalError):
            self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        self.assertEqual(self.waits, [1, 2, 4, 8])  # 15 s waited; the next wait would pass the 20 s
        self.assertTrue(self.stored("a.csv"))  # the last try may have committed before the database went away
        self.run.refresh_from_db()
        self.assertEqual(self.run.status, Run.Status.RUNNING)  # for the reaper: the worker could not say more

    def test_an_attempt_that_committed_before_its_answer_was_lost_keeps_its_files(self):
        # Given a database that commits the outcome, then loses the connection before answering
        real_complete = RunQuerySet.complete
        attempts = []

        def committed_then_lost(queryset, **kwargs):
            attempts.append(real_complete(queryset, **kwargs))
            if len(attempts) == 1:
                raise LOST_CONNECTION
            return attempts[-1]

        # When the worker retries
        with mock.patch.object(RunQuerySet, "complete", committed_then_lost):
            completed = self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        # Then the retry finds the run already completed with its files, and keeps them
        self.run.refresh_from_db()
        self.assertEqual(attempts, [True, False])
        self.assertTrue(completed)
        self.assertEqual((self.run.status, [entry["name"] for entry in self.run.files]), ("completed", ["a.csv"]))
        self.assertTrue(self.stored("a.csv"))

    def test_a_failure_is_retried_too(self):
        real_fail = RunQuerySet.fail
        attempts = [LOST_CONNECTION, None]

        def flaky_fail(queryset, **kwargs):
            if attempts.pop(0):
                raise LOST_CONNECTION
            return real_fail(queryset, **kwargs)

        with mock.patch.object(RunQuerySet, "fail", flaky_fail):
            self.keep(runner.Outcome(runner.SCRIPT_ERROR, log="", error="ValueError: boom"))

        self.run.refresh_from_db()
        self.assertEqual((self.run.status, self.run.error), (Run.Status.ERROR, "ValueError: boom"))

    def test_a_run_the_reaper_gave_up_on_still_gets_its_real_outcome(self):
        # Given a run ended as "worker lost" (no attempt left) while its worker could not reach the database
        Parser.objects.filter(pk=self.run.parser_id).update(max_attempts=1)
        Run.objects.filter(pk=self.run.pk).update(heartbeat_time=timezone.now() - timedelta(minutes=5))
        self.assertEqual(Run.objects.rerun_or_fail_lost(), (0, 1))

        # When the worker records what the script returned
        completed = self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        # Then the result wins over the guess
        self.run.refresh_from_db()
        self.assertTrue(completed)
        self.assertEqual((self.run.status, self.run.error), (Run.Status.COMPLETED, ""))
        self.assertNotEqual(LOST_RUN_ERROR, self.run.error)
        self.assertTrue(self.stored("a.csv"))


class NoOrphanFileTests(RecordingTestCase):
    def test_an_outcome_the_database_refuses_fails_the_run_and_keeps_no_file(self):
        refused = ValueError("A string literal cannot contain NUL (0x00) characters.")
        real_complete, attempts = RunQuerySet.complete, []

        def refuse_once(queryset, **kwargs):
            attempts.append(kwargs)
            if len(attempts) == 1:
                raise refused
            return real_complete(queryset, **kwargs)

        with mock.patch.object(RunQuerySet, "complete", refuse_once), self.assertLogs(LOGGER, "ERROR"):
            completed = self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        self.run.refresh_from_db()
        self.assertFalse(completed)
        self.assertEqual(self.run.status, Run.Status.ERROR)
        self.assertIn("could not record the outcome: ValueError: A string literal cannot contain NUL", self.run.error)
        self.assertFalse(self.stored("a.csv"))

    def test_an_attempt_that_was_replaced_never_touches_the_files_of_the_attempt_that_completed(self):
        # Given attempt 1, cut off after storing its files, replaced meanwhile by attempt 2 which completes first
        real_complete, calls = RunQuerySet.complete, []

        def attempt_two_completes_first(queryset, **kwargs):
            calls.append(kwargs["attempt"])
            if calls == [1]:
                Run.objects.filter(pk=self.run.pk).update(attempt=2)
                second = self.outcome(out_dir=tempfile.mkdtemp(), **{"a.csv": b"second\n"})
                execution._keep_outcome(run_id=self.run.run_id, attempt=2, outcome=second, out_dir=second.out_dir)
            return real_complete(queryset, **kwargs)

        # When attempt 1 records its outcome, and is refused
        with mock.patch.object(RunQuerySet, "complete", attempt_two_completes_first):
            completed = self.keep(self.outcome(**{"a.csv": b"first\n"}))

        # Then attempt 1 keeps nothing, and the run's file is attempt 2's, where the run says it is
        self.run.refresh_from_db()
        self.assertEqual((completed, calls), (False, [1, 2]))
        self.assertEqual((self.run.status, self.run.attempt), (Run.Status.COMPLETED, 2))
        with default_storage.open(self.run.stored_path("a.csv")) as stored:
            self.assertEqual(stored.read(), b"second\n")
        self.assertFalse(self.stored("a.csv"))  # attempt 1's own path, removed

    def test_a_store_that_fails_part_way_removes_what_it_wrote(self):
        real_save = default_storage.save
        saved = []

        def save_then_fill_the_disk(name, content, **kwargs):
            if saved:
                # The second file gets halfway, as on a full disk.
                with open(default_storage.path(name), "wb") as partial:
                    partial.write(b"half")
                raise OSError(28, "No space left on device")
            saved.append(name)
            return real_save(name, content, **kwargs)

        with mock.patch.object(default_storage, "save", save_then_fill_the_disk), self.assertLogs(LOGGER, "ERROR"):
            completed = self.keep(self.outcome(**{"a.csv": b"1,2\n", "b.csv": b"3,4\n"}))

        self.run.refresh_from_db()
        self.assertFalse(completed)
        self.assertEqual(self.run.status, Run.Status.ERROR)
        self.assertIn("could not store the result files: [Errno 28] No space left on device", self.run.error)
        self.assertFalse(self.stored("a.csv"))
        self.assertFalse(self.stored("b.csv"))

    def test_the_files_of_a_run_cancelled_meanwhile_are_removed(self):
        Run.objects.cancel(run_id=self.run.run_id, user=get_user_model().objects.create_user("alice"))

        completed = self.keep(self.outcome(**{"a.csv": b"1,2\n"}))

        self.run.refresh_from_db()
        self.assertFalse(completed)
        self.assertEqual((self.run.status, self.run.files), (Run.Status.CANCELLED, []))
        self.assertFalse(self.stored("a.csv"))
