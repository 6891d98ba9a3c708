"""Which scheduler is the active one, and how it hears of changes.

On PostgreSQL one dedicated connection holds a session advisory lock (the leadership) and
LISTENs for change notices; when the process dies, or its connection does, the lock goes with
it and a standby takes it. With SQLite, which lives on one host, a lock file does the same and
change notices come from this process's own saves (the all-in-one `runparseq`).
"""

import contextlib
import fcntl
import logging
import os
import queue
import select

import psycopg2
from django.conf import settings
from django.db import connection

from parseq.scheduling import changes

logger = logging.getLogger(__name__)
# Two int4 keys for pg_advisory_lock: "pars" and "eq" plus a version.
LOCK_KEYS = (0x70617273, 0x65710001)
# A dead host's session (and lock) is dropped after about 5 + 2 * 2 seconds without an answer.
KEEPALIVE = {"idle": 5, "interval": 2, "count": 2}


class LeadershipLost(Exception):
    """The active scheduler can no longer be sure it is the only one."""


def coordinator_for_database():
    if connection.vendor == "postgresql":
        return PostgresCoordinator(connection.settings_dict)
    return FileCoordinator(os.path.join(settings.VAR_DIR, "scheduler.lock"))


class PostgresCoordinator:
    def __init__(self, database):
        self.database = database
        self.connection = None

    def try_lead(self):
        """Take the leadership if no other scheduler has it; False (and retry later) on any failure."""
        try:
            if self.connection is None:
                self.connection = self._connect()
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS)
                if not cursor.fetchone()[0]:
                    return False
                cursor.execute(f"LISTEN {changes.CHANNEL}")
            return True
        except psycopg2.Error as error:
            logger.warning("cannot reach PostgreSQL to take the scheduler lock: %s", error)
            self.release()
            return False

    def wait_for_changes(self, timeout):
        """The ids of parsers announced within `timeout` seconds; LeadershipLost if the session is gone."""
        try:
            select.select([self.connection], [], [], timeout)
            self.connection.poll()
            notices = self.connection.notifies[:]
            self.connection.notifies.clear()
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # a broken session must end the leadership now, not later
        except (psycopg2.Error, OSError, ValueError) as error:
            self.release()
            raise LeadershipLost(f"the scheduler's database session ended: {error}") from error
        return {int(notice.payload) for notice in notices if notice.payload.isdigit()}

    def release(self):
        if self.connection is not None:
            with contextlib.suppress(psycopg2.Error):
                self.connection.close()  # ends the session, and with it the lock
            self.connection = None

    def leader_exists(self):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = %s AND objid = %s AND objsubid = 2 "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
                LOCK_KEYS,
            )
            return cursor.fetchone()[0]

    def _connect(self):
        db = self.database
        keepalive = " ".join(f"-c tcp_keepalives_{name}={value}" for name, value in KEEPALIVE.items())
        session = psycopg2.connect(
            dbname=db["NAME"],
            user=db["USER"] or None,
            password=db["PASSWORD"] or None,
            host=db["HOST"] or None,
            port=db["PORT"] or None,
            application_name="parseq-scheduler",
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=KEEPALIVE["idle"],
            keepalives_interval=KEEPALIVE["interval"],
            keepalives_count=KEEPALIVE["count"],
            options=keepalive,
        )
        session.autocommit = True
        return session


class FileCoordinator:
    def __init__(self, path):
        self.path = path
        self.lock_file = None
        self.listener = None

    def try_lead(self):
        lock_file = open(self.path, "a")  # noqa: SIM115 - held open for as long as this scheduler leads
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        self.lock_file = lock_file
        self.listener = changes.listen_locally()
        return True

    def wait_for_changes(self, timeout):
        try:
            announced = {self.listener.get(timeout=timeout)}
        except queue.Empty:
            return set()
        while True:
            try:
                announced.add(self.listener.get_nowait())
            except queue.Empty:
                return announced

    def release(self):
        if self.listener is not None:
            changes.stop_listening_locally(self.listener)
            self.listener = None
        if self.lock_file is not None:
            self.lock_file.close()  # releases the lock
            self.lock_file = None

    def leader_exists(self):
        if not os.path.exists(self.path):
            return False
        with open(self.path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False
