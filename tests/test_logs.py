"""Logs: one JSON object a line, and the run's id on every line logged while a worker runs it."""

import io
import json
import logging

from django.test import TransactionTestCase, tag

from parseq.core import services
from parseq.core.models import Run
from parseq.logs import JsonFormatter, PlainFormatter, RunIdFilter
from tests.helpers import TemporaryMediaMixin, in_process_worker, make_parser, wait_until


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
class RunLogTests(TemporaryMediaMixin, TransactionTestCase):
    def capture(self, formatter):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RunIdFilter())
        logger = logging.getLogger("parseq")
        logger.addHandler(handler)
        previous = logger.level
        logger.setLevel(logging.INFO)
        self.addCleanup(logger.setLevel, previous)
        self.addCleanup(logger.removeHandler, handler)
        return stream

    def run_through_the_worker(self, source):
        parser = make_parser(source)
        with in_process_worker():
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=run.pk).is_finished, message="the run to end")
        return run

    def test_every_line_a_worker_logs_about_a_run_is_json_with_the_run_id(self):
        stream = self.capture(JsonFormatter())

        run = self.run_through_the_worker("def parse():\n    return {'a.txt': b'a'}\n")

        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        about_the_run = [line for line in lines if line["logger"].startswith("parseq.core.")]
        self.assertGreaterEqual(len(about_the_run), 2, lines)  # started, and ended
        self.assertEqual({line.get("run_id") for line in about_the_run}, {str(run.run_id)})
        self.assertEqual({"time", "level", "logger", "message", "run_id"} - set(about_the_run[0]), set())

    def test_plain_lines_name_the_run_too(self):
        stream = self.capture(PlainFormatter())

        run = self.run_through_the_worker("def parse():\n    raise ValueError('boom')\n")

        self.assertIn(f"[run {run.run_id}]", stream.getvalue())
