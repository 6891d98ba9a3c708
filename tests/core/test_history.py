"""How runs have gone, drawn on the server as SVG: a parser's last runs and daily success, the dashboard's last day."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import SimpleTestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from parseq.core.charts import HEIGHT, Column, rectangles
from parseq.core.models import Run
from tests.core.test_control_room import ControlRoomTestCase


class RectangleTests(SimpleTestCase):
    def test_the_tallest_column_fills_the_height_and_the_others_scale_with_it(self):
        bars = rectangles([Column([(2, "completed")], "a"), Column([(4, "error")], "b")], width=100, height=100)

        self.assertEqual([(bar.height, bar.y, bar.status) for bar in bars], [(50, 50, "completed"), (100, 0, "error")])
        self.assertEqual([bar.x for bar in bars], [0, 50])

    def test_segments_stack_bottom_first_and_empty_ones_are_not_drawn(self):
        [bottom, top] = rectangles([Column([(3, "completed"), (0, "skipped"), (1, "error")], "13:00")], height=80)

        self.assertEqual((bottom.status, bottom.y, bottom.height), ("completed", 20, 60))
        self.assertEqual((top.status, top.y, top.height), ("error", 0, 20))

    def test_with_slots_a_few_columns_keep_their_width_to_the_right(self):
        bars = rectangles([Column([(1, "completed")], "a")], slots=4, width=100, height=10)

        self.assertEqual([(bar.x, bar.width) for bar in bars], [(75, 23)])

    def test_a_chart_of_nothing_draws_nothing(self):
        self.assertEqual(rectangles([]), [])
        self.assertEqual([bar.height for bar in rectangles([Column([(0, "rate")], "day")], scale_to=100)], [])


class HistoryPageTests(ControlRoomTestCase):
    def finished_run(self, status, seconds, *, days_ago=0):
        now = timezone.now() - timedelta(days=days_ago)
        run = Run.objects.create(
            parser=self.parser, status=status, started_time=now - timedelta(seconds=seconds), finished_time=now
        )
        Run.objects.filter(pk=run.pk).update(created_time=now - timedelta(seconds=seconds))
        return run

    def test_the_parser_page_charts_its_runs_durations_by_status_and_its_daily_success(self):
        slow = self.finished_run(Run.Status.COMPLETED, 20)
        failed = self.finished_run(Run.Status.ERROR, 5)
        self.finished_run(Run.Status.COMPLETED, 10, days_ago=1)

        page = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk])).content.decode()

        self.assertIn("Duration of the last 3 finished runs, by status (the tallest: 20.0 s)", page)
        self.assertIn(f'<a href="{reverse("admin:core_run_change", args=[slow.run_id])}">', page)
        tallest = f'height="{HEIGHT}.0" class="parseq-bar parseq-bar-completed">'
        self.assertIn(f"{tallest}<title>{str(slow.run_id)[:8]}: completed, 20.0 s", page)
        self.assertIn(f"<title>{str(failed.run_id)[:8]}: error, 5.0 s", page)
        today = timezone.localdate()
        self.assertIn(f"<title>{today}: 1 of 2 succeeded (50%)</title>", page)
        self.assertIn(f"<title>{today - timedelta(days=1)}: 1 of 1 succeeded (100%)</title>", page)
        self.assertNotIn("<script", page.split("parseq-charts")[1].split("</div>")[0])

    def test_the_charts_cost_the_same_few_queries_however_many_runs_there_are(self):
        self.finished_run(Run.Status.COMPLETED, 1)
        self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk]))  # fills the caches
        with CaptureQueriesContext(connection) as few:
            self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk]))
        for _ in range(30):
            self.finished_run(Run.Status.COMPLETED, 1)
        with CaptureQueriesContext(connection) as many:
            self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk]))

        self.assertEqual(len(many), len(few), [q["sql"][:150] for q in many])  # not one per run (found by an attacker)

    def test_who_may_not_read_runs_sees_no_runs_charts_or_errors_on_a_parsers_page(self):
        Run.objects.create(parser=self.parser, status=Run.Status.ERROR, error="internal-db.corp:5432 refused")
        reader = get_user_model().objects.create_user("reader", is_staff=True)
        reader.user_permissions.add(Permission.objects.get(codename="view_parser"))
        self.client.force_login(reader)

        page = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk])).content.decode()

        self.assertIn("rates", page)
        self.assertNotIn("internal-db.corp", page)
        self.assertNotIn("parseq-chart", page)

    def test_the_dashboard_charts_the_last_24_hours_of_runs_by_status(self):
        for status in (Run.Status.COMPLETED, Run.Status.COMPLETED, Run.Status.ERROR):
            Run.objects.create(parser=self.parser, status=status)

        page = self.client.get(reverse("admin:index")).content.decode()

        hour = timezone.localtime().replace(minute=0, second=0, microsecond=0)
        self.assertIn("Runs per hour over the last 24 hours, by status (the tallest: 3 runs)", page)
        self.assertIn(f"<title>{hour:%Y-%m-%d %H}:00: 2 completed, 1 error</title>", page)
        self.assertEqual(page.count('class="parseq-bar parseq-bar-completed"'), 1)
