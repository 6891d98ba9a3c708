"""Telling the active scheduler, wherever it runs, that a parser's schedule may have changed."""

import queue

from django.db import connection, transaction

CHANNEL = "parseq_schedules"

# Queues of the schedulers running in this process (the all-in-one `runparseq`).
_local_listeners = []


def announce(*, parser_id):
    """Notify on commit: PostgreSQL delivers NOTIFY to other processes, a queue to this one's scheduler."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Delivered when (and only if) the surrounding transaction commits.
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(parser_id)])
    if _local_listeners:
        transaction.on_commit(lambda: [listener.put(parser_id) for listener in list(_local_listeners)])


def listen_locally():
    listener = queue.SimpleQueue()
    _local_listeners.append(listener)
    return listener


def stop_listening_locally(listener):
    if listener in _local_listeners:
        _local_listeners.remove(listener)
