"""A failed run's alert, from a real `manage.py rundramatiq` worker on RabbitMQ and PostgreSQL to a local endpoint."""

import os
from unittest import mock

from parseq.alerts.models import WebhookDelivery
from parseq.core.models import Run
from tests.alerts.endpoint import WebhookEndpoint
from tests.helpers import make_parser, requires_postgresql_and_rabbitmq, shows_process_logs_on_failure
from tests.integration.test_rabbitmq_worker import RealWorkerTestCase

WEBHOOKS_QUEUE = "webhooks"
PUBLIC_URL = "https://parseq.example.com"


@requires_postgresql_and_rabbitmq
class WebhookWorkerTests(RealWorkerTestCase):
    def setUp(self):
        super().setUp()
        self.broker.declare_queue(WEBHOOKS_QUEUE, ensure=True)
        self.broker.flush(WEBHOOKS_QUEUE)  # alerts left by earlier test runs name deliveries of another database
        self.endpoint = WebhookEndpoint().__enter__()
        self.addCleanup(self.endpoint.__exit__, None, None, None)

    @shows_process_logs_on_failure
    def test_a_real_worker_posts_the_alert_of_a_failed_run_and_retries_it_after_the_backoff(self):
        # Given a worker, and an endpoint that answers 500 the first time
        settings_of_the_worker = {
            "PARSEQ_PUBLIC_URL": PUBLIC_URL,
            "PARSEQ_WEBHOOK_BACKOFF": "1",
            "PARSEQ_WEBHOOK_TIMEOUT": "5",
            # The endpoint listens on loopback, which webhooks may reach only where an operator allows it.
            "PARSEQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        with mock.patch.dict(os.environ, settings_of_the_worker):
            worker = self.start_worker()
        self.endpoint.fail(1)
        parser = make_parser(
            "def parse():\n    return 1 / 0\n", name="cbr_rates", filename="cbr_rates.py", webhook_url=self.endpoint.url
        )

        # When a run of it, sent through RabbitMQ, ends in error
        run = Run.objects.create(parser=parser, trigger=Run.Trigger.API)
        self.enqueue(run)

        # Then the worker delivers its alert at the second attempt, a backoff after the first
        def delivered():
            delivery = WebhookDelivery.objects.filter(run=run).first()
            return delivery if delivery and delivery.status != WebhookDelivery.Status.PENDING else None

        delivery = self.wait_for(delivered, timeout=15, message="the alert to be delivered", worker=worker)
        self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.ERROR)
        self.assertEqual(delivery.status, WebhookDelivery.Status.DELIVERED)
        self.assertEqual((delivery.attempts, delivery.last_status_code), (2, 200))
        first, second = self.endpoint.requests
        self.assertGreaterEqual(second.arrived - first.arrived, 1)
        self.assertEqual(first.body, second.body)
        payload = second.json()
        self.assertEqual(payload["event"], "run.error")
        self.assertTrue(
            payload["text"].startswith(f"Parseq: parser cbr_rates run {str(run.run_id)[:8]} ended in error")
        )
        self.assertIn("ZeroDivisionError", payload["text"])
        self.assertEqual(payload["run"]["links"]["error"], f"{PUBLIC_URL}/{run.run_id}/error.txt")
