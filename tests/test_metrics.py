"""`/metrics`: Prometheus's text format, for staff or the scraper's token; nobody else."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from parseq.core.models import Run
from parseq.core.tasks import execute_run
from tests.helpers import TemporaryMediaMixin, make_parser, rabbitmq_url, require


@override_settings(METRICS_TOKEN="s3cret-token", BROKER_URL=None)
class MetricsTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        parser = make_parser("def parse():\n    return {}\n")
        now = timezone.now()
        Run.objects.create(parser=parser, status=Run.Status.ENQUEUED)
        Run.objects.create(parser=parser, status=Run.Status.RUNNING, started_time=now, attempt=2, recording_retries=3)
        for seconds in (2, 4):
            Run.objects.create(
                parser=parser,
                status=Run.Status.COMPLETED,
                trigger=Run.Trigger.SCHEDULE,
                scheduled_for=now - timedelta(minutes=seconds),
                started_time=now - timedelta(seconds=seconds),
                finished_time=now,
            )
        # Created "now": the two scheduled runs were created 120 s and 240 s after their due times.

    def scrape(self, **headers):
        return self.client.get("/metrics", **headers)

    def test_a_scraper_with_the_token_reads_the_runs_in_prometheus_text(self):
        response = self.scrape(HTTP_AUTHORIZATION="Bearer s3cret-token")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        lines = response.content.decode().splitlines()
        self.assertIn('parseq_runs{status="completed",trigger="schedule"} 2', lines)
        self.assertIn('parseq_runs{status="running",trigger="manual"} 1', lines)
        self.assertIn('parseq_runs{status="enqueued",trigger="manual"} 1', lines)
        self.assertIn("parseq_run_duration_seconds_count 2", lines)
        self.assertIn("parseq_run_duration_seconds_sum 6.0", lines)
        self.assertIn("parseq_reruns 1", lines)
        self.assertIn("parseq_recording_retries 3", lines)
        self.assertIn("parseq_scheduler_lateness_seconds_count 2", lines)
        self.assertIn("parseq_scheduler_active 0", lines)
        self.assertIn("# TYPE parseq_runs gauge", lines)
        worst = next(line for line in lines if line.startswith("parseq_scheduler_lateness_max_seconds "))
        self.assertAlmostEqual(float(worst.split()[1]), 240, delta=5)

    def test_staff_may_read_the_metrics_others_may_not(self):
        users = get_user_model().objects
        staff, member = users.create_user("staff", is_staff=True), users.create_user("member")

        self.client.force_login(member)
        self.assertEqual(self.scrape().status_code, 403)
        self.client.force_login(staff)
        self.assertEqual(self.scrape().status_code, 200)

    def test_nobody_else_reads_them_and_a_wrong_token_is_no_token(self):
        for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "s3cret-token"}):
            with self.subTest(headers=headers):
                response = self.scrape(**headers)

                self.assertEqual((response.status_code, response.json()["code"]), (401, "not_authenticated"))

    @override_settings(METRICS_TOKEN="")
    def test_without_a_token_configured_an_empty_bearer_opens_nothing(self):
        self.assertEqual(self.scrape(HTTP_AUTHORIZATION="Bearer ").status_code, 401)


@require(rabbitmq_url(), "needs RabbitMQ: set PARSEQ_TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F")
class QueueMetricsTests(TemporaryMediaMixin, TestCase):
    def test_the_messages_waiting_in_the_runs_queue_and_its_dead_letters_are_counted(self):
        broker = RabbitmqBroker(url=rabbitmq_url(), confirm_delivery=True)
        self.addCleanup(broker.close)
        broker.declare_queue("runs", ensure=True)
        broker.flush("runs")
        self.addCleanup(broker.flush, "runs")
        for run_id in ("a", "b", "c"):
            broker.enqueue(execute_run.message(run_id))

        with self.settings(BROKER_URL=rabbitmq_url(), METRICS_TOKEN="t"):
            lines = self.client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode().splitlines()

        self.assertIn('parseq_queue_messages{queue="runs"} 3', lines)
        self.assertTrue(any(line.startswith('parseq_queue_messages{queue="runs.DQ"} ') for line in lines), lines)
