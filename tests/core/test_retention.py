"""Retention: finished runs beyond their parser's limits go, with their files; active runs never do."""

import os
from datetime import timedelta
from unittest import mock

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import RestrictedError
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from parseq.core import retention
from parseq.core.models import Run, ScriptVersion
from tests.helpers import TemporaryMediaMixin, make_parser

SCRIPT = "def parse():\n    return {'a.txt': b'a'}\n"
COMPLETED, ERROR, SKIPPED, CANCELLED = Run.Status.COMPLETED, Run.Status.ERROR, Run.Status.SKIPPED, Run.Status.CANCELLED
ENQUEUED, RUNNING = Run.Status.ENQUEUED, Run.Status.RUNNING
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@override_settings(KEEP_RUNS=None, KEEP_DAYS=None, FAILED_RUNS_KEEP_FACTOR=3)
class RetentionTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.now = timezone.now()

    def parser(self, name="demo", **limits):
        return make_parser(SCRIPT, name=name, filename=f"{name}.py", **limits)

    def add_run(self, parser, *, age, status=COMPLETED, files=()):
        """A run created `age` before now; its files, if any, are stored where the worker stores them."""
        entries = [{"name": name, "size": 1, "content_type": "text/plain"} for name in files]
        run = Run.objects.create(parser=parser, status=status, files=entries)
        Run.objects.filter(pk=run.pk).update(created_time=self.now - age)
        for name in files:
            default_storage.save(f"{run.run_id}/{name}", ContentFile(b"x"))
        return run

    def add_runs(self, parser, count, *, status=COMPLETED, every=HOUR, first_age=HOUR):
        """`count` runs, newest first, `every` apart."""
        return [self.add_run(parser, status=status, age=first_age + i * every) for i in range(count)]

    def prune(self, **options):
        return retention.prune_runs(now=self.now, **options)

    def assertRemaining(self, parser, expected_runs):
        remaining = set(Run.objects.filter(parser=parser).values_list("pk", flat=True))
        self.assertEqual(remaining, {run.pk for run in expected_runs})


class LimitTests(RetentionTestCase):
    def test_without_any_limit_every_run_is_kept_forever(self):
        parser = self.parser()
        runs = self.add_runs(parser, 5, every=365 * DAY)

        report = self.prune()

        self.assertEqual(report.total, 0)
        self.assertRemaining(parser, runs)

    def test_the_parsers_count_limit_keeps_its_newest_finished_runs(self):
        parser = self.parser(keep_last_runs=2)
        runs = self.add_runs(parser, 5)

        report = self.prune()

        self.assertEqual(report.deleted, {"demo": 3})
        self.assertRemaining(parser, runs[:2])

    def test_the_parsers_age_limit_deletes_the_runs_created_longer_ago(self):
        parser = self.parser(keep_days=7)
        young = [self.add_run(parser, age=HOUR), self.add_run(parser, age=7 * DAY - HOUR)]
        self.add_run(parser, age=7 * DAY + HOUR)
        self.add_run(parser, age=300 * DAY)

        report = self.prune()

        self.assertEqual(report.deleted, {"demo": 2})
        self.assertRemaining(parser, young)

    def test_a_run_goes_when_it_is_beyond_the_count_or_older_than_the_age_limit(self):
        # Given one parser whose runs are few but old, and one whose runs are young but many
        few_but_old = self.parser(name="few_but_old", keep_last_runs=3, keep_days=7)
        recent = self.add_run(few_but_old, age=HOUR)
        self.add_run(few_but_old, age=10 * DAY)
        many_but_young = self.parser(name="many_but_young", keep_last_runs=2, keep_days=7)
        young = self.add_runs(many_but_young, 3)

        # When the runs are pruned
        report = self.prune()

        # Then each loses the run that breaks one of its limits
        self.assertEqual(report.deleted, {"few_but_old": 1, "many_but_young": 1})
        self.assertRemaining(few_but_old, [recent])
        self.assertRemaining(many_but_young, young[:2])

    def test_an_enqueued_or_running_run_is_never_deleted_nor_counted(self):
        # Given a parser that keeps one run for a day, an old active run of each kind, and a newer one
        parser = self.parser(keep_last_runs=1, keep_days=1)
        active = [
            self.add_run(parser, status=ENQUEUED, age=timedelta(minutes=1)),
            self.add_run(parser, status=RUNNING, age=timedelta(minutes=2)),
            self.add_run(parser, status=ENQUEUED, age=100 * DAY),
            self.add_run(parser, status=RUNNING, age=100 * DAY),
        ]
        newest_finished = self.add_run(parser, age=HOUR)
        self.add_run(parser, age=2 * HOUR)

        self.prune()

        # Then the active runs stay, and do not take the place of the newest finished run
        self.assertRemaining(parser, [*active, newest_finished])

    def test_cancelled_and_skipped_runs_are_ranked_with_the_completed_ones(self):
        parser = self.parser(keep_last_runs=2)
        kept = [self.add_run(parser, status=COMPLETED, age=HOUR), self.add_run(parser, status=SKIPPED, age=2 * HOUR)]
        self.add_run(parser, status=CANCELLED, age=3 * HOUR)
        self.add_run(parser, status=COMPLETED, age=4 * HOUR)

        self.prune()

        self.assertRemaining(parser, kept)

    def test_runs_created_at_the_same_moment_are_counted_exactly(self):
        parser = self.parser(keep_last_runs=2)
        self.add_runs(parser, 5, every=timedelta(0))

        report = self.prune()

        self.assertEqual(report.total, 3)
        self.assertEqual(Run.objects.filter(parser=parser).count(), 2)

    def test_limits_too_large_for_dates_or_sql_keep_everything(self):
        parser = self.parser(keep_last_runs=2**31 - 1, keep_days=2**31 - 1)
        runs = self.add_runs(parser, 2, every=1000 * DAY) + self.add_runs(parser, 2, status=ERROR, every=1000 * DAY)

        with override_settings(FAILED_RUNS_KEEP_FACTOR=10**9):
            report = self.prune()

        self.assertEqual(report.total, 0)
        self.assertRemaining(parser, runs)


class GlobalLimitTests(RetentionTestCase):
    @override_settings(KEEP_RUNS=2)
    def test_the_global_count_limit_applies_to_a_parser_without_its_own(self):
        parser = self.parser()
        runs = self.add_runs(parser, 4)

        self.prune()

        self.assertRemaining(parser, runs[:2])

    @override_settings(KEEP_DAYS=7)
    def test_the_global_age_limit_applies_to_a_parser_without_its_own(self):
        parser = self.parser()
        young = self.add_run(parser, age=6 * DAY)
        self.add_run(parser, age=8 * DAY)

        self.prune()

        self.assertRemaining(parser, [young])

    @override_settings(KEEP_RUNS=1, KEEP_DAYS=7)
    def test_a_parsers_own_limit_wins_and_the_global_one_fills_the_other(self):
        # Given a parser that keeps three runs of its own, but sets no age limit
        parser = self.parser(keep_last_runs=3)
        kept = self.add_runs(parser, 2, every=DAY)
        self.add_run(parser, age=8 * DAY)

        self.prune()

        # Then it keeps more than the global one run, and the global age limit still applies
        self.assertRemaining(parser, kept)


class FailedRunTests(RetentionTestCase):
    def test_runs_in_error_are_ranked_among_themselves_and_kept_three_times_as_many(self):
        # Given a parser that keeps two runs, with completed and failed runs interleaved
        parser = self.parser(keep_last_runs=2)
        completed = self.add_runs(parser, 4, every=2 * HOUR)
        failed = self.add_runs(parser, 8, status=ERROR, every=2 * HOUR, first_age=2 * HOUR)

        self.prune()

        # Then the two newest completed runs stay, and the six newest failed ones
        self.assertRemaining(parser, completed[:2] + failed[:6])

    def test_runs_in_error_are_kept_three_times_as_long(self):
        parser = self.parser(keep_days=2)
        kept = [self.add_run(parser, status=ERROR, age=5 * DAY), self.add_run(parser, age=DAY)]
        self.add_run(parser, status=ERROR, age=7 * DAY)
        self.add_run(parser, age=3 * DAY)

        self.prune()

        self.assertRemaining(parser, kept)

    @override_settings(FAILED_RUNS_KEEP_FACTOR=1)
    def test_a_factor_of_one_treats_failed_runs_like_the_others(self):
        parser = self.parser(keep_last_runs=1, keep_days=2)
        kept = [self.add_run(parser, age=HOUR), self.add_run(parser, status=ERROR, age=HOUR)]
        self.add_run(parser, status=ERROR, age=2 * HOUR)
        self.add_run(parser, age=2 * HOUR)

        self.prune()

        self.assertRemaining(parser, kept)

    @override_settings(KEEP_RUNS=1, FAILED_RUNS_KEEP_FACTOR=2)
    def test_the_factor_multiplies_the_global_limits_too(self):
        parser = self.parser()
        failed = self.add_runs(parser, 3, status=ERROR)

        self.prune()

        self.assertRemaining(parser, failed[:2])


class DeletionTests(RetentionTestCase):
    def test_a_dry_run_counts_what_would_go_and_deletes_nothing(self):
        parser = self.parser(keep_last_runs=1)
        runs = self.add_runs(parser, 4)

        report = self.prune(dry_run=True)

        self.assertTrue(report.dry_run)
        self.assertEqual(report.deleted, {"demo": 3})
        self.assertEqual(str(report), "Would delete 3 runs (and their files): demo 3")
        self.assertRemaining(parser, runs)
        self.assertEqual(self.prune().deleted, report.deleted)

    def test_the_files_of_deleted_runs_leave_storage_and_those_of_kept_runs_stay(self):
        parser = self.parser(keep_last_runs=1)
        kept = self.add_run(parser, age=HOUR, files=["rows.csv"])
        deleted = self.add_run(parser, age=2 * HOUR, files=["rows.csv", "raw.bin"])
        self.assertTrue(os.path.exists(os.path.join(self.media_dir, str(deleted.run_id), "raw.bin")))

        with self.captureOnCommitCallbacks(execute=True):
            self.prune()

        self.assertTrue(os.path.exists(os.path.join(self.media_dir, str(kept.run_id), "rows.csv")))
        for name in ("rows.csv", "raw.bin"):
            self.assertFalse(os.path.exists(os.path.join(self.media_dir, str(deleted.run_id), name)))

    def test_runs_are_deleted_in_batches(self):
        parser = self.parser(keep_last_runs=1)
        runs = self.add_runs(parser, 6)
        table = Run._meta.db_table

        with mock.patch.object(retention, "DELETE_BATCH_SIZE", 2), CaptureQueriesContext(connection) as queries:
            report = self.prune()

        deletes = [query["sql"] for query in queries if query["sql"].startswith(f'DELETE FROM "{table}"')]
        self.assertEqual(len(deletes), 3)  # five runs, two at a time
        self.assertEqual(report.total, 5)
        self.assertRemaining(parser, runs[:1])

    def test_only_the_given_parsers_are_pruned(self):
        chosen, other = self.parser(name="chosen", keep_last_runs=1), self.parser(name="other", keep_last_runs=1)
        chosen_runs, other_runs = self.add_runs(chosen, 3), self.add_runs(other, 3)

        report = self.prune(parsers=[chosen])

        self.assertEqual(report.deleted, {"chosen": 2})
        self.assertRemaining(chosen, chosen_runs[:1])
        self.assertRemaining(other, other_runs)

    def test_the_report_counts_per_parser_by_name_and_in_total(self):
        http_cat, cbr_rates = self.parser(name="http_cat", keep_last_runs=1), self.parser(name="cbr_rates")
        self.add_runs(http_cat, 3)
        self.add_runs(cbr_rates, 11, every=DAY)
        self.parser(name="untouched", keep_last_runs=5)

        with override_settings(KEEP_DAYS=1):
            report = self.prune()

        self.assertEqual(report.deleted, {"cbr_rates": 10, "http_cat": 2})
        self.assertEqual(report.total, 12)
        self.assertEqual(str(report), "Deleted 12 runs (and their files): cbr_rates 10, http_cat 2")


class ScriptVersionRetentionTests(RetentionTestCase):
    def test_pruning_runs_keeps_every_script_version_and_a_version_a_run_refers_to_cannot_be_deleted(self):
        parser = self.parser(keep_last_runs=1)
        first = ScriptVersion.objects.create(parser=parser, number=1, source=SCRIPT, filename="demo.py", sha256="a")
        second = ScriptVersion.objects.create(parser=parser, number=2, source=SCRIPT, filename="demo.py", sha256="b")
        old, kept = self.add_run(parser, age=2 * DAY), self.add_run(parser, age=DAY)
        Run.objects.filter(pk=old.pk).update(script_version=first)
        Run.objects.filter(pk=kept.pk).update(script_version=second)

        self.prune()

        self.assertRemaining(parser, [kept])
        self.assertEqual(set(ScriptVersion.objects.values_list("number", flat=True)), {1, 2})
        with self.assertRaises(RestrictedError):
            second.delete()
        self.assertTrue(ScriptVersion.objects.filter(pk=second.pk).exists())
