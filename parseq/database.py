"""A database that stops answering fails the query waiting on it after PARSEQ_DATABASE_TIMEOUT seconds.

libpq waits for ever on an open connection to a server that has frozen (a stopped process, a
network that drops packets): the kernel still acknowledges, so TCP keepalives see nothing. psycopg2
lets a wait callback do all its waiting; this one waits in select() and gives up once nothing has
come for the timeout. The connection is then broken, and Django opens a new one next time. The
bound is on silence, not on a query's length: a query that takes long legitimately (PostgreSQL says
nothing until it ends) must stay under it, as Parseq's do (retention deletes in batches).
"""

import select

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
            if state == extensions.POLL_READ:
                ready = select.select([connection.fileno()], [], [], seconds)[0]
            elif state == extensions.POLL_WRITE:
                ready = select.select([], [connection.fileno()], [], seconds)[1]
            else:
                raise psycopg2.OperationalError(f"unexpected state of the connection: {state}")
            if not ready:
                raise psycopg2.OperationalError(
                    f"the database did not answer within {seconds} s (PARSEQ_DATABASE_TIMEOUT)"
                )

    extensions.set_wait_callback(wait)
