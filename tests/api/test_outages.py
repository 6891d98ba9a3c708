"""Honest answers in an outage: a run the broker did not take is a 503 that says why, and a database outage
is a JSON 503 wherever it strikes, never an HTML 500 or a 202 for a run that will never start.
"""

from unittest import mock
from urllib.parse import urlsplit

from django.conf import settings
from django.db import OperationalError, connection, connections
from django.test import SimpleTestCase, override_settings, tag
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from rest_framework.test import APITestCase, APITransactionTestCase

from parseq.access.crosssite import CrossSiteWriteGuard
from parseq.api.views import ParserViewSet
from parseq.core.models import Run
from parseq.core.sending import sender
from parseq.core.tasks import execute_run
from parseq.database import bound_waits
from parseq.health import health
from tests.api.helpers import FAST_PASSWORDS, basic, make_users, user_in
from tests.freezable_proxy import FreezableProxy
from tests.helpers import (
    TemporaryMediaMixin,
    make_parser,
    rabbitmq_url,
    requires_postgresql_and_rabbitmq,
    wait_until,
)

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


@tag("slow")  # waits for timeouts
@requires_postgresql_and_rabbitmq
@FAST_PASSWORDS
@override_settings(BROKER_TIMEOUT=1)
class FrozenBrokerTests(TemporaryMediaMixin, APITransactionTestCase):
    """The real RabbitMQ behind a proxy that freezes as a broker sent SIGSTOP would: connections stay open, silent."""

    def setUp(self):
        make_users()
        self.parser = make_parser("def parse():\n    return {}\n")
        shared = urlsplit(rabbitmq_url())
        self.proxy = FreezableProxy(target_host=shared.hostname, target_port=shared.port or 5672)
        self.addCleanup(self.proxy.close)
        self.url = shared._replace(netloc=f"{shared.username}:{shared.password}@127.0.0.1:{self.proxy.port}").geturl()
        self.broker = RabbitmqBroker(url=self.url, confirm_delivery=True)
        self.addCleanup(self.broker.close)
        self.addCleanup(self.broker.flush, "runs")
        self.addCleanup(self.proxy.thaw)  # first: the stuck publish ends, and the broker answers again
        patch = mock.patch.object(execute_run, "broker", self.broker)
        patch.start()
        self.addCleanup(patch.stop)

    def ask_for_a_run(self):
        return self.client.post(f"/api/parsers/{self.parser.pk}/run/", **basic("editor", "editor-pass"))

    def test_a_frozen_broker_holds_a_request_for_a_run_no_longer_than_the_broker_timeout_and_it_says_so(self):
        # Given a broker that took a run, so the web's connection to it is open
        taken = self.ask_for_a_run()
        self.assertEqual(taken.status_code, 202, taken.content)

        # When the broker freezes and a run is asked for
        self.proxy.freeze()
        with self.assertLogs("parseq.core.tasks", "ERROR"):
            first = self.ask_for_a_run()
            second = self.ask_for_a_run()

        # Then the first waits PARSEQ_BROKER_TIMEOUT and is a 503 naming it; the next is told at once
        self.assertEqual((first.status_code, first.json()["code"]), (503, "broker_unavailable"))
        self.assertIn("the broker did not answer within 1 s", first.json()["detail"])
        self.assertEqual(second.status_code, 503)
        self.assertRegex(second.json()["detail"], r"the broker has not answered for \d+ s")
        # And both runs are in error saying why, never left enqueued without a message
        self.assertEqual(Run.objects.filter(status=Run.Status.ERROR).count(), 2)
        # And once the broker answers again and the stuck message has gone out, runs are taken again
        self.proxy.thaw()
        wait_until(lambda: sender.busy_since is None, timeout=30, message="the stuck publish to end")
        self.assertEqual(self.ask_for_a_run().status_code, 202)

    def test_healthz_says_a_frozen_broker_is_unreachable_within_seconds(self):
        self.proxy.freeze()
        with override_settings(BROKER_URL=self.url):
            healthy, checks = health()

        self.assertFalse(healthy)
        self.assertIn("unreachable", checks["broker"])
        self.assertIn("Timeout during AMQP handshake", checks["broker"])


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


@tag("slow")  # waits for a timeout
@requires_postgresql_and_rabbitmq
class FrozenDatabaseTests(SimpleTestCase):
    """PostgreSQL behind a proxy that freezes as a database sent SIGSTOP would: connections open and silent."""

    def setUp(self):
        database = connection.settings_dict
        self.proxy = FreezableProxy(target_host=database["HOST"], target_port=int(database["PORT"] or 5432))
        self.addCleanup(self.proxy.close)
        self.addCleanup(self.proxy.thaw)
        # The maintenance database: this test needs no table, only answers.
        settings_dict = {
            **connection.settings_dict,
            "NAME": "postgres",
            "PORT": str(self.proxy.port),
            "CONN_MAX_AGE": 0,
        }
        self.database = connections["default"].__class__(settings_dict, alias="frozen")
        self.addCleanup(self.database.close)

    def ask(self):
        with self.database.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0]

    def test_a_query_to_a_frozen_database_fails_after_the_timeout_naming_it_and_the_next_connection_works(self):
        # Given PARSEQ_DATABASE_TIMEOUT=1, and an open connection that answered
        bound_waits(seconds=1)
        self.addCleanup(bound_waits, seconds=settings.DATABASE_TIMEOUT)
        self.assertEqual(self.ask(), 1)

        # When the database freezes, a query on it fails, naming the timeout, as does a new connection
        self.proxy.freeze()
        with self.assertRaisesRegex(OperationalError, r"did not answer within 1 s \(PARSEQ_DATABASE_TIMEOUT\)"):
            self.ask()
        self.database.close()
        with self.assertRaises(OperationalError):
            self.ask()

        # Then, once it answers again, a new connection works
        self.proxy.thaw()
        self.database.close()
        self.assertEqual(self.ask(), 1)
