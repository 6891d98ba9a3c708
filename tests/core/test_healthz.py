"""`/healthz`: 200 when the database and the broker answer, 503 with the reason otherwise."""

from unittest import mock

from django.db import connection
from django.test import TestCase

from parseq.scheduling.coordination import coordinator_for_database
from tests.helpers import rabbitmq_url, require


class HealthTests(TestCase):
    def test_healthy_with_a_database_and_the_in_memory_broker(self):
        with self.settings(BROKER_URL=None, SANDBOX_BACKEND="bwrap"):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {"status": "ok", "database": "ok", "broker": "ok", "sandbox": "bwrap", "scheduler": "none running"},
        )

    def test_an_active_scheduler_is_reported(self):
        coordinator = coordinator_for_database()
        self.assertTrue(coordinator.try_lead())
        self.addCleanup(coordinator.release)

        response = self.client.get("/healthz")

        self.assertEqual((response.status_code, response.json()["scheduler"]), (200, "active"))

    def test_the_weaker_subprocess_sandbox_is_said_plainly(self):
        with self.settings(BROKER_URL=None, SANDBOX_BACKEND="subprocess"):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.json()["sandbox"].startswith("subprocess (weaker:"))

    def test_an_unreachable_broker_is_503_with_the_reason(self):
        with self.settings(BROKER_URL="amqp://guest:guest@127.0.0.1:1/%2F"):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["status"], "unavailable")
        self.assertTrue(response.json()["broker"].startswith("unreachable at 127.0.0.1:1: AMQPConnectionError"))

    def test_a_failing_database_is_503_with_the_reason(self):
        with mock.patch.object(connection, "cursor", side_effect=RuntimeError("connection refused")):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["database"], "unreachable: connection refused")


@require(bool(rabbitmq_url()), "needs RabbitMQ: set PARSEQ_TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F")
class RealBrokerHealthTests(TestCase):
    def test_healthy_with_a_real_rabbitmq(self):
        with self.settings(BROKER_URL=rabbitmq_url()):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["broker"], "ok")
