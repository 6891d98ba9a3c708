"""Honest answers in an outage: a run the broker did not take is a 503 that says why, and a database outage
is a JSON 503 wherever it strikes, never an HTML 500 or a 202 for a run that will never start.
"""

from unittest import mock

from django.db import OperationalError
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from rest_framework.test import APITestCase, APITransactionTestCase

from parseq.access.crosssite import CrossSiteWriteGuard
from parseq.api.views import ParserViewSet
from parseq.core.models import Run
from parseq.core.tasks import execute_run
from tests.api.helpers import FAST_PASSWORDS, basic, make_users, user_in
from tests.helpers import TemporaryMediaMixin, make_parser

LOST_CONNECTION = OperationalError("could not connect to server: Connection refused")


@FAST_PASSWORDS
class BrokerOutageTests(TemporaryMediaMixin, APITransactionTestCase):
    def test_a_run_the_broker_refuses_is_a_503_and_the_run_says_why(self):
        # Given a broker nobody answers at
        make_users()
        parser = make_parser("def parse():\n    return {}\n")
        unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1")
        self.addCleanup(unreachable.close)

        # When an Editor asks for a run
        with mock.patch.object(execute_run, "broker", unreachable), self.assertLogs("parseq.core.tasks", "ERROR"):
            response = self.client.post(f"/api/parsers/{parser.pk}/run/", **basic("editor", "editor-pass"))

        # Then the answer is a 503 naming the cause, with the run that is in error for it
        body = response.json()
        run = Run.objects.get()
        self.assertEqual((response.status_code, response["Retry-After"]), (503, "30"))
        self.assertEqual(body["code"], "broker_unavailable")
        self.assertIn("could not enqueue the run: the broker did not accept it", body["detail"])
        self.assertEqual((body["run"]["run_id"], body["run"]["status"]), (str(run.run_id), "error"))
        self.assertEqual((run.status, run.error), (Run.Status.ERROR, body["detail"]))


@FAST_PASSWORDS
class DatabaseOutageTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        make_users()
        self.client.raise_request_exception = False  # as a real server: the error becomes a response

    def test_an_outage_in_a_view_is_a_json_503(self):
        with mock.patch.object(ParserViewSet, "get_queryset", side_effect=LOST_CONNECTION), self.assertLogs("django"):
            response = self.client.get("/api/parsers/", **basic("editor", "editor-pass"))

        self.assertEqual((response.status_code, response["Content-Type"]), (503, "application/json"))
        self.assertEqual(response.json()["code"], "database_unavailable")
        self.assertEqual(response["Retry-After"], "10")

    def test_an_outage_before_the_view_is_a_json_503_too(self):
        with mock.patch.object(CrossSiteWriteGuard, "__call__", side_effect=LOST_CONNECTION), self.assertLogs("django"):
            response = self.client.get("/api/parsers/", **basic("editor", "editor-pass"))

        self.assertEqual((response.status_code, response["Content-Type"]), (503, "application/json"))
        self.assertEqual(response.json()["code"], "database_unavailable")

    def test_other_server_errors_of_the_api_are_json_and_the_admin_keeps_its_page(self):
        broken = mock.patch.object(CrossSiteWriteGuard, "__call__", side_effect=RuntimeError("a bug"))
        with broken, self.assertLogs("django.request", "ERROR"):
            api = self.client.get("/api/parsers/", **basic("editor", "editor-pass"))
            admin = self.client.get("/admin/")

        self.assertEqual((api.status_code, api.json()["code"]), (500, "error"))
        self.assertEqual(admin.status_code, 500)
        self.assertTrue(admin["Content-Type"].startswith("text/html"))


@FAST_PASSWORDS
class AdminBrokerOutageTests(TemporaryMediaMixin, APITransactionTestCase):
    def test_run_now_in_the_admin_says_the_run_was_not_enqueued_and_why(self):
        user_in("Editors", "editor", is_staff=True)
        parser = make_parser("def parse():\n    return {}\n")
        self.client.login(username="editor", password="editor-pass")
        unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1")
        self.addCleanup(unreachable.close)

        with mock.patch.object(execute_run, "broker", unreachable), self.assertLogs("parseq.core.tasks", "ERROR"):
            response = self.client.post(f"/admin/core/parser/{parser.pk}/run/", follow=True)

        run = Run.objects.get()
        self.assertContains(
            response, f'Run <a href="/admin/core/run/{run.run_id}/change/">{run.run_id}</a> was not enqueued'
        )
        self.assertContains(response, "could not enqueue the run: the broker did not accept it")
        self.assertEqual(run.status, Run.Status.ERROR)
