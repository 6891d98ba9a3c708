"""A running run's log, as it is printed: one worker process writes what its runs printed, all at once.

Each run's output reaches a LiveLog as the sandbox prints it (runner.run_script's `log_sink`). One
thread per worker process appends what came since its last round to the runs' rows, every
PARSEQ_LIVE_LOG_MS, in one UPDATE for all of them, on a connection it closes again: the cost is a
statement per process per round, not per run, and no connection is held while sandboxes run.

Only whole lines go out, each round's text with the parser's variables' values masked: a value is
never shown in part because a round ended in its middle; a parser with a value that spans lines
shows no live log. The run's final log, written as it ends, replaces the live one.
"""

import logging
import threading

from django import db
from django.conf import settings
from django.db.models import Case, F, IntegerField, TextField, Value, When
from django.db.models.functions import Concat
from django.utils import timezone

from parseq.core.environment import mask_values
from parseq.core.models import Run

logger = logging.getLogger(__name__)


class LiveLog:
    """What one attempt of a run has printed, and how much of it has been written to its row."""

    def __init__(self, *, run_id, attempt, environment):
        self.run_id, self.attempt, self.environment = run_id, attempt, environment
        self.lock = threading.Lock()
        self.printed = bytearray()
        self.written = 0  # bytes of `printed` already appended to the row

    def feed(self, chunk):
        with self.lock:
            self.printed += chunk

    def unwritten_lines(self):
        """(the whole lines printed since those written, masked, or ""; where they end, for `written`).

        A variable whose value spans lines (a PEM key) could be shown in part by a round that ends between
        them: such a parser's runs show their log when they end, masked as a whole.
        """
        if any("\n" in str(value) for value in (self.environment or {}).values()):
            return "", self.written
        with self.lock:
            end = self.printed.rfind(b"\n") + 1
            if end <= self.written:
                return "", end
            # A newline never falls inside a UTF-8 character: the cut splits none.
            text = bytes(self.printed[self.written : end]).decode("utf-8", errors="replace")
        return mask_values(text, environment=self.environment).replace("\x00", "\ufffd"), end


class LiveLogs:
    """The live logs of a worker process's runs, and the thread that writes them."""

    def __init__(self, *, interval=None):
        self.interval = interval
        self.lock = threading.Lock()
        self.logs = {}  # (run id, attempt) -> LiveLog
        self.thread = None

    def follow(self, *, run_id, attempt, environment):
        """A LiveLog for this attempt, written until `forget`; starts the writing thread if need be."""
        live = LiveLog(run_id=run_id, attempt=attempt, environment=environment)
        with self.lock:
            self.logs[(run_id, attempt)] = live
            if self.thread is None:
                self.thread = threading.Thread(target=self._write_forever, name="parseq-live-logs", daemon=True)
                self.thread.start()
        return live

    def forget(self, live):
        with self.lock:
            self.logs.pop((live.run_id, live.attempt), None)

    def write(self):
        """Append what each followed run printed since the last round to its row: one UPDATE; how many runs."""
        with self.lock:
            followed = list(self.logs.values())
        news = [(live, *live.unwritten_lines()) for live in followed]
        news = [(live, text, end) for live, text, end in news if text]
        if not news:
            return 0
        appended = Case(
            *[
                When(pk=live.run_id, then=Concat(F("log"), Value(text, output_field=TextField())))
                for live, text, _ in news
            ],
            default=F("log"),
        )
        attempts = Case(
            *[When(pk=live.run_id, then=Value(live.attempt)) for live, _, _ in news], output_field=IntegerField()
        )
        # Only while each is still running the attempt that printed it: its end's log replaces the live one.
        running = Run.objects.filter(
            pk__in=[live.run_id for live, _, _ in news], status=Run.Status.RUNNING, attempt=attempts
        )
        updated = running.update(log=appended, updated_time=timezone.now())
        for live, _, end in news:
            live.written = end  # only now: a round the database missed is written with the next one
        return updated

    def _write_forever(self):
        failures = 0
        while True:
            with self.lock:
                if not self.logs:
                    self.thread = None  # the next run to follow starts a new thread
                    return
            try:
                self.write()
                if failures:
                    logger.warning("could write the runs' live logs again after %d failed rounds", failures)
                failures = 0
            except db.Error:  # the final log is written when the run ends; a lost round costs only liveness
                failures += 1
                if failures == 1:
                    logger.warning("could not write the runs' live logs; trying again quietly", exc_info=True)
            finally:
                db.connections.close_all()
            threading.Event().wait((self.interval or settings.LIVE_LOG_MS) / 1000)


live_logs = LiveLogs()
