"""Dramatiq middleware of Parseq's workers."""

import logging
import os
import threading
import time

from django import db
from dramatiq.common import iter_queue
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class BoundedDatabaseWaits(Middleware):
    """A worker's queries fail after PARSEQ_DATABASE_TIMEOUT of silence from a frozen database (parseq/database.py)."""

    def before_worker_boot(self, broker, worker):
        from parseq.database import bound_waits_of_this_service

        bound_waits_of_this_service()


class RunSlots(Middleware):
    """A worker process takes as many runs at once as it has threads (PARSEQ_WORKER_SLOTS, parseq/worker)."""

    def before_worker_boot(self, broker, worker):  # before its threads take their first messages
        from parseq.core.slots import slots

        slots.open(runs=worker.worker_threads)

    def after_worker_shutdown(self, broker, worker):
        from parseq.core.slots import slots

        slots.close()


class LostRunReaper(Middleware):
    """Every worker process keeps its runs' leases and, now and then, looks after the runs of workers that died.

    Two threads: the heartbeat renews the leases of this process's running runs every
    PARSEQ_HEARTBEAT_SECONDS; the reaper, every PARSEQ_REAPER_INTERVAL, reruns (or ends) the runs
    whose lease has lapsed, sends again the runs left waiting `enqueued`, and removes what killed
    workers left on disk. An outage is logged once, and its end with the number of failed checks.
    """

    def __init__(self):
        self.stopping = {}

    def after_worker_boot(self, broker, worker):
        from django.conf import settings

        reaper = Reaper()
        threads = {
            "parseq-heartbeat": (settings.HEARTBEAT_SECONDS, heartbeat, "renew the runs' leases", None),
            "parseq-reaper": (settings.REAPER_INTERVAL, reaper.check, "check the runs", reaper.failed),
        }
        for name, (seconds, action, what, after) in threads.items():
            stopping = self.stopping[name] = threading.Event()
            arguments = {"seconds": seconds, "action": action, "stopping": stopping, "what": what, "after": after}
            threading.Thread(target=every, kwargs=arguments, name=name, daemon=True).start()

    def before_worker_shutdown(self, broker, worker):
        if "parseq-reaper" in self.stopping:
            self.stopping["parseq-reaper"].set()

    def after_worker_shutdown(self, broker, worker):
        # Only now: dramatiq waits for the runs in progress after before_worker_shutdown, and their
        # leases must hold until they end, or another worker would start them again meanwhile.
        if "parseq-heartbeat" in self.stopping:
            self.stopping["parseq-heartbeat"].set()


def heartbeat():
    """Renew this process's leases; first, say if the broker's connection errors have stopped (parseq/logs.py)."""
    from parseq.core.execution import renew_leases
    from parseq.logs import broker_errors

    broker_errors.report_if_over()
    renew_leases()


class Reaper:
    """One check of the reaper. It acts on lapsed leases only once it has reached the database, answering
    promptly and checking regularly, for a whole PARSEQ_LOST_RUN_SECONDS: after an outage, a lock that held
    the runs' table or a pause of this process, the live workers renew their leases first
    (parseq/core/lifecycle.py says why that keeps a rerun from overlapping a live attempt).
    """

    def __init__(self, *, clock=time.monotonic):
        self.clock = clock
        self.reachable_since = None
        self.last_check = None

    def check(self):
        from django.conf import settings

        from parseq.core.execution import remove_stale_temporary_directories
        from parseq.core.housekeeping import rerun_or_fail_lost_runs, resend_waiting_runs

        began = self.clock()
        expected = settings.REAPER_INTERVAL + settings.HEARTBEAT_SECONDS
        late = self.last_check is not None and began - self.last_check > expected  # this process was paused
        self.last_check = began
        resend_waiting_runs()  # also a probe: a database that takes long to answer may hold heartbeats up too
        if late or self.clock() - began > settings.HEARTBEAT_SECONDS:
            self.reachable_since = None
        if self.reachable_since is None:
            self.reachable_since = self.clock()
        elif self.clock() - self.reachable_since >= settings.LOST_RUN_SECONDS:
            rerun_or_fail_lost_runs()
        remove_stale_temporary_directories()

    def failed(self):
        self.reachable_since = None


def every(seconds, action, *, stopping, what, after=None):
    """Call `action` every `seconds` until `stopping` is set, closing the thread's connections after each call.

    A failure is logged once, and the recovery with the number of failed calls; `after` is told of each.
    """
    failures = 0
    while True:
        try:
            action()
            if failures:
                logger.warning("could %s again after %d failed attempt(s)", what, failures)
            failures = 0
        except Exception:  # the thread must outlive a database hiccup
            failures += 1
            if after:
                after()
            if failures == 1:
                logger.exception("could not %s; trying again quietly until it works", what)
        finally:
            db.connections.close_all()
        if stopping.wait(seconds):
            return


class Draining(Middleware):
    """A worker process told to stop (SIGTERM, or its master's shutdown) hands its work to the others at once.

    Dramatiq lets the runs in progress finish, up to `rundramatiq --worker-shutdown-timeout`, and only
    then gives back the messages it prefetched; meanwhile they wait, although other workers are idle.
    Instead: no new run is claimed (execution.execute_run sends it again), each prefetched message is
    sent again at once, and a run still going after PARSEQ_DRAIN_SECONDS has its sandbox stopped and
    is handed back as its next attempt. A watchdog ends the process should its shutdown then hang.
    """

    def __init__(self):
        self.consumers_stopping = threading.Event()
        self.shut_down = threading.Event()  # a new one each shutdown: an in-process worker may start again

    def before_worker_shutdown(self, broker, worker):
        from django.conf import settings

        from parseq.core.execution import drain

        drain.begin(seconds=settings.DRAIN_SECONDS)
        logger.warning("stopping: no new run; runs still going in %d s are handed back", settings.DRAIN_SECONDS)
        arguments = {"worker": worker, "stopping": self.consumers_stopping}
        threading.Thread(target=give_back_prefetched, kwargs=arguments, name="parseq-drain", daemon=True).start()
        self.shut_down = threading.Event()  # this shutdown's: set once it has ended (after_worker_shutdown)
        watchdog = {"seconds": settings.DRAIN_SECONDS + SHUTDOWN_HANG_SECONDS, "shut_down": self.shut_down}
        threading.Thread(target=end_a_hung_shutdown, kwargs=watchdog, name="parseq-watchdog", daemon=True).start()

    def before_consumer_thread_shutdown(self, broker, thread):
        # The consumers stop once the runs in progress have: what they hold then goes back as they close.
        self.consumers_stopping.set()

    def after_worker_shutdown(self, broker, worker):
        from parseq.core.execution import drain

        drain.end()  # an in-process worker (tests, runparseq) may be started again
        self.shut_down.set()


def give_back_prefetched(*, worker, stopping, every=0.2):
    """Until `stopping` is set, send again each message `worker` prefetched and no thread took: another
    worker takes the run at once.

    The message itself stays unacknowledged here, so the broker sends this worker nothing more (its
    prefetch stays full) and gives it back when the worker's connection closes; that late duplicate
    finds its run claimed already and is dropped (Run.objects.claim). A copy that cannot be sent (the
    broker is away) is only that late message, then.
    """
    while True:
        for item in iter_queue(worker.work_queue):
            try:
                worker.broker.enqueue(item.message.copy())
            except Exception:  # noqa: BLE001 - the original goes back to the queue when this worker disconnects
                logger.warning(
                    "could not hand back message %s; it goes back when this worker disconnects", item.message
                )
            finally:
                worker.work_queue.task_done()
        if stopping.wait(every):
            return


# How long past PARSEQ_DRAIN_SECONDS a stopping worker process may take to end before it is ended: closing
# its connection to a frozen broker waits for an answer that does not come.
SHUTDOWN_HANG_SECONDS = 30


def end_a_hung_shutdown(*, seconds, shut_down):
    """Exit the process if its worker has not shut down `seconds` after it began to, once no run is left.

    By then its runs have ended or been handed back; what it still holds (unacknowledged messages) the
    broker gives back once the connection is gone.
    """
    from parseq.core.execution import has_leases

    if shut_down.wait(seconds):
        return
    while has_leases():  # an outcome still being recorded (a database outage) is worth waiting for
        time.sleep(1)
    logger.error("the worker's shutdown hung for %d s (a broker that does not answer?); exiting", seconds)
    logging.shutdown()
    os._exit(1)


class CloseDbConnections(Middleware):
    """A worker thread gives its database connections back once each message is handled.

    A worker waits for its next message for as long as it likes; keeping a connection meanwhile
    (as CONN_MAX_AGE would) costs every host processes x threads idle connections, and a few
    hosts would use up PostgreSQL's max_connections with nothing running.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):
        db.connections.close_all()

    after_skip_message = after_process_message


class DeadLetteredRuns(Middleware):
    """A run whose message went to the dead-letter queue (its retries used up, as in a long database outage)
    says so: logged with its run id and, if it is still `enqueued`, noted on the run, which the reaper
    sends again after PARSEQ_RESEND_ENQUEUED_AFTER seconds (a claimed run is its lease's business).
    """

    def after_nack(self, broker, message):
        if message.actor_name != "execute_run" or not message.args:
            return
        from parseq.core.models import Run
        from parseq.logs import about_run

        run_id = message.args[0]
        cause = "".join((message.options.get("traceback") or "").strip().splitlines()[-1:]) or "no traceback"
        why = f"dead-lettered after {message.options.get('retries', 0)} attempts ({cause})"
        with about_run(run_id):
            logger.error("run %s: its message was %s", run_id, why)
            try:
                Run.objects.note_dead_lettered(run_id=run_id, why=why)
            except db.Error:
                logger.warning("could not note on run %s that its message was dead-lettered", run_id)
            finally:
                db.connections.close_all()
