"""Log lines that say which run they are about, as JSON objects (production) or plain text (`make run`)."""

import contextlib
import contextvars
import json
import logging
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
