"""Log lines that say which run they are about, as JSON objects (production) or plain text (`make run`)."""

import contextlib
import contextvars
import json
import logging
import threading
import time
from datetime import UTC, datetime

current_run_id = contextvars.ContextVar("parseq_run_id", default=None)


@contextlib.contextmanager
def about_run(run_id):
    """Every line logged in this block, by this thread, carries `run_id`."""
    token = current_run_id.set(str(run_id))
    try:
        yield
    finally:
        current_run_id.reset(token)


class RunIdFilter(logging.Filter):
    """Adds `run_id` to every record (None outside a run), for the formatters below."""

    def filter(self, record):
        record.run_id = current_run_id.get()
        return True


class PlainFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s")

    def format(self, record):
        run_id = getattr(record, "run_id", None)
        record.run = f" [run {run_id}]" if run_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: what log collectors (Loki, CloudWatch, Yandex Cloud Logging) parse as is."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        run_id = getattr(record, "run_id", None)
        if run_id:
            entry["run_id"] = run_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RepeatedBrokerErrors:
    """Dramatiq's consumers log a connection error, and that they will restart, every 3 s for each queue for
    as long as the broker is away: a dozen lines every 3 s per worker process. The first error of an outage
    goes to the log; the rest are counted, and once none has come for `quiet_seconds`, one line says how
    many were left out and how long the errors lasted (`report_if_over`, called now and then).
    """

    PREFIXES = ("Consumer encountered a connection error", "Restarting consumer in")

    def __init__(self, *, quiet_seconds=10, clock=time.monotonic):
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.first = self.last = None
        self.left_out = 0

    def admit(self, record):
        """Whether `record` goes to the log."""
        if not record.name.startswith("dramatiq.worker.ConsumerThread") or not str(record.msg).startswith(
            self.PREFIXES
        ):
            return True
        with self.lock:
            now = self.clock()
            if self.first is None:
                self.first = self.last = now
                return True
            self.last = now
            self.left_out += 1
            return False

    def report_if_over(self):
        with self.lock:
            if self.first is None or self.clock() - self.last < self.quiet_seconds:
                return
            lasted, left_out = self.last - self.first, self.left_out
            self.first = self.last = None
            self.left_out = 0
        logging.getLogger(__name__).warning(
            "the broker's connection errors stopped after %.0f s; %d more such lines were left out", lasted, left_out
        )


broker_errors = RepeatedBrokerErrors()


class RepeatedBrokerErrorsFilter(logging.Filter):
    def filter(self, record):
        return broker_errors.admit(record)
