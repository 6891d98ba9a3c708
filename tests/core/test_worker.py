"""The worker: runs go from enqueued to a final status through the broker and the sandbox."""

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from unittest import mock

import dramatiq
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.test import Client, TransactionTestCase, override_settings, tag
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import runner
from parseq.core import execution, housekeeping, services
from parseq.core.models import Run
from parseq.core.tasks import execute_run
from runner import leftovers
from tests.helpers import TemporaryMediaMixin, in_process_worker, make_parser, wait_until

WORKING_SCRIPT = """
    def parse():
        print("fetched 2 rows")
        return {"rows.csv": b"a,b\\n1,2\\n", "raw.bin": bytes(range(256))}
"""
FAILING_SCRIPT = """
    def parse():
        print("about to fail")
        raise LookupError("no table on the page")
"""


def finished(run):
    def check():
        run.refresh_from_db()
        return run.is_finished

    return check


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
class InMemoryBrokerTests(TemporaryMediaMixin, TransactionTestCase):
    def test_the_values_of_a_parsers_variables_are_masked_in_the_stored_error_and_log(self):
        # Given a script whose error and output carry a variable's value, as is and in a URL (found by an attacker)
        parser = make_parser(
            """
            import os
            from urllib.parse import quote

            def parse():
                key = os.environ["API_KEY"]
                print("calling with", key, "and", quote(key, safe=""))
                raise RuntimeError("403 Forbidden for url: http://example.com/data?apikey=" + quote(key, safe=""))
            """,
            environment={"API_KEY": "sk-LEAKY/VALUE 999", "REGION": "ru"},
        )

        with in_process_worker():
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(finished(run), message="the run to finish")

        # Then readers of the run see the mask instead (short values such as "ru" are words, not secrets)
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertIn("apikey=********", run.error)
        self.assertEqual(run.log, "calling with ******** and ********\n")
        self.assertNotIn("LEAKY", run.error + run.log)

    def test_what_a_running_script_prints_reaches_its_row_and_the_api_while_it_still_runs(self):
        # Given a script that prints a line every half second for a few seconds
        parser = make_parser(
            """
            import time

            def parse():
                for n in range(1, 9):
                    print(f"line {n}", flush=True)
                    time.sleep(0.5)
                return {}
            """
        )
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        client = Client()
        client.force_login(admin)

        with in_process_worker():
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)

            # Then its first lines are in its row while it still runs, and the API serves them from an offset
            wait_until(lambda: "line 2\n" in Run.objects.get(pk=run.pk).log, message="the first lines")
            self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.RUNNING)
            first = client.get(f"/api/runs/{run.run_id}/log")
            self.assertTrue(first.content.startswith(b"line 1\nline 2\n"))
            later = client.get(f"/api/runs/{run.run_id}/log?offset={first['X-Log-Size']}")
            self.assertFalse(later.content.startswith(b"line 1"))
            wait_until(finished(run), message="the run to finish")

        # And the final log is the whole of it, once
        self.assertEqual(run.log, "".join(f"line {n}\n" for n in range(1, 9)))

    def test_a_run_through_the_in_memory_broker_completes_with_its_files_in_storage(self):
        parser = make_parser(WORKING_SCRIPT)

        with in_process_worker():
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(finished(run), message="the run to finish")

        self.assertEqual(run.status, Run.Status.COMPLETED, run.error)
        self.assertEqual(run.log, "fetched 2 rows\n")
        self.assertEqual(
            run.files,
            [
                {"name": "rows.csv", "size": 8, "content_type": "text/csv"},
                {"name": "raw.bin", "size": 256, "content_type": "application/octet-stream"},
            ],
        )
        with default_storage.open(f"{run.run_id}/raw.bin", "rb") as stored:
            self.assertEqual(stored.read(), bytes(range(256)))
        self.assertLessEqual(run.created_time, run.started_time)
        self.assertLessEqual(run.started_time, run.finished_time)
        self.assertIsNone(run.deadline)

    def test_a_failing_script_ends_in_error_with_its_traceback_and_log_and_the_worker_goes_on(self):
        failing, working = make_parser(FAILING_SCRIPT, name="failing"), make_parser(WORKING_SCRIPT, name="working")

        with in_process_worker(threads=1):
            failed = services.enqueue_run(parser=failing, trigger=Run.Trigger.MANUAL)
            completed = services.enqueue_run(parser=working, trigger=Run.Trigger.MANUAL)
            wait_until(finished(failed), message="the failing run")
            wait_until(finished(completed), message="the next run")

        self.assertEqual(failed.status, Run.Status.ERROR)
        self.assertIn("LookupError: no table on the page", failed.error)
        self.assertIn('File "demo.py", line 3, in parse', failed.error)
        self.assertEqual(failed.log, "about to fail\n")
        self.assertEqual(failed.files, [])
        self.assertEqual(completed.status, Run.Status.COMPLETED)

    def test_a_timeout_ends_the_run_in_error_naming_the_limit(self):
        parser = make_parser("import time\ndef parse():\n    time.sleep(30)\n", timeout=1)

        with in_process_worker():
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(finished(run), message="the run to time out")

        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertEqual(run.error, "timed out after 1 s")

    def test_runs_left_running_by_the_last_all_in_one_process_run_again_at_once_or_end(self):
        parser = make_parser(WORKING_SCRIPT)
        once = make_parser(WORKING_SCRIPT, name="once", max_attempts=1)
        left = Run.objects.create(
            parser=parser, status=Run.Status.RUNNING, worker="host:1:1", heartbeat_time=timezone.now()
        )
        last_attempt = Run.objects.create(parser=once, status=Run.Status.RUNNING, worker="host:1:1")

        with in_process_worker():
            self.assertEqual(housekeeping.recover_runs_of_the_last_process(), (1, 1))
            wait_until(finished(left), message="the rerun")

        self.assertEqual((left.status, left.attempt), (Run.Status.COMPLETED, 2))
        self.assertEqual(left.attempts[0]["why"], "worker lost: the all-in-one process was restarted")
        last_attempt.refresh_from_db()
        self.assertEqual(last_attempt.status, Run.Status.ERROR)

    def test_runs_left_enqueued_by_a_stopped_in_memory_broker_are_sent_again(self):
        parser = make_parser(WORKING_SCRIPT)
        left_behind = [Run.objects.create(parser=parser) for _ in range(3)]

        with in_process_worker():
            self.assertEqual(housekeeping.resend_enqueued_runs(), 3)
            for run in left_behind:
                wait_until(finished(run), message="a resent run")

        self.assertEqual({run.status for run in left_behind}, {Run.Status.COMPLETED})


class EnqueueTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.broker = dramatiq.get_broker()
        self.broker.flush_all()
        self.parser = make_parser(WORKING_SCRIPT)

    def queued_messages(self):
        return self.broker.queues["runs"].qsize()

    def test_a_run_is_sent_only_when_its_transaction_commits(self):
        with transaction.atomic():
            run = services.enqueue_run(parser=self.parser, trigger=Run.Trigger.MANUAL)
            self.assertEqual(self.queued_messages(), 0)

        self.assertEqual(self.queued_messages(), 1)
        self.assertEqual(run.status, Run.Status.ENQUEUED)

    def test_a_run_whose_transaction_rolls_back_is_never_sent(self):
        with self.assertRaises(RuntimeError), transaction.atomic():
            services.enqueue_run(parser=self.parser, trigger=Run.Trigger.MANUAL)
            raise RuntimeError("rollback")

        self.assertEqual(self.queued_messages(), 0)
        self.assertFalse(Run.objects.exists())

    def test_a_run_the_broker_refuses_ends_in_error_instead_of_waiting_forever(self):
        unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1")
        self.addCleanup(unreachable.close)

        with mock.patch.object(execute_run, "broker", unreachable):
            run = services.enqueue_run(parser=self.parser, trigger=Run.Trigger.MANUAL)

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertIn("could not enqueue the run", run.error)


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
class ExecuteRunTests(TemporaryMediaMixin, TransactionTestCase):
    def test_a_failure_of_the_runner_itself_fails_the_run_saying_so_instead_of_leaving_it_running(self):
        run = Run.objects.create(parser=make_parser(WORKING_SCRIPT))
        broken = mock.patch.object(runner, "run_script", side_effect=OSError("AF_UNIX path too long"))

        with broken, self.assertLogs("parseq.core.execution", "ERROR"):
            self.assertFalse(execution.execute_run(run_id=run.run_id))

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertEqual(run.error, "the worker could not run the sandbox: OSError: AF_UNIX path too long")

    def test_a_script_printing_nul_characters_still_completes_with_its_files(self):
        # PostgreSQL's text cannot hold a NUL: the log keeps a replacement character in its place.
        parser = make_parser("def parse():\n    print('a\\x00b')\n    return {'r.csv': b'1'}\n")
        run = Run.objects.create(parser=parser)

        execution.execute_run(run_id=run.run_id)

        run.refresh_from_db()
        self.assertEqual(
            (run.status, run.log, [entry["name"] for entry in run.files]), ("completed", "a\ufffdb\n", ["r.csv"])
        )
        self.assertEqual(run.worker, execution.worker_name())

    def test_a_duplicate_delivery_of_a_run_does_nothing(self):
        run = Run.objects.create(parser=make_parser(WORKING_SCRIPT))
        execution.execute_run(run_id=run.run_id)
        run.refresh_from_db()
        first_finish = run.finished_time

        self.assertIsNone(execution.execute_run(run_id=run.run_id))

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.COMPLETED)
        self.assertEqual(run.finished_time, first_finish)

    def test_a_stopping_worker_claims_no_run_and_sends_it_back_to_the_queue(self):
        run = Run.objects.create(parser=make_parser(WORKING_SCRIPT))
        execution.drain.begin(seconds=60)
        self.addCleanup(execution.drain.end)

        with mock.patch.object(execute_run, "send") as send:
            self.assertIsNone(execution.execute_run(run_id=run.run_id))

        send.assert_called_once_with(str(run.run_id))
        self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.ENQUEUED)

    def test_a_run_still_going_when_its_workers_drain_time_is_up_has_its_sandbox_stopped_and_is_handed_back(self):
        parser = make_parser("import time\ndef parse():\n    print('working', flush=True)\n    time.sleep(60)\n")
        run = Run.objects.create(parser=parser)
        execution.drain.begin(seconds=2)  # as a worker told to stop, with PARSEQ_DRAIN_SECONDS=2
        self.addCleanup(execution.drain.end)

        with mock.patch.object(execute_run, "send") as send, override_settings(DRAIN_SECONDS=2):
            began = time.monotonic()
            self.assertFalse(execution._execute_claimed(Run.objects.claim(run_id=run.run_id, grace=5, worker="w:1")))

        self.assertLess(time.monotonic() - began, 30)  # stopped, not left to its 60 s
        run.refresh_from_db()
        self.assertEqual((run.status, run.attempt, run.worker), (Run.Status.ENQUEUED, 2, ""))
        self.assertEqual(
            run.attempts[0]["why"], "its worker was stopped and gave the run PARSEQ_DRAIN_SECONDS (2 s) to end"
        )
        send.assert_called_once_with(str(run.run_id))

    def test_a_parsers_own_memory_limit_ends_a_hog_in_error_naming_it(self):
        parser = make_parser("def parse():\n    return {'a': bytes(400 * 1024 * 1024)}\n", memory_limit_mb=128)
        run = Run.objects.create(parser=parser)

        execution.execute_run(run_id=run.run_id)

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertTrue(run.error.startswith("memory limit 128 MiB exceeded"), run.error)

    def test_run_limits_come_from_the_settings_and_the_parser(self):
        parser = make_parser("def parse():\n    return {}\n", timeout=30)

        with self.settings(MEMORY_LIMIT_MB=512, PROCESS_LIMIT=10, RESULT_FILES_LIMIT=5):
            limits = execution.run_limits(parser=parser)

        self.assertEqual(
            (limits.wall_time, limits.cpu_seconds, limits.memory_bytes, limits.processes, limits.result_files),
            (30, 30, 512 * 1024 * 1024, 10, 5),
        )

    def test_a_parsers_variables_reach_its_runs_only(self):
        source = "import os\ndef parse():\n    return {'key.txt': os.environ.get('API_KEY', '-').encode()}\n"
        with_key = make_parser(source, name="with", environment={"API_KEY": "k-123"})
        without = make_parser(source, name="without")
        runs = [Run.objects.create(parser=with_key), Run.objects.create(parser=without)]

        for run in runs:
            execution.execute_run(run_id=run.run_id)

        contents = []
        for run in runs:
            with default_storage.open(f"{run.run_id}/key.txt") as stored:
                contents.append(stored.read())
        self.assertEqual(contents, [b"k-123", b"-"])

    def test_a_message_for_an_unknown_run_is_dropped(self):
        self.assertIsNone(execution.execute_run(run_id=uuid.uuid4()))

    def test_no_database_connection_is_held_while_the_sandbox_runs(self):
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            self.skipTest("Django never closes an in-memory SQLite database; this runs on PostgreSQL in CI")
        run = Run.objects.create(parser=make_parser(WORKING_SCRIPT))
        real_run_script = runner.run_script
        seen = {}

        def spy(*args, **kwargs):
            seen["connection"] = connection.connection
            return real_run_script(*args, **kwargs)

        with mock.patch.object(runner, "run_script", spy):
            execution.execute_run(run_id=run.run_id)

        self.assertIsNone(seen["connection"])
        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.COMPLETED)

    def test_a_script_missing_from_storage_ends_the_run_in_error(self):
        parser = make_parser(WORKING_SCRIPT)
        default_storage.delete(parser.script.name)
        run = Run.objects.create(parser=parser)

        execution.execute_run(run_id=run.run_id)

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertIn("cannot read the script", run.error)


class LostRunTests(TemporaryMediaMixin, TransactionTestCase):
    def test_a_run_claimed_before_leases_and_past_its_deadline_with_no_attempt_left_ends_in_error(self):
        now = timezone.now()
        parser = make_parser(WORKING_SCRIPT, max_attempts=1)
        lost = Run.objects.create(parser=parser, status=Run.Status.RUNNING, started_time=now, deadline=now)
        alive = Run.objects.create(
            parser=parser, status=Run.Status.RUNNING, started_time=now, deadline=now + timedelta(minutes=5)
        )

        self.assertEqual(housekeeping.rerun_or_fail_lost_runs(now=now + timedelta(seconds=1)), (0, 1))

        lost.refresh_from_db()
        alive.refresh_from_db()
        self.assertEqual(lost.status, Run.Status.ERROR)
        self.assertIn("worker lost", lost.error)
        self.assertIsNotNone(lost.finished_time)
        self.assertEqual(alive.status, Run.Status.RUNNING)

    @override_settings(LOST_RUN_SECONDS=3, REAPER_INTERVAL=1, HEARTBEAT_SECONDS=1)
    def test_the_reaper_in_a_worker_ends_a_lost_run_with_no_attempt_left_on_its_own(self):
        now = timezone.now()
        lost = Run.objects.create(
            parser=make_parser(WORKING_SCRIPT, max_attempts=1),
            status=Run.Status.RUNNING,
            started_time=now,
            heartbeat_time=now - timedelta(seconds=60),
            worker="elsewhere:1",
        )

        with in_process_worker():
            wait_until(finished(lost), message="the reaper")

        self.assertIn("worker lost", lost.error)
        self.assertEqual([attempt["worker"] for attempt in lost.attempts], ["elsewhere:1"])

    @tag("slow")  # the rerun runs in a real sandbox
    @override_settings(LOST_RUN_SECONDS=3, REAPER_INTERVAL=1, HEARTBEAT_SECONDS=1)
    def test_the_reaper_in_a_worker_reruns_a_lost_run_which_then_completes_as_its_second_attempt(self):
        now = timezone.now()
        lost = Run.objects.create(
            parser=make_parser(WORKING_SCRIPT),
            status=Run.Status.RUNNING,
            started_time=now,
            heartbeat_time=now - timedelta(seconds=60),
            worker="elsewhere:1",
        )

        with in_process_worker():
            wait_until(finished(lost), timeout=60, message="the rerun")

        self.assertEqual((lost.status, lost.attempt), (Run.Status.COMPLETED, 2))
        self.assertEqual(lost.worker, execution.worker_name())
        [first] = lost.attempts
        self.assertEqual((first["attempt"], first["worker"]), (1, "elsewhere:1"))
        self.assertIn("worker lost: no heartbeat from elsewhere:1", first["why"])


def _exited_pid():
    """The pid of a child that has exited and been reaped: no process has it (until the kernel reuses it)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


class TemporaryDirectorySweepTests(TransactionTestCase):
    def test_directories_left_by_killed_workers_are_removed_once_stale_and_fresh_ones_kept(self):
        tmp = tempfile.mkdtemp(prefix="parseq-test-tmp-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        stale_worker = os.path.join(tmp, execution.WORKER_TEMP_PREFIX + "old")
        stale_run = os.path.join(tmp, runner.WORKDIR_PREFIX + "old")
        fresh_run = os.path.join(tmp, runner.WORKDIR_PREFIX + "new")
        unrelated = os.path.join(tmp, "someone-elses")
        for path in (stale_worker, stale_run, fresh_run, unrelated):
            os.makedirs(os.path.join(path, "inside"))
        long_ago = time.time() - 3 * 24 * 3600
        for path in (stale_worker, stale_run, unrelated):
            os.utime(path, (long_ago, long_ago))

        with mock.patch.object(tempfile, "tempdir", tmp):
            self.assertEqual(execution.remove_stale_temporary_directories(), 2)

        self.assertEqual(sorted(os.listdir(tmp)), sorted([os.path.basename(fresh_run), "someone-elses"]))

    def test_the_directory_of_a_worker_process_that_is_gone_is_removed_at_once(self):
        tmp = tempfile.mkdtemp(prefix="parseq-test-tmp-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        dead_pid = _exited_pid()
        here = leftovers.place()
        of_the_dead = os.path.join(tmp, f"{execution.WORKER_TEMP_PREFIX}{dead_pid}+{here}+abc")
        of_the_living = os.path.join(tmp, f"{execution.WORKER_TEMP_PREFIX}{os.getpid()}+{here}+abc")
        # Another container's, sharing TMPDIR (process ids of its own): not ours to judge.
        of_another_host = os.path.join(tmp, f"{execution.WORKER_TEMP_PREFIX}{dead_pid}+000000+abc")
        for path in (of_the_dead, of_the_living, of_another_host):
            os.makedirs(os.path.join(path, "out"))

        with mock.patch.object(tempfile, "tempdir", tmp):
            self.assertEqual(execution.remove_stale_temporary_directories(), 1)

        self.assertEqual(sorted(os.listdir(tmp)), sorted(os.path.basename(p) for p in (of_the_living, of_another_host)))


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
class DeletionTests(TemporaryMediaMixin, TransactionTestCase):
    def test_deleting_a_parser_deletes_its_script_and_its_runs_files_from_storage(self):
        parser = make_parser(WORKING_SCRIPT)
        run = Run.objects.create(parser=parser)
        execution.execute_run(run_id=run.run_id)
        stored = [parser.script.name, f"{run.run_id}/rows.csv", f"{run.run_id}/raw.bin"]
        self.assertTrue(all(default_storage.exists(name) for name in stored))

        parser.delete()

        self.assertFalse(Run.objects.exists())
        self.assertEqual([name for name in stored if default_storage.exists(name)], [])
