"""A live all-in-one Parseq (`runparseq`, as `make run` starts it) for tests that talk to it as a client would.

Its own var directory (SQLite, local files), migrated, with the development admin admin/admin,
served on a free port; its log is printed when a test using it fails (`process_logs`).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
from django.test import SimpleTestCase

from tests import processes

REPOSITORY = Path(__file__).resolve().parents[1]


class LiveParseq:
    """One `runparseq` process and the directory it keeps its data in."""

    def __init__(self):
        self.var_dir = tempfile.mkdtemp(prefix="parseq-test-live-")
        self.database = os.path.join(self.var_dir, "parseq.sqlite3")
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PARSEQ_BROKER_URL")},
            "DEBUG": "true",
            "PARSEQ_VAR_DIR": self.var_dir,
            "DATABASE_URL": f"sqlite:///{self.database}",
            "LOG_LEVEL": "INFO",
        }
        self.port = processes.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.var_dir, "runparseq.log")
        self.server = None

    def start(self):
        for command in (["migrate", "--noinput"], ["ensure_dev_admin"]):
            self.manage(*command)
        self.server = processes.start(
            [sys.executable, "manage.py", "runparseq", "--port", str(self.port)],
            name="runparseq",
            log_path=self.log_path,
            cwd=REPOSITORY,
            env=self.env,
            ready=self.serving,
            message="runparseq to serve",
        )
        return self

    def stop(self):
        if self.server is not None:
            self.server.stop(grace=15)
        shutil.rmtree(self.var_dir, ignore_errors=True)

    def manage(self, *command):
        """Run a management command against this server's data; its output."""
        finished = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=REPOSITORY, env=self.env, check=True, capture_output=True
        )
        return finished.stdout.decode()

    def serving(self):
        try:
            return requests.get(self.base + "/healthz", timeout=1).json()["scheduler"] == "active"
        except (requests.ConnectionError, KeyError, ValueError):
            return False


class LiveParseqTestCase(SimpleTestCase):
    """One live Parseq shared by the tests of the class (they keep out of each other's way by their names)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.parseq = LiveParseq()
        cls.addClassCleanup(cls.parseq.stop)
        cls.parseq.start()
        cls.base = cls.parseq.base

    def setUp(self):
        self.process_logs = [self.parseq.log_path]
