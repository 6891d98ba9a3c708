"""The run list as it must work at a million runs: search through indexes, a capped count, one parser's filter."""

import uuid
from datetime import timedelta
from unittest import mock

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from parseq.core import selectors, services
from parseq.core.admin.common import CappedCountPaginator
from parseq.core.models import AuditEntry, Run
from tests.helpers import TemporaryMediaMixin, make_parser, requires_postgresql

SOURCE = "def parse():\n    return {}\n"
RUNS = reverse("admin:core_run_changelist")


class RunListTestCase(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.user = get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        self.client.force_login(self.user)
        self.weather = make_parser(SOURCE, name="weather_oslo", filename="weather.py")
        self.rates = make_parser(SOURCE, name="exchange_rates", filename="rates.py")

    def run_of(self, parser, **fields):
        return Run.objects.create(parser=parser, trigger=Run.Trigger.API, **fields)

    def listed(self, query):
        """The runs the list shows for `query`."""
        response = self.client.get(RUNS, query)
        self.assertEqual(response.status_code, 200)
        return set(response.context["cl"].result_list)


class RunSearchTests(RunListTestCase):
    def test_the_first_eight_digits_of_an_id_find_its_run(self):
        wanted = self.run_of(self.weather, run_id=uuid.UUID("3f2a9c10-0000-4000-8000-000000000001"))
        self.run_of(self.weather, run_id=uuid.UUID("3f2a9c11-0000-4000-8000-000000000001"))

        self.assertEqual(self.listed({"q": "3f2a9c10"}), {wanted})
        self.assertEqual(self.listed({"q": "3F2A9C10-0000-4000"}), {wanted})
        self.assertEqual(self.listed({"q": str(wanted.run_id)}), {wanted})

    def test_a_word_of_a_parsers_name_finds_its_runs(self):
        ours = {self.run_of(self.weather), self.run_of(self.weather)}
        self.run_of(self.rates)

        self.assertEqual(self.listed({"q": "OSLO"}), ours)

    def test_a_word_of_an_error_finds_the_runs_that_failed_so(self):
        timed_out = self.run_of(self.rates, status=Run.Status.ERROR, error="ReadTimeout: the site took too long")
        self.run_of(self.rates, status=Run.Status.ERROR, error="ConnectionError: refused")

        self.assertEqual(self.listed({"q": "readtimeout"}), {timed_out})

    def test_every_word_must_match(self):
        failed = self.run_of(self.weather, status=Run.Status.ERROR, error="ReadTimeout")
        self.run_of(self.rates, status=Run.Status.ERROR, error="ReadTimeout")

        self.assertEqual(self.listed({"q": "weather readtimeout"}), {failed})
        self.assertEqual(self.listed({"q": "weather nothing-like-this"}), set())


class RunFilterTests(RunListTestCase):
    def test_the_runs_of_one_parser_are_listed_with_its_name_in_the_side_bar_and_no_other_parser(self):
        ours = self.run_of(self.weather)
        self.run_of(self.rates)

        response = self.client.get(RUNS, {"parser__id__exact": self.weather.pk})

        self.assertEqual(set(response.context["cl"].result_list), {ours})
        self.assertContains(response, "weather_oslo")
        self.assertNotContains(response, "exchange_rates")  # thousands of parsers would be thousands of links

    def test_a_parser_id_that_is_not_one_is_the_admins_bad_filter_page_not_a_server_error(self):
        for value in ["abc", "-1", "99999999999999999999999"]:
            with self.subTest(value=value):
                response = self.client.get(RUNS, {"parser__id__exact": value})

                self.assertEqual(response.status_code, 302)
                self.assertIn("e=1", response.url)

    def test_the_runs_of_the_past_seven_days_leave_older_ones_out(self):
        recent = self.run_of(self.weather)
        old = self.run_of(self.weather)
        Run.objects.filter(pk=old.pk).update(created_time=timezone.now() - timedelta(days=30))
        today = timezone.localdate()

        shown = self.listed({"created_time__gte": today - timedelta(days=7), "created_time__lt": today + timedelta(1)})

        self.assertEqual(shown, {recent})


class RunCountTests(RunListTestCase):
    def test_past_the_cap_the_list_says_there_are_more_rather_than_counting_them(self):
        Run.objects.bulk_create(Run(parser=self.weather, trigger=Run.Trigger.API) for _ in range(8))

        with mock.patch.object(CappedCountPaginator, "CAP", 5):
            response = self.client.get(RUNS)

        self.assertContains(response, "more than 5 runs")
        self.assertEqual(len(response.context["cl"].result_list), 8)

    def test_under_the_cap_the_list_counts_exactly(self):
        Run.objects.bulk_create(Run(parser=self.weather, trigger=Run.Trigger.API) for _ in range(3))

        response = self.client.get(RUNS)

        self.assertContains(response, "3 runs")


class AllRunsFingerprintTests(RunListTestCase):
    def test_it_changes_when_a_run_changes_or_a_person_deletes_one_and_not_otherwise(self):
        run = self.run_of(self.weather)
        before = selectors.live_fingerprint(scope="runs")
        self.assertEqual(selectors.live_fingerprint(scope="runs"), before)

        Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, updated_time=timezone.now())
        changed = selectors.live_fingerprint(scope="runs")
        self.assertNotEqual(changed, before)

        services.delete_run(run=self.run_of(self.rates), user=self.user, source=AuditEntry.Source.ADMIN)
        self.assertNotEqual(selectors.live_fingerprint(scope="runs"), changed)


@requires_postgresql
class RunListIndexTests(RunListTestCase):
    def setUp(self):
        super().setUp()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: the planner would read them whole

    def test_a_search_of_errors_reads_the_errors_trigram_index(self):
        runs = selectors.runs_matching(runs=Run.objects.all(), text="timeout")

        self.assertIn("core_run_error_trigrams", runs.explain())

    def test_postgresql_knows_how_common_an_errors_word_is(self):
        # Without statistics of UPPER(error) it takes every word for a rare one, and sorts 100,000 runs for a page
        with connection.cursor() as cursor:
            cursor.execute("SELECT stxname FROM pg_statistic_ext WHERE stxname = 'core_run_error_upper'")
            self.assertEqual(cursor.fetchall(), [("core_run_error_upper",)])

    def test_the_newest_change_of_all_runs_reads_an_index(self):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN SELECT max(updated_time) FROM core_run")
            self.assertIn("core_run_updated_time", "\n".join(row[0] for row in cursor.fetchall()))
