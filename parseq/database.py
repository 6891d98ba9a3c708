"""A database that stops answering fails the query waiting on it after PARSEQ_DATABASE_TIMEOUT seconds.

libpq waits for ever on an open connection to a server that has frozen (a stopped process, a
network that drops packets): the kernel still acknowledges, so TCP keepalives see nothing. psycopg2
lets a wait callback do all its waiting; this one waits in poll() and gives up once nothing has
come for the timeout. The connection is then broken, and Django opens a new one next time. The
bound is on silence, not on a query's length: a query that takes long legitimately (PostgreSQL says
nothing until it ends) must stay under it, as Parseq's do (retention deletes in batches).
"""

import contextlib
import select
import threading

import psycopg2
from psycopg2 import extensions


def bound_waits_of_this_service():
    """For the long-running services (web, workers, schedulers), not for one-off commands such as `migrate`,
    whose statements may wait long on a lock legitimately (a backup's, another migration's)."""
    from django.conf import settings
    from django.db import connections

    if any(connections[alias].vendor == "postgresql" for alias in connections):
        bound_waits(seconds=settings.DATABASE_TIMEOUT)


def bound_waits(*, seconds):
    """From now on, in this process, a connection or query that hears nothing for `seconds` fails."""

    def wait(connection):
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
                raise psycopg2.OperationalError(f"unexpected state of the connection: {state}")
            # poll(), not select(): a worker running hundreds of runs has descriptors past select()'s 1024.
            waiting = select.poll()
            waiting.register(connection.fileno(), select.POLLIN if state == extensions.POLL_READ else select.POLLOUT)
            ready = waiting.poll(seconds * 1000)
            if not ready:
                raise psycopg2.OperationalError(
                    f"the database did not answer within {seconds} s (PARSEQ_DATABASE_TIMEOUT)"
                )

    extensions.set_wait_callback(wait)


class DatabaseTurns:
    """A process's threads take turns on a few database connections, kept open while turns follow each other.

    A worker process may run hundreds of runs at once, each thread needing the database only for a
    moment (a claim, an outcome): at most `size` turns at once, on at most `size` connections, whatever
    the number of threads. A connection goes to the next turn while other turns wait or run (a burst of
    claims connects a few times, not once a run), and is closed once none does: nothing is kept open
    idle. Until open() (and inside a transaction, as in tests), a turn uses the thread's own connection
    and closes it after. A connection that failed in a turn is closed.
    """

    def __init__(self, *, size):
        self.free = threading.BoundedSemaphore(size)
        self.lock = threading.Lock()
        self.wanted = 0  # turns running or waiting
        self.idle = []
        self.pooling = False

    def open(self):
        self.pooling = True

    def close(self):
        """Turns use their thread's own connection again."""
        with self.lock:
            self.pooling = False

    @contextlib.contextmanager
    def turn(self):
        """A turn on one of the connections: django.db.connection is it until the turn ends."""
        from django.db import connection, connections

        with self.lock:
            self.wanted += 1
        kept = None
        with self.free:
            try:
                if not self.pooling or connection.in_atomic_block:
                    try:
                        yield
                    finally:
                        if not connection.in_atomic_block:
                            connection.close()
                    return
                wrapper = self._take()
                own = connections["default"]
                connections["default"] = wrapper
                try:
                    yield
                except BaseException:
                    with contextlib.suppress(Exception):  # it may be broken, or mid-transaction: not for the next turn
                        wrapper.close()
                    raise
                finally:
                    connections["default"] = own
                kept = wrapper
            finally:
                self._end_turn(kept)

    def _take(self):
        from django.db import connections

        with self.lock:
            if self.idle:
                return self.idle.pop()
        wrapper = connections.create_connection("default")
        wrapper.inc_thread_sharing()  # used by one thread at a time, but by many in turn
        return wrapper

    @staticmethod
    def _clean(wrapper):
        return wrapper.connection is not None and wrapper.autocommit and not wrapper.in_atomic_block

    def _end_turn(self, kept):
        """Give `kept` to the next turn if one waits or runs; once none does, close what is left open."""
        if kept is not None and not self._clean(kept):
            kept.close()  # left mid-transaction, or with autocommit off: not for the next turn
            kept = None
        with self.lock:
            self.wanted -= 1
            if kept is not None and self.pooling and self.wanted:
                self.idle.append(kept)
                return
            closing = [kept] if kept is not None else []
            if not self.wanted:
                closing, self.idle = closing + self.idle, []
        for wrapper in closing:
            wrapper.close()
