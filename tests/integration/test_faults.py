"""Fault injection with real processes: a finished run outlives its database's outage; a full storage fails only
the run whose result did not fit.

The test starts a PostgreSQL cluster of its own on another port (so it can stop it without
touching the shared one), a RabbitMQ vhost of its own and a real `rundramatiq` worker on
both. It stops the cluster while a run sits in its sandbox, for longer than the script has
left, starts it again, and the run ends `completed` with its files: the worker kept the
outcome and recorded it once the database answered.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
from django.conf import settings
from django.test import SimpleTestCase, TransactionTestCase, override_settings, tag
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from parseq.core import services
from parseq.core.models import Parser, Run
from parseq.core.tasks import execute_run
from tests.freezable_proxy import FreezableProxy
from tests.helpers import (
    database_url,
    in_process_worker,
    make_parser,
    rabbitmq_url,
    require,
    requires_postgresql_and_rabbitmq,
    shows_process_logs_on_failure,
)
from tests.integration.test_rabbitmq_worker import QUEUE, RealWorkerTestCase
from tests.processes import Process, free_port, port_accepting, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
POSTGRESQL_VERSIONS = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
OUTAGE_SECONDS = 25
LONG_OUTAGE_SECONDS = 90  # longer than a message's retries last (about 31 s of backoff)
BROKER_OUTAGE_SECONDS = 10  # longer than the runs in their sandboxes have left
QUICK_SCRIPT = "def parse():\n    return {'quick.txt': b'quick'}\n"

# Writes its files only after the database has gone away.
SLOW_SCRIPT = """
import time

def parse():
    print("started", flush=True)
    time.sleep(6)
    return {"result.txt": b"computed during the outage\\n"}
"""


class PostgresCluster:
    """A PostgreSQL cluster of the test's own (pg_createcluster), trusting local TCP connections."""

    def __init__(self):
        self.version = POSTGRESQL_VERSIONS[-1]
        self.name = f"parseqfault{os.getpid()}"
        self.port = free_port()

    def create(self):
        command = ["pg_createcluster", self.version, self.name, "--port", str(self.port), "--", "--auth=trust"]
        subprocess.run(command, check=True, capture_output=True)
        self.start()
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "parseq"],
            check=True,
            capture_output=True,
        )

    def start(self):
        subprocess.run(["pg_ctlcluster", self.version, self.name, "start"], check=True, capture_output=True)
        wait_until(lambda: port_accepting("127.0.0.1", self.port), timeout=30, message="PostgreSQL to listen")

    def stop(self):
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, "stop", "-m", "fast"], check=True, capture_output=True
        )

    def drop(self):
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True)

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/parseq"

    def query(self, sql, *arguments):
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="parseq")
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute(sql, arguments)
            return cursor.fetchall()


@requires_postgresql_and_rabbitmq
@require(shutil.which("pg_createcluster") and POSTGRESQL_VERSIONS, "pg_createcluster (postgresql-common)")
class DatabaseOutageTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = PostgresCluster()
        cls.addClassCleanup(cls.cluster.drop)
        cls.cluster.create()
        cls.vhost = f"parseq-faults-{uuid.uuid4().hex[:8]}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", cls.vhost], check=True, capture_output=True)
        cls.addClassCleanup(subprocess.run, ["rabbitmqctl", "-q", "delete_vhost", cls.vhost], capture_output=True)
        user = rabbitmq_url().split("//", 1)[1].split(":", 1)[0]
        permissions = ["rabbitmqctl", "-q", "set_permissions", "-p", cls.vhost, user, ".*", ".*", ".*"]
        subprocess.run(permissions, check=True, capture_output=True)
        cls.var_dir = tempfile.mkdtemp(prefix="parseq-faults-")
        cls.addClassCleanup(shutil.rmtree, cls.var_dir, ignore_errors=True)
        cls.environment = {
            **os.environ,
            "DATABASE_URL": cls.cluster.url,
            "PARSEQ_BROKER_URL": rabbitmq_url().rsplit("/", 1)[0] + "/" + cls.vhost,
            "PARSEQ_VAR_DIR": cls.var_dir,
            "DEBUG": "true",
            "LOG_LEVEL": "INFO",
        }
        cls.manage("migrate", "--noinput")

    @classmethod
    def manage(cls, *arguments):
        command = [sys.executable, str(REPOSITORY / "manage.py"), *arguments]
        return subprocess.run(command, env=cls.environment, check=True, capture_output=True, text=True).stdout

    def start_worker(self, *, threads=2, env=None):
        tmp_dir = self.var_dir + "-tmp"
        os.makedirs(tmp_dir, mode=0o1777, exist_ok=True)
        os.chmod(tmp_dir, 0o1777)
        self.addCleanup(shutil.rmtree, tmp_dir, ignore_errors=True)
        log_path = os.path.join(self.var_dir, "worker.log")
        argv = [
            sys.executable,
            str(REPOSITORY / "manage.py"),
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ]
        environment = {**self.environment, "TMPDIR": tmp_dir, **(env or {})}
        worker = Process(argv, name="worker", log_path=log_path, env=environment)
        self.addCleanup(worker.stop)
        self.process_logs = [log_path]
        return worker

    def enqueue_run(self, *, source=SLOW_SCRIPT, name="slow", send=True):
        """A parser with `source` and a run of it, made (and, if `send`, sent) as the admin would; its id."""
        create = (
            "services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)"
            if send
            else "Run.objects.create(parser=parser)"
        )
        code = (
            "from django.core.files.base import ContentFile\n"
            "from parseq.core import services\n"
            "from parseq.core.models import Parser, Run\n"
            f"script = ContentFile({source!r}.encode(), name='script.py')\n"
            f"parser = Parser(name={name!r}, script=script, enabled=False)\n"
            "services.save_parser(parser=parser, user=None, source='command')\n"
            f"print({create}.run_id)\n"
        )
        return self.manage("shell", "-c", code).strip().splitlines()[-1]

    def status_of(self, run_id):
        try:
            return self.cluster.query("SELECT status, error, files FROM core_run WHERE run_id = %s", run_id)[0]
        except psycopg2.OperationalError:
            return None

    @shows_process_logs_on_failure
    def test_a_run_finished_while_the_database_is_down_completes_with_its_files_once_it_is_back(self):
        # Given a worker running a script in its sandbox
        worker = self.start_worker()
        run_id = self.enqueue_run()
        worker.wait_until(lambda: (self.status_of(run_id) or ("",))[0] == "running", timeout=60, message="the run")

        # When the database stops before the script returns, and comes back after OUTAGE_SECONDS
        self.cluster.stop()
        stopped = time.monotonic()
        worker.wait_until(lambda: worker.logged("keeping the run's outcome"), timeout=30, message="the outcome kept")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))  # the outage itself: real time
        self.cluster.start()

        # Then the run completes with its file, which is in storage once
        status, error, files = worker.wait_until(
            lambda: (row := self.status_of(run_id)) and row[0] != "running" and row,
            timeout=60,
            message="the run to end",
        )
        self.assertEqual((status, error), ("completed", ""))
        self.assertEqual([entry["name"] for entry in files], ["result.txt"])
        stored = Path(self.var_dir, "media", run_id, "result.txt")
        self.assertEqual(stored.read_bytes(), b"computed during the outage\n")
        self.assertTrue(worker.logged("recorded the run's outcome"))

    @shows_process_logs_on_failure
    def test_runs_whose_messages_were_dead_lettered_in_a_90_second_outage_run_once_the_database_is_back(self):
        # Given a worker with three threads, two of them running scripts in their sandboxes
        worker = self.start_worker(threads=3, env={"PARSEQ_RESEND_ENQUEUED_AFTER": "10"})
        slow = [self.enqueue_run(name=f"slow {n}") for n in range(2)]
        worker.wait_until(
            lambda: all((self.status_of(run_id) or ("",))[0] == "running" for run_id in slow),
            timeout=60,
            message="both slow runs in their sandboxes",
        )
        waiting = [self.enqueue_run(source=QUICK_SCRIPT, name=f"quick {n}", send=False) for n in range(3)]

        # When the database stops, and the waiting runs' messages arrive only then: the third thread cannot
        # claim them, and once their retries are used up they go to the dead-letter queue
        self.cluster.stop()
        stopped = time.monotonic()
        broker = RabbitmqBroker(url=self.environment["PARSEQ_BROKER_URL"], confirm_delivery=True)
        self.addCleanup(broker.close)
        broker.declare_queue("runs", ensure=True)
        for run_id in waiting:
            broker.enqueue(execute_run.message(run_id))
        worker.wait_until(
            lambda: worker.log_text().count("its message was dead-lettered") >= len(waiting),
            timeout=LONG_OUTAGE_SECONDS - 5,
            message="the waiting runs' messages dead-lettered",
        )
        time.sleep(max(0.0, LONG_OUTAGE_SECONDS - (time.monotonic() - stopped)))
        self.cluster.start()

        # Then every run completes: the slow ones with the outcome their worker kept, the waiting ones sent again
        worker.wait_until(
            lambda: [(self.status_of(run_id) or ("",))[0] for run_id in slow + waiting] == ["completed"] * 5,
            timeout=90,
            message="all five runs to complete",
        )
        self.assertTrue(worker.logged("sending again 3 run(s): not taken by the broker, or enqueued for over 10 s"))


if not POSTGRESQL_VERSIONS:  # keeps unittest's loader quiet where PostgreSQL is not installed at all
    DatabaseOutageTests = unittest.skip("no PostgreSQL installed")(DatabaseOutageTests)


@tag("slow")
@require(os.geteuid() == 0, "root, to mount a small tmpfs as the storage")
class FullStorageTests(TransactionTestCase):
    """The storage is a 1 MiB tmpfs: a result that does not fit fails its run alone and leaves nothing behind."""

    def setUp(self):
        self.media_dir = tempfile.mkdtemp(prefix="parseq-full-")
        self.addCleanup(shutil.rmtree, self.media_dir, ignore_errors=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", self.media_dir], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", self.media_dir], check=False)
        storages = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": self.media_dir},
            },
        }
        override = override_settings(STORAGES=storages, MEDIA_ROOT=self.media_dir)
        override.enable()
        self.addCleanup(override.disable)

    def test_a_result_that_does_not_fit_fails_its_run_alone_and_the_next_run_completes(self):
        too_big = make_parser(
            "def parse():\n    return {f'part{n}.bin': bytes(400 * 1024) for n in range(3)}\n",
            name="too big",
            filename="too_big.py",
        )
        small = make_parser("def parse():\n    return {'ok.txt': b'ok'}\n", name="small", filename="small.py")

        with in_process_worker(threads=1), self.assertLogs("parseq.core.execution", "ERROR"):
            failed = services.enqueue_run(parser=too_big, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=failed.pk).is_finished, timeout=60, message="the big run")
            completed = services.enqueue_run(parser=small, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=completed.pk).is_finished, timeout=60, message="the small run")

        failed.refresh_from_db()
        completed.refresh_from_db()
        self.assertEqual(failed.status, Run.Status.ERROR)
        self.assertIn("could not store the result files: [Errno 28] No space left on device", failed.error)
        self.assertEqual(os.listdir(os.path.join(self.media_dir, str(failed.run_id))), [])  # no partial file
        self.assertEqual((completed.status, [entry["name"] for entry in completed.files]), ("completed", ["ok.txt"]))

    def test_healthz_says_degraded_when_the_storage_is_low_on_space(self):
        with self.settings(BROKER_URL=None, STORAGE_MIN_FREE_MB=2):
            response = self.client.get("/healthz")

        self.assertEqual((response.status_code, response.json()["status"]), (200, "degraded"))
        self.assertTrue(response.json()["storage"].startswith("degraded: 1 MiB free"), response.json()["storage"])


@requires_postgresql_and_rabbitmq
class BrokerOutageTests(RealWorkerTestCase):
    """A real worker reaches RabbitMQ through a proxy that stops (refuses and drops its connections) or freezes
    (keeps them open and silent, as a broker sent SIGSTOP); the shared RabbitMQ itself is never touched.
    """

    def setUp(self):
        super().setUp()
        shared = urlsplit(rabbitmq_url())
        self.proxy = FreezableProxy(target_host=shared.hostname, target_port=shared.port or 5672)
        self.addCleanup(self.proxy.close)
        self.addCleanup(self.proxy.restore)
        netloc = f"{shared.username}:{shared.password}@127.0.0.1:{self.proxy.port}"
        self.proxied_url = shared._replace(netloc=netloc).geturl()
        self.worker = self.start_worker(threads=4, env={"PARSEQ_BROKER_URL": self.proxied_url})
        self.wait_for(lambda: self.consumers() == 1, timeout=60, message="the worker", worker=self.worker)

    def runs_in_their_sandboxes(self, count):
        parser = make_parser(SLOW_SCRIPT, name="slow", filename="slow.py", timeout=60)
        runs = [Run.objects.create(parser=parser, trigger=Run.Trigger.API) for _ in range(count)]
        for run in runs:
            self.enqueue(run)
        self.wait_for(
            lambda: Run.objects.filter(status=Run.Status.RUNNING).count() == count,
            timeout=30,
            message="the runs to be in their sandboxes",
            worker=self.worker,
        )
        return runs

    def assert_completed_once_and_nothing_stuck(self, runs):
        # Every run completed, on its first attempt, with its file; no message is left waiting or dead-lettered
        self.wait_for(
            lambda: (
                Run.objects.filter(pk__in=[run.pk for run in runs], status=Run.Status.COMPLETED).count() == len(runs)
            ),
            timeout=60,
            message="the runs to complete",
            worker=self.worker,
        )
        self.run_a_quick_one(worker=self.worker)  # the worker is connected and well again
        for run in Run.objects.filter(pk__in=[run.pk for run in runs]):
            self.assertEqual((run.attempt, [entry["name"] for entry in run.files]), (1, ["result.txt"]))
        self.assertEqual(self.broker.get_queue_message_counts(QUEUE), (0, 0, 0))
        self.assertFalse(Run.objects.filter(status__in=Run.ACTIVE_STATUSES).exists())

    @shows_process_logs_on_failure
    def test_runs_in_their_sandboxes_while_the_broker_is_stopped_complete_once_and_none_is_stuck(self):
        # Given four runs in their sandboxes
        runs = self.runs_in_their_sandboxes(4)

        # When the broker stops for longer than the runs have left, then comes back
        self.proxy.cut_off()
        time.sleep(BROKER_OUTAGE_SECONDS)
        self.proxy.restore()

        # Then each run completed once; the messages the broker gave back were dropped by the claim
        self.assert_completed_once_and_nothing_stuck(runs)
        # And the outage took two lines of the worker's log, not one per queue every 3 s
        self.wait_for(
            lambda: self.worker.logged("the broker's connection errors stopped after"),
            timeout=30,
            message="the end of the outage to be logged",
            worker=self.worker,
        )
        self.assertEqual(self.worker.log_text().count("Consumer encountered a connection error"), 1)

    @shows_process_logs_on_failure
    def test_runs_in_their_sandboxes_while_the_broker_is_frozen_complete_once_and_none_is_stuck(self):
        runs = self.runs_in_their_sandboxes(4)

        self.proxy.freeze()
        time.sleep(BROKER_OUTAGE_SECONDS)
        self.proxy.thaw()

        self.assert_completed_once_and_nothing_stuck(runs)

    @shows_process_logs_on_failure
    def test_a_worker_stopped_while_the_broker_is_frozen_hands_back_its_run_and_exits_all_the_same(self):
        # Given a worker (with a drain time of 2 s) whose run sits in its sandbox
        self.worker.kill()
        worker = self.start_worker(threads=1, env={"PARSEQ_BROKER_URL": self.proxied_url, "PARSEQ_DRAIN_SECONDS": "2"})
        self.wait_for(lambda: self.consumers() == 1, timeout=60, message="the worker", worker=worker)
        parser = make_parser(SLOW_SCRIPT.replace("time.sleep(6)", "time.sleep(15)"), name="long", filename="long.py")
        run = Run.objects.create(parser=parser, trigger=Run.Trigger.API)
        self.enqueue(run)
        self.wait_for(
            lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING,
            timeout=30,
            message="the run",
            worker=worker,
        )

        # When the broker freezes and the worker is told to stop
        self.proxy.freeze()
        os.kill(worker.pid, signal.SIGTERM)

        # Then the run is handed back, waiting for the broker, and the worker exits although its connection hangs
        wait_until(lambda: worker.returncode is not None, timeout=90, message="the stopped worker to exit")
        handed_back = Run.objects.get(pk=run.pk)
        self.assertEqual((handed_back.status, handed_back.attempt), (Run.Status.ENQUEUED, 2))
        self.assertTrue(worker.logged("the worker's shutdown hung"))
        # And once the broker answers, another worker's reaper sends the run, which completes as attempt 2
        self.proxy.thaw()
        other = self.start_worker(threads=1)
        done = self.wait_for(
            lambda: Run.objects.filter(pk=run.pk, status=Run.Status.COMPLETED).first(),
            timeout=120,
            message="the handed-back run to complete",
            worker=other,
        )
        self.assertEqual(done.attempt, 2)

    @shows_process_logs_on_failure
    def test_a_scheduler_through_a_frozen_broker_loses_and_doubles_no_due_time_and_its_runs_complete_after(self):
        # Given a scheduler reaching the broker through the proxy, and a parser due every 2 s
        scheduler = Process(
            [sys.executable, "manage.py", "runscheduler"],
            name="scheduler",
            log_path=os.path.join(self.var_dir, "scheduler.log"),
            cwd=REPOSITORY,
            env={
                **os.environ,
                "DATABASE_URL": database_url(),
                "PARSEQ_BROKER_URL": self.proxied_url,
                "PARSEQ_VAR_DIR": self.var_dir,
                "PARSEQ_BROKER_TIMEOUT": "2",
                "LOG_LEVEL": "INFO",
            },
        )
        self.addCleanup(scheduler.kill)
        self.process_logs.append(str(scheduler.log_path))
        scheduler.wait_until(lambda: scheduler.logged("scheduler active"), timeout=30, message="the scheduler")
        start = timezone.now() + timedelta(seconds=2)
        parser = make_parser(
            QUICK_SCRIPT, name="often", scheduled_time=start, repeat_after=timedelta(seconds=2), overlap="allow"
        )
        runs = Run.objects.filter(parser=parser)
        self.wait_for(
            lambda: runs.filter(status=Run.Status.COMPLETED).count() >= 2,
            timeout=30,
            message="two scheduled runs",
            worker=self.worker,
        )

        # When the broker freezes for 10 s, then answers again
        self.proxy.freeze()
        time.sleep(BROKER_OUTAGE_SECONDS)
        self.proxy.thaw()
        time.sleep(4)  # a couple more due times after the outage
        Parser.objects.filter(pk=parser.pk).update(enabled=False)

        # Then every run due meanwhile completes once the reaper has sent it again: none stuck, none in error
        self.wait_for(
            lambda: not runs.filter(status__in=Run.ACTIVE_STATUSES).exists(),
            timeout=60,
            message="the scheduled runs to end",
            worker=self.worker,
        )
        scheduler.check_alive()
        statuses = set(runs.values_list("status", flat=True))
        self.assertLessEqual(statuses, {Run.Status.COMPLETED, Run.Status.SKIPPED}, list(runs.values("status", "error")))
        # And no due time was doubled, or lost: each has its run, or is counted by a recorded skip
        dues = sorted(runs.values_list("scheduled_for", flat=True))
        self.assertEqual(len(dues), len(set(dues)))
        covered = runs.exclude(status=Run.Status.SKIPPED).count()
        for skip in runs.filter(status=Run.Status.SKIPPED):
            self.assertIn("while the scheduler was held up", skip.error)
            covered += int(re.match(r"Skipped: (\d+) scheduled run", skip.error).group(1))
        self.assertEqual(covered, round((dues[-1] - dues[0]).total_seconds() / 2) + 1)
