"""Dramatiq middleware of Parseq's workers."""

import logging
import threading

from django import db
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class LostRunReaper(Middleware):
    """Every worker process, now and then, ends the runs whose worker died and removes what it left on disk."""

    def __init__(self):
        self.stopping = None

    def after_worker_boot(self, broker, worker):
        self.stopping = threading.Event()
        threading.Thread(
            target=self.reap_until_stopped, args=(self.stopping,), name="parseq-reaper", daemon=True
        ).start()

    def before_worker_shutdown(self, broker, worker):
        if self.stopping is not None:
            self.stopping.set()

    def reap_until_stopped(self, stopping):
        from django.conf import settings

        from parseq.core.execution import remove_stale_temporary_directories
        from parseq.core.housekeeping import fail_lost_runs

        while True:
            try:
                count = fail_lost_runs()
                if count:
                    logger.warning("ended %d lost run(s) in error", count)
                remove_stale_temporary_directories()
            except Exception:  # the reaper must outlive a database hiccup
                logger.exception("could not end lost runs")
            finally:
                db.connections.close_all()
            if stopping.wait(settings.REAPER_INTERVAL):
                return


class CloseDbConnections(Middleware):
    """A worker thread gives its database connections back once each message is handled.

    A worker waits for its next message for as long as it likes; keeping a connection meanwhile
    (as CONN_MAX_AGE would) costs every host processes x threads idle connections, and a few
    hosts would use up PostgreSQL's max_connections with nothing running.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):
        db.connections.close_all()

    after_skip_message = after_process_message
