"""Fault injection with real processes: a finished run outlives its database's outage.

The test starts a PostgreSQL cluster of its own on another port (so it can stop it without
touching the shared one), a RabbitMQ vhost of its own and a real `rundramatiq` worker on
both. It stops the cluster while a run sits in its sandbox, for longer than the script has
left, starts it again, and the run ends `completed` with its files: the worker kept the
outcome and recorded it once the database answered.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import psycopg2
from django.test import SimpleTestCase

from tests.helpers import rabbitmq_url, require, requires_postgresql_and_rabbitmq, shows_process_logs_on_failure
from tests.processes import Process, free_port, port_accepting, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
POSTGRESQL_VERSIONS = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
OUTAGE_SECONDS = 25

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

    def start_worker(self):
        tmp_dir = self.var_dir + "-tmp"
        os.makedirs(tmp_dir, mode=0o1777, exist_ok=True)
        os.chmod(tmp_dir, 0o1777)
        self.addCleanup(shutil.rmtree, tmp_dir, ignore_errors=True)
        log_path = os.path.join(self.var_dir, "worker.log")
        argv = [sys.executable, str(REPOSITORY / "manage.py"), "rundramatiq", "--processes", "1", "--threads", "2"]
        worker = Process(argv, name="worker", log_path=log_path, env={**self.environment, "TMPDIR": tmp_dir})
        self.addCleanup(worker.stop)
        self.process_logs = [log_path]
        return worker

    def enqueue_run(self):
        """A parser with SLOW_SCRIPT and a run of it, made and sent as the admin would."""
        code = (
            "from django.core.files.base import ContentFile\n"
            "from parseq.core import services\n"
            "from parseq.core.models import Parser, Run\n"
            f"script = ContentFile({SLOW_SCRIPT!r}.encode(), name='slow.py')\n"
            "parser = Parser(name='slow', script=script, enabled=False)\n"
            "services.save_parser(parser=parser, user=None, source='command')\n"
            "run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)\n"
            "print(run.run_id)\n"
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


if not POSTGRESQL_VERSIONS:  # keeps unittest's loader quiet where PostgreSQL is not installed at all
    DatabaseOutageTests = unittest.skip("no PostgreSQL installed")(DatabaseOutageTests)
