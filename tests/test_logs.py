"""Logs: one JSON object a line, and the run's id on every line logged while a worker runs it."""

import io
import json
import logging

from django.test import SimpleTestCase, TransactionTestCase, tag

from parseq.core import services
from parseq.core.models import Run
from parseq.logs import JsonFormatter, PlainFormatter, RepeatedBrokerErrors, RunIdFilter
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
        # The worker's own lines (its shutdown, in parseq.core.middleware) are about no run.
        about_the_run = [
            line for line in lines if line["logger"].startswith("parseq.core.") and "middleware" not in line["logger"]
        ]
        self.assertGreaterEqual(len(about_the_run), 2, lines)  # started, and ended
        self.assertEqual({line.get("run_id") for line in about_the_run}, {str(run.run_id)})
        self.assertEqual({"time", "level", "logger", "message", "run_id"} - set(about_the_run[0]), set())

    def test_plain_lines_name_the_run_too(self):
        stream = self.capture(PlainFormatter())

        run = self.run_through_the_worker("def parse():\n    raise ValueError('boom')\n")

        self.assertIn(f"[run {run.run_id}]", stream.getvalue())


class BrokerOutageLogTests(SimpleTestCase):
    """Dramatiq's consumers log a connection error every 3 s per queue while the broker is away: once is enough."""

    def setUp(self):
        self.now = 0.0
        self.outage = RepeatedBrokerErrors(quiet_seconds=10, clock=lambda: self.now)

    def record(self, name, message, level=logging.CRITICAL):
        return logging.LogRecord(name, level, __file__, 1, message, (), None)

    def consumer_error(self):
        error = "Consumer encountered a connection error: %s"
        return self.record("dramatiq.worker.ConsumerThread(runs)", error)

    def test_the_first_connection_error_of_an_outage_is_logged_and_the_repeats_are_counted_not_logged(self):
        admitted = []
        for second in range(0, 30, 3):
            self.now = second
            admitted.append(self.outage.admit(self.consumer_error()))
            admitted.append(
                self.outage.admit(
                    self.record(
                        "dramatiq.worker.ConsumerThread(runs.DQ)", "Restarting consumer in %0.2f seconds.", logging.INFO
                    )
                )
            )

        self.assertEqual(admitted, [True] + [False] * 19)
        self.assertTrue(self.outage.admit(self.record("parseq.core.execution", "running parser")))

    def test_once_the_errors_stop_one_line_says_how_long_they_lasted_and_how_many_were_left_out(self):
        for second in (0, 3, 6, 9):
            self.now = second
            self.outage.admit(self.consumer_error())

        self.now = 15  # only 6 s of quiet: the outage may go on
        with self.assertNoLogs("parseq.logs"):
            self.outage.report_if_over()
        self.now = 20
        with self.assertLogs("parseq.logs", "WARNING") as logged:
            self.outage.report_if_over()

        self.assertEqual(
            logged.records[0].getMessage(),
            "the broker's connection errors stopped after 9 s; 3 more such lines were left out",
        )
        # And the next outage's first error is logged again
        self.assertTrue(self.outage.admit(self.consumer_error()))
