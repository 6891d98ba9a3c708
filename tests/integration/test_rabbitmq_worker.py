"""Runs through real RabbitMQ to a real `manage.py rundramatiq` worker, as in production.

The test process keeps its in-memory broker; it sends messages to RabbitMQ with a
broker of its own, and shares the test database and the media directory with the
worker it starts.
"""

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.test import Client, TransactionTestCase, override_settings
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from rest_framework.test import APIClient

from parseq.core.lifecycle import LOST_RUN_ERROR
from parseq.core.models import Run
from parseq.core.tasks import execute_run
from tests.api.helpers import user_in
from tests.helpers import (
    database_url,
    live_processes_with,
    make_parser,
    rabbitmq_url,
    requires_postgresql_and_rabbitmq,
    shows_process_logs_on_failure,
    wait_until,
)
from tests.processes import Process, kill_groups_of

REPOSITORY = Path(__file__).resolve().parents[2]
QUEUE = "runs"

REPORT = b"report of the run\r\nwith \x00 and \xff bytes, not text\n"
DATA = bytes(range(256)) * 10


class RealWorkerTestCase(TransactionTestCase):
    """Each test gets its own var directory (the worker's media), an empty `runs` queue and its workers."""

    def setUp(self):
        super().setUp()
        self.var_dir = tempfile.mkdtemp(prefix="parseq-test-var-")
        self.addCleanup(shutil.rmtree, self.var_dir, ignore_errors=True)
        # The worker stores files in <PARSEQ_VAR_DIR>/media; this process must read and write the same place.
        self.media_dir = os.path.join(self.var_dir, "media")
        os.mkdir(self.media_dir)
        storages = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": self.media_dir},
            },
        }
        media_override = override_settings(STORAGES=storages, MEDIA_ROOT=self.media_dir)
        media_override.enable()
        self.addCleanup(media_override.disable)

        self.broker = RabbitmqBroker(url=rabbitmq_url(), confirm_delivery=True)
        self.addCleanup(self.broker.close)
        self.broker.declare_queue(QUEUE, ensure=True)
        self.broker.flush(QUEUE)  # messages left by earlier test runs would run against this database
        self.workers = []
        self.process_logs = []

    def start_worker(self, *, processes=1, threads=4, env=None, cwd=REPOSITORY):
        """Start `manage.py rundramatiq` in a process group of its own; `env` adds to or replaces its variables.
        `threads=None` leaves them to PARSEQ_WORKER_SLOTS.

        From a `cwd` other than the repository, Dramatiq is told where the code is with `--path`.
        """
        # A killed worker cannot remove its temporary directories: keep them where the cleanup removes them.
        # Not inside the var directory, which Parseq keeps private: like /tmp, a sandbox running
        # as its own user must reach its directory in there.
        tmp_dir = self.var_dir + "-tmp"
        if not os.path.isdir(tmp_dir):
            os.mkdir(tmp_dir)
            os.chmod(tmp_dir, 0o1777)
            self.addCleanup(shutil.rmtree, tmp_dir, ignore_errors=True)
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "PARSEQ_BROKER_URL": rabbitmq_url(),
            "PARSEQ_VAR_DIR": self.var_dir,
            "PARSEQ_RUN_GRACE": "5",
            "PARSEQ_REAPER_INTERVAL": "1",
            # Leases renewed every second: a run whose worker is killed counts as lost 3 s later.
            "PARSEQ_HEARTBEAT_SECONDS": "1",
            "PARSEQ_LOST_RUN_SECONDS": "3",
            "DEBUG": "true",
            "TMPDIR": tmp_dir,
            "LOG_LEVEL": "INFO",  # `make test` quiets logging, but these logs are what a failure prints
            **(env or {}),
        }
        log_path = os.path.join(self.var_dir, f"worker-{len(self.workers) + 1}.log")
        worker = Process(
            [
                sys.executable,
                str(REPOSITORY / "manage.py"),
                "rundramatiq",
                *(["--path", str(REPOSITORY)] if Path(cwd) != REPOSITORY else []),
                "--processes",
                str(processes),
                *(["--threads", str(threads)] if threads else []),
            ],
            name=f"worker-{len(self.workers) + 1}",
            log_path=log_path,
            cwd=cwd,
            env=environment,
        )
        self.workers.append(worker)
        self.process_logs.append(log_path)
        self.addCleanup(worker.kill)
        return worker

    def kill_worker(self, worker):
        """SIGKILL the worker's whole process group (dramatiq's parent and its worker processes); waits until gone."""
        worker.kill()

    def wait_for(self, predicate, *, timeout, message, worker=None):
        """wait_until, failing at once if `worker` has exited instead of waiting for a timeout."""
        if worker is None:
            return wait_until(predicate, timeout=timeout, interval=0.1, message=message)
        return worker.wait_until(predicate, timeout=timeout, interval=0.1, message=message)

    def run_a_quick_one(self, *, worker):
        """Send a trivial run and wait until `worker` has completed it: the worker is free and well."""
        quick = make_parser("def parse():\n    return {}\n", name="quick", filename="quick.py")
        later = Run.objects.create(parser=quick, trigger=Run.Trigger.API)
        self.enqueue(later)
        self.wait_for(
            lambda: Run.objects.filter(pk=later.pk, status=Run.Status.COMPLETED).exists(),
            timeout=30,
            message="a quick run to complete",
            worker=worker,
        )
        return later

    def enqueue(self, run):
        self.broker.enqueue(execute_run.message(str(run.run_id)))

    def ready_messages(self):
        return self.broker.get_queue_message_counts(QUEUE)[0]

    def consumers(self):
        """How many consumers the runs queue has: one per worker process once it is ready for messages."""
        return self.broker.channel.queue_declare(queue=QUEUE, passive=True).method.consumer_count


@requires_postgresql_and_rabbitmq
class ManyRunsTests(RealWorkerTestCase):
    @shows_process_logs_on_failure
    def test_twenty_runs_enqueued_at_once_all_complete_with_their_files_downloadable(self):
        # Given a worker and a parser returning a text file and a binary one
        worker = self.start_worker()
        parser = make_parser(
            f"""
            def parse():
                return {{"report.txt": {REPORT!r}, "data.bin": bytes(range(256)) * 10}}
            """,
            name="two files",
            filename="two_files.py",
        )

        # When twenty runs are sent to RabbitMQ at once
        runs = [Run.objects.create(parser=parser, trigger=Run.Trigger.API) for _ in range(20)]
        for run in runs:
            self.enqueue(run)

        # Then all of them complete
        def all_completed():
            statuses = dict(Run.objects.values_list("run_id", "status"))
            failed = Run.objects.filter(status=Run.Status.ERROR).values_list("run_id", "error")
            if failed:
                raise AssertionError(f"runs ended in error: {list(failed)}")
            return all(statuses[run.run_id] == Run.Status.COMPLETED for run in runs)

        self.wait_for(all_completed, timeout=90, message="20 completed runs", worker=worker)

        # And each run's files download as attachments, byte for byte what the script returned
        client = Client()
        for run in runs:
            run.refresh_from_db()
            self.assertEqual([entry["name"] for entry in run.files], ["report.txt", "data.bin"])
            for filename, expected in (("report.txt", REPORT), ("data.bin", DATA)):
                with self.subTest(run=str(run.run_id), filename=filename):
                    response = client.get(f"/{run.run_id}/{filename}")
                    self.assertEqual(response.status_code, 200)
                    content = b"".join(response.streaming_content)
                    response.close()
                    self.assertEqual(content, expected)
                    self.assertEqual(response["Content-Disposition"], f'attachment; filename="{filename}"')


@requires_postgresql_and_rabbitmq
class LostWorkerTests(RealWorkerTestCase):
    def start_a_run_to_kill(self, *, max_attempts):
        """A worker running, in its sandbox, a script that takes 8 s; returns (worker, run, sandbox marker)."""
        worker = self.start_worker()
        marker = f"lost_{uuid.uuid4().hex}.py"  # the sandbox's display name, on its command line
        self.addCleanup(kill_groups_of, marker)  # should the sandbox outlive its worker, it goes with the test
        parser = make_parser(
            """
            import time

            def parse():
                time.sleep(8)
                return {"done.txt": b"done"}
            """,
            name="sleeper",
            filename=marker,
            timeout=30,
            max_attempts=max_attempts,
        )
        run = Run.objects.create(parser=parser, trigger=Run.Trigger.API)
        self.enqueue(run)
        self.wait_for(
            lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING and live_processes_with(marker),
            timeout=30,
            message="the run to be running in a sandbox",
            worker=worker,
        )
        return worker, Run.objects.get(pk=run.pk), marker

    @shows_process_logs_on_failure
    def test_a_run_whose_worker_is_killed_runs_again_on_another_worker_and_completes_as_its_second_attempt(self):
        # Given a worker running a script in its sandbox
        first_worker, run, marker = self.start_a_run_to_kill(max_attempts=2)
        first_name = run.worker

        # When the worker's whole process group is killed, and a second worker starts
        self.kill_worker(first_worker)
        killed_at = timezone.now()
        wait_until(lambda: not live_processes_with(marker), timeout=5, message="the orphaned sandbox to die")
        second_worker = self.start_worker()

        # Then, once its lease has lapsed, the run starts again on the second worker and completes there
        run = self.wait_for(
            lambda: Run.objects.filter(pk=run.pk, status=Run.Status.COMPLETED).first(),
            timeout=60,
            message="the second attempt to complete",
            worker=second_worker,
        )
        self.assertEqual(run.attempt, 2)
        self.assertNotEqual(run.worker, first_name)
        self.assertEqual([entry["name"] for entry in run.files], ["done.txt"])
        [first] = run.attempts
        self.assertEqual((first["attempt"], first["worker"]), (1, first_name))
        self.assertIn("worker lost", first["why"])
        # And the attempts never overlapped: the first sandbox was gone before the second attempt started
        self.assertGreater(run.started_time, killed_at)
        self.assertEqual(live_processes_with(marker), [])

    @shows_process_logs_on_failure
    def test_a_run_with_no_attempt_left_ends_in_error_when_its_worker_is_killed_and_never_runs_again(self):
        first_worker, run, marker = self.start_a_run_to_kill(max_attempts=1)
        started_time = run.started_time

        self.kill_worker(first_worker)
        wait_until(lambda: not live_processes_with(marker), timeout=5, message="the orphaned sandbox to die")
        wait_until(lambda: self.ready_messages() == 1, timeout=10, message="the message to be requeued")
        second_worker = self.start_worker()
        self.wait_for(lambda: self.ready_messages() == 0, timeout=30, message="the redelivery", worker=second_worker)

        # Then the second worker's reaper ends it in error once its lease has lapsed
        run = self.wait_for(
            lambda: Run.objects.filter(pk=run.pk, status=Run.Status.ERROR).first(),
            timeout=30,
            message="the lost run to end in error",
            worker=second_worker,
        )
        self.assertEqual(run.error, LOST_RUN_ERROR)
        self.assertEqual([attempt["attempt"] for attempt in run.attempts], [1])
        # And once a run sent after the redelivery has completed, the lost run has not run again
        self.run_a_quick_one(worker=second_worker)
        self.assertEqual(live_processes_with(marker), [])
        final = Run.objects.get(pk=run.pk)
        self.assertEqual((final.status, final.error, final.attempt), (Run.Status.ERROR, LOST_RUN_ERROR, 1))
        self.assertEqual(final.started_time, started_time)


@requires_postgresql_and_rabbitmq
class DrainingWorkerTests(RealWorkerTestCase):
    @shows_process_logs_on_failure
    def test_a_stopping_worker_hands_its_prefetched_run_on_at_once_and_its_running_one_once_its_drain_time_is_up(self):
        # Given a worker with one thread, running a script that takes 20 s and holding a run it prefetched
        stopping = self.start_worker(threads=1, env={"PARSEQ_DRAIN_SECONDS": "8"})
        marker = f"drained_{uuid.uuid4().hex}.py"
        self.addCleanup(kill_groups_of, marker)
        slow = make_parser(
            "import time\n\ndef parse():\n    time.sleep(20)\n    return {'done.txt': b'done'}\n",
            name="slow",
            filename=marker,
            timeout=60,
        )
        long_run = Run.objects.create(parser=slow, trigger=Run.Trigger.API)
        self.enqueue(long_run)
        self.wait_for(
            lambda: Run.objects.get(pk=long_run.pk).status == Run.Status.RUNNING and live_processes_with(marker),
            timeout=30,
            message="the long run to be running in a sandbox",
            worker=stopping,
        )
        quick = make_parser("def parse():\n    return {'quick.txt': b'quick'}\n", name="quick", filename="quick.py")
        prefetched = Run.objects.create(parser=quick, trigger=Run.Trigger.API)
        self.enqueue(prefetched)
        self.wait_for(lambda: self.ready_messages() == 0, timeout=10, message="the prefetch", worker=stopping)
        # And a second worker, idle
        other = self.start_worker(threads=1)
        self.wait_for(lambda: self.consumers() == 2, timeout=60, message="the second worker", worker=other)

        # When the first worker is told to stop as `docker stop` tells it: SIGTERM to its main process
        os.kill(stopping.pid, signal.SIGTERM)

        # Then the prefetched run completes on the second worker while the first still runs its long run
        done = self.wait_for(
            lambda: Run.objects.filter(pk=prefetched.pk, status=Run.Status.COMPLETED).first(),
            timeout=30,
            message="the prefetched run to complete",
            worker=other,
        )
        first_attempt = Run.objects.get(pk=long_run.pk)
        self.assertEqual((first_attempt.status, first_attempt.attempt), (Run.Status.RUNNING, 1))
        self.assertNotEqual(done.worker, first_attempt.worker)
        self.assertEqual(done.attempt, 1)
        # And once its drain time is up, the long run's sandbox is stopped and the run handed back:
        # it completes on the second worker as its second attempt, begun after the first ended
        run = self.wait_for(
            lambda: Run.objects.filter(pk=long_run.pk, status=Run.Status.COMPLETED).first(),
            timeout=90,
            message="the handed-back run to complete",
            worker=other,
        )
        self.assertEqual((run.attempt, run.worker), (2, done.worker))
        [first] = run.attempts
        self.assertEqual((first["attempt"], first["worker"]), (1, first_attempt.worker))
        self.assertIn("its worker was stopped", first["why"])
        self.assertGreater(run.started_time.isoformat(), first["ended"])
        # And the stopped worker has exited, leaving no sandbox behind
        wait_until(lambda: stopping.returncode is not None, timeout=30, message="the stopped worker to exit")
        self.assertEqual(live_processes_with(marker), [])


@requires_postgresql_and_rabbitmq
class CancelTests(RealWorkerTestCase):
    @shows_process_logs_on_failure
    def test_a_run_cancelled_through_the_api_has_its_sandbox_in_the_worker_killed_within_two_seconds(self):
        # Given a real worker running a script that hangs
        worker = self.start_worker()
        marker = f"hangs_{uuid.uuid4().hex}.py"
        self.addCleanup(kill_groups_of, marker)
        parser = make_parser(
            "import time\n\ndef parse():\n    print('started', flush=True)\n    time.sleep(120)\n",
            name="hangs",
            filename=marker,
        )
        run = Run.objects.create(parser=parser, trigger=Run.Trigger.API)
        self.enqueue(run)
        self.wait_for(
            lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING and live_processes_with(marker),
            timeout=30,
            message="the run to be running in a sandbox",
            worker=worker,
        )

        # When an operator cancels it through the API
        operator = user_in("Operators", "ops")
        client = APIClient()
        client.force_authenticate(operator)
        response = client.post(f"/api/runs/{run.run_id}/cancel/")
        cancelled_at = time.monotonic()

        # Then the answer says so, the worker kills the sandbox within 2 s and keeps what it printed
        self.assertEqual((response.status_code, response.json()["status"]), (200, "cancelled"))
        wait_until(lambda: not live_processes_with(marker), timeout=2, message="the sandbox to be killed")
        self.assertLess(time.monotonic() - cancelled_at, 2)
        run = self.wait_for(
            lambda: Run.objects.filter(pk=run.pk, log__contains="started").first(),
            timeout=5,
            message="the log of the cancelled run",
            worker=worker,
        )
        self.assertEqual(
            (run.status, run.cancelled_by, run.error), (Run.Status.CANCELLED, operator, "cancelled by ops")
        )
        # And the worker is free for the next run
        self.run_a_quick_one(worker=worker)
