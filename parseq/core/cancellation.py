"""How a worker process learns that one of its runs was cancelled (or deleted, with its parser or alone).

One thread per process asks the database about all the runs the process is running, in one
query twice a second, on a connection it closes again at once: the cost stays the same however
many threads a worker has, and no connection is held while the sandboxes run.
"""

import collections
import logging
import threading

from django import db

from parseq.core.models import Run

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.5


class CancelWatcher:
    def __init__(self, *, poll_seconds=POLL_SECONDS):
        self.poll_seconds = poll_seconds
        self.lock = threading.Lock()
        self.watched = {}  # run id -> Event, set once the run is cancelled
        self.watchers = collections.Counter()  # run id -> how many attempts in this process watch it
        self.thread = None

    def watch(self, run_id):
        """An Event that is set once the run is cancelled; call `forget` when the run is over."""
        with self.lock:
            event = self.watched.setdefault(run_id, threading.Event())
            self.watchers[run_id] += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._poll, name="parseq-cancel-watcher", daemon=True)
                self.thread.start()
        return event

    def forget(self, run_id):
        with self.lock:
            self.watchers[run_id] -= 1
            if self.watchers[run_id] <= 0:
                del self.watchers[run_id]
                self.watched.pop(run_id, None)

    def _poll(self):
        failures = 0  # in a row: an outage is logged once, and its end with the count
        while True:
            with self.lock:
                if not self.watched:
                    self.thread = None  # the next watch starts a new thread
                    return
                watched = dict(self.watched)
            try:
                # Cancelled, or deleted (its parser with it): either way its sandbox has nothing left to do.
                going = set(
                    Run.objects.filter(pk__in=list(watched))
                    .exclude(status=Run.Status.CANCELLED)
                    .values_list("pk", flat=True)
                )
                for run_id in watched.keys() - going:
                    watched[run_id].set()
                if failures:
                    logger.warning("could check for cancelled runs again after %d failed checks", failures)
                failures = 0
            except db.Error:  # a database hiccup must not end the runs: they are asked about again soon
                failures += 1
                if failures == 1:
                    logger.warning("could not check for cancelled runs; trying again quietly", exc_info=True)
            finally:
                db.connection.close()
            threading.Event().wait(self.poll_seconds)


watcher = CancelWatcher()
