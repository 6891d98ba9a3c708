"""A running run's log as it is printed: whole lines, masked, one UPDATE a round for all of a worker's runs."""

from django.test import TestCase

from parseq.core.live_logs import LiveLogs
from parseq.core.models import Run
from tests.helpers import TemporaryMediaMixin, make_parser


class LiveLogTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.parser = make_parser("def parse():\n    return {}\n", environment={"API_KEY": "s3cret-value"})
        self.logs = LiveLogs(interval=3600)  # rounds are driven by the test: write()
        self.logs.thread = object()  # no writing thread of its own

    def running(self, **fields):
        return Run.objects.create(parser=self.parser, status=Run.Status.RUNNING, **fields)

    def follow(self, run):
        return self.logs.follow(run_id=run.run_id, attempt=run.attempt, environment=self.parser.environment)

    def log_of(self, run):
        return Run.objects.get(pk=run.pk).log

    def test_what_several_runs_printed_is_appended_to_their_rows_in_one_statement(self):
        first, second = self.running(), self.running()
        self.follow(first).feed(b"fetched page 1\n")
        self.follow(second).feed(b"starting\nlogged in\n")

        with self.assertNumQueries(1):
            self.assertEqual(self.logs.write(), 2)

        self.assertEqual((self.log_of(first), self.log_of(second)), ("fetched page 1\n", "starting\nlogged in\n"))

    def test_only_whole_lines_go_out_and_the_rest_follows_with_its_newline(self):
        run = self.running()
        live = self.follow(run)
        live.feed(b"fetched 3 rows\nfetching pa")

        self.logs.write()
        self.assertEqual(self.log_of(run), "fetched 3 rows\n")

        live.feed(b"ge 2\n")
        self.logs.write()
        self.assertEqual(self.log_of(run), "fetched 3 rows\nfetching page 2\n")

    def test_a_round_with_nothing_new_costs_no_query(self):
        self.follow(self.running()).feed(b"no newline yet")

        with self.assertNumQueries(0):
            self.assertEqual(self.logs.write(), 0)

    def test_the_values_of_the_parsers_variables_are_masked(self):
        run = self.running()
        self.follow(run).feed(b"calling https://example.test/?key=s3cret-value\n")

        self.logs.write()

        self.assertNotIn("s3cret-value", self.log_of(run))
        self.assertIn("key=", self.log_of(run))

    def test_a_run_that_ended_or_moved_to_another_attempt_keeps_its_log(self):
        ended = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED, log="the final log\n")
        rerun = self.running(attempt=2, log="")
        self.follow(ended).feed(b"late line\n")
        self.logs.follow(run_id=rerun.run_id, attempt=1, environment={}).feed(b"from attempt 1\n")

        self.logs.write()

        self.assertEqual((self.log_of(ended), self.log_of(rerun)), ("the final log\n", ""))

    def test_a_parser_with_a_value_that_spans_lines_shows_no_live_log(self):
        # Masked round by round, a value in two lines could show in part (found by an attacker)
        run = self.running()
        live = self.logs.follow(run_id=run.run_id, attempt=1, environment={"KEY": "-----BEGIN\nsecret-----"})
        live.feed(b"token -----BEGIN\n")

        self.assertEqual(self.logs.write(), 0)
        self.assertEqual(self.log_of(run), "")

    def test_a_forgotten_run_is_written_no_more(self):
        run = self.running()
        live = self.follow(run)
        self.logs.forget(live)
        live.feed(b"after the end\n")

        self.assertEqual(self.logs.write(), 0)
