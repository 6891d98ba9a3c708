"""`manage.py prunerun`: deletes old runs by the retention rules and says what went."""

from datetime import timedelta
from io import StringIO

from django.core.management import CommandError, call_command
from django.test import TestCase, override_settings
from django.utils import timezone

from parseq.core.models import Run
from tests.helpers import TemporaryMediaMixin, make_parser

SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"


@override_settings(KEEP_RUNS=None, KEEP_DAYS=None, FAILED_RUNS_KEEP_FACTOR=3)
class PruneRunCommandTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        # Given cbr_rates with 10 runs beyond its limit of 1, and http_cat with 2 beyond its limit of 3
        self.cbr_rates = self.parser_with_runs("cbr_rates", runs=11, keep_last_runs=1)
        self.http_cat = self.parser_with_runs("http_cat", runs=5, keep_last_runs=3)

    def parser_with_runs(self, name, *, runs, **limits):
        parser = make_parser(SCRIPT, name=name, filename=f"{name}.py", **limits)
        now = timezone.now()
        for age in range(runs):
            run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED)
            Run.objects.filter(pk=run.pk).update(created_time=now - timedelta(hours=age))
        return parser

    def prunerun(self, *args):
        out = StringIO()
        call_command("prunerun", *args, stdout=out)
        return out.getvalue().strip()

    def test_the_command_deletes_the_runs_beyond_the_limits_and_prints_the_counts(self):
        output = self.prunerun()

        self.assertEqual(output, "Deleted 12 runs (and their files): cbr_rates 10, http_cat 2")
        self.assertEqual(self.cbr_rates.runs.count(), 1)
        self.assertEqual(self.http_cat.runs.count(), 3)

    def test_a_dry_run_says_what_would_be_deleted_and_deletes_nothing(self):
        output = self.prunerun("--dry-run")

        self.assertEqual(output, "Would delete 12 runs (and their files): cbr_rates 10, http_cat 2")
        self.assertEqual(Run.objects.count(), 16)

    def test_the_parser_option_limits_the_cleanup_to_the_named_parsers(self):
        self.parser_with_runs("open_meteo", runs=3, keep_last_runs=1)

        output = self.prunerun("--parser", "http_cat", "--parser", "open_meteo")

        self.assertEqual(output, "Deleted 4 runs (and their files): http_cat 2, open_meteo 2")
        self.assertEqual(self.cbr_rates.runs.count(), 11)

    def test_an_unknown_parser_name_is_an_error_that_names_it(self):
        with self.assertRaisesMessage(CommandError, "No parser named nope."):
            self.prunerun("--parser", "http_cat", "nope")

        self.assertEqual(Run.objects.count(), 16)

    def test_nothing_beyond_the_limits_says_so(self):
        self.prunerun()

        self.assertEqual(self.prunerun(), "Deleted 0 runs.")
