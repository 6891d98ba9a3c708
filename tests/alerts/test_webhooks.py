"""Alerts when runs end: which runs post one, what they post, retries, and that no run ever waits for them."""

import json
import time
from unittest import mock

import dramatiq
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection, transaction
from django.test import TestCase, TransactionTestCase, override_settings, tag
from django.urls import reverse
from django.utils import timezone

from parseq.alerts import selectors
from parseq.alerts import services as alert_services
from parseq.alerts.models import WebhookDelivery
from parseq.alerts.tasks import deliver_webhook
from parseq.core import services
from parseq.core.events import run_finished
from parseq.core.models import Parser, Run
from tests.alerts.endpoint import LOOPBACK, WebhookEndpoint, unreachable_url
from tests.helpers import TemporaryMediaMixin, in_process_worker, make_parser, wait_until

PUBLIC_URL = "https://parseq.example.com"
SECRET = "tok-7f3a9c-very-secret"
FAILING_SCRIPT = """
    import os

    def parse():
        print("calling the bank with", os.environ["API_TOKEN"])
        raise ZeroDivisionError("no rate for " + os.environ["API_TOKEN"])
"""
WORKING_SCRIPT = """
    def parse():
        return {"rates.csv": b"usd,90\\n"}
"""
# Small numbers: a test waits for every retry. The endpoints listen on loopback, which is allowed explicitly.
FAST = {
    "PUBLIC_URL": PUBLIC_URL,
    "WEBHOOK_TIMEOUT": 2,
    "WEBHOOK_ATTEMPTS": 3,
    "WEBHOOK_BACKOFF": 0.05,
    "WEBHOOK_ALLOWED_NETWORKS": LOOPBACK,
}


def end_run(run, status, *, error="", files=(), user=None):
    """End `run` as the core does: save its end, then send `run_finished`."""
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=status, error=error, files=list(files), started_time=now, finished_time=now, cancelled_by=user
    )
    run_finished.send(sender=Run, run_id=run.pk, status=status)
    run.refresh_from_db()
    return run


def delivery_of(run):
    return WebhookDelivery.objects.get(run=run)


def take_message(queue_name):
    """Take the next message off an in-memory queue, as done: a later join() must not wait for it."""
    queue = dramatiq.get_broker().queues[queue_name]
    message = queue.get_nowait()
    queue.task_done()
    return json.loads(message)


def settled(delivery):
    def check():
        delivery.refresh_from_db()
        return delivery.status != WebhookDelivery.Status.PENDING

    return check


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
@override_settings(**FAST)
class RunAlertTests(TemporaryMediaMixin, TransactionTestCase):
    """Real runs in the sandbox, through the in-memory broker and a real worker, to a real endpoint."""

    def test_a_run_that_ends_in_error_posts_its_alert_once_with_the_documented_payload_and_no_secrets(self):
        # Given a parser with a secret in its environment, whose script prints it and fails with it
        with WebhookEndpoint() as endpoint, in_process_worker():
            parser = make_parser(
                FAILING_SCRIPT, name="cbr_rates", webhook_url=endpoint.url, environment={"API_TOKEN": SECRET}
            )

            # When a run of it ends in error
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: WebhookDelivery.objects.filter(run=run).exists(), message="the delivery")
            delivery = delivery_of(run)
            wait_until(settled(delivery), message="the delivery to be delivered")
            time.sleep(0.2)  # room for a second POST, which must not come

        # Then exactly one POST was made, and the delivery says so
        self.assertEqual(len(endpoint.requests), 1)
        self.assertEqual(delivery.status, WebhookDelivery.Status.DELIVERED)
        self.assertEqual((delivery.attempts, delivery.last_status_code, delivery.last_error), (1, 200, ""))
        self.assertIsNotNone(delivery.delivered_time)
        self.assertEqual((delivery.event, delivery.url, delivery.parser), ("run.error", endpoint.url, parser))
        # And it is JSON, with Parseq's user agent
        request = endpoint.requests[0]
        self.assertEqual(request.headers["Content-Type"], "application/json")
        self.assertEqual(request.headers["User-Agent"], "Parseq-webhook/1")
        self.assertEqual(request.headers["X-Parseq-Event"], "run.error")
        self.assertEqual(request.headers["X-Parseq-Delivery"], str(delivery.pk))
        # And it holds the documented fields, with absolute links
        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ERROR)
        self.assertIn("no rate for ********", run.error)  # the worker masks variables' values when it stores them
        short = str(run.run_id)[:8]
        admin_url = f"{PUBLIC_URL}/admin/core/run/{run.run_id}/change/"
        self.assertEqual(
            request.json(),
            {
                "event": "run.error",
                "text": f"Parseq: parser cbr_rates run {short} ended in error: ZeroDivisionError: no rate for "
                f"******** — {admin_url}",
                "run": {
                    "run_id": str(run.run_id),
                    "status": "error",
                    "trigger": "manual",
                    "created_time": run.created_time.isoformat(),
                    "started_time": run.started_time.isoformat(),
                    "finished_time": run.finished_time.isoformat(),
                    "duration_seconds": round(run.duration.total_seconds(), 3),
                    "error": run.error.replace(SECRET, "********"),
                    "cancelled_by": None,
                    "links": {
                        "admin": admin_url,
                        "api": f"{PUBLIC_URL}/api/runs/{run.run_id}/",
                        "error": f"{PUBLIC_URL}/{run.run_id}/error.txt",
                    },
                    "files": [],
                },
                "parser": {"id": parser.pk, "name": "cbr_rates"},
            },
        )
        # And neither the environment's values nor the run's log are in it
        self.assertNotIn(SECRET.encode(), request.body)
        self.assertNotIn(b"calling the bank", request.body)
        self.assertEqual(delivery.payload, request.json())

    @override_settings(WEBHOOK_TIMEOUT=3, WEBHOOK_ATTEMPTS=1)
    def test_the_run_has_ended_before_its_alert_is_posted_and_the_worker_goes_on_while_the_endpoint_hangs(self):
        # Given an endpoint that answers later than the webhook timeout
        with WebhookEndpoint() as endpoint, in_process_worker(threads=2):
            endpoint.hang(30)
            failing = make_parser(
                FAILING_SCRIPT, name="failing", webhook_url=endpoint.url, environment={"API_TOKEN": "x"}
            )
            working = make_parser(WORKING_SCRIPT, name="working")

            # When a run fails
            failed = services.enqueue_run(parser=failing, trigger=Run.Trigger.MANUAL)
            self.assertTrue(endpoint.arrived.wait(timeout=30), "no alert arrived")
            posted_at = time.monotonic()

            # Then, while its alert waits for an answer, the run has ended in error already
            failed.refresh_from_db()
            self.assertEqual(failed.status, Run.Status.ERROR)
            self.assertIsNotNone(failed.finished_time)
            # And the worker runs the next run meanwhile
            completed = services.enqueue_run(parser=working, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=completed.pk).is_finished, message="the next run")
            self.assertEqual(Run.objects.get(pk=completed.pk).status, Run.Status.COMPLETED)
            self.assertLess(time.monotonic() - posted_at, 3, "the next run waited for the hanging endpoint")
            delivery = delivery_of(failed)
            self.assertEqual((delivery.status, delivery.attempts), (WebhookDelivery.Status.PENDING, 0))

            # And the attempt fails once the timeout has passed
            wait_until(settled(delivery), timeout=10, message="the attempt to time out")

        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertEqual(delivery.last_error, "timed out after 3 s")
        self.assertIsNone(delivery.last_status_code)
        self.assertEqual(len(endpoint.requests), 1)


@tag("slow")  # scripts in real sandboxes: not in `make test-fast`
@override_settings(**FAST)
class WhichRunsAlertTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.endpoint = WebhookEndpoint().__enter__()
        self.addCleanup(self.endpoint.__exit__, None, None, None)

    def test_a_completed_run_of_a_parser_alerted_on_errors_only_posts_nothing(self):
        # Given a parser alerted on errors only
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url, webhook_on=Parser.WebhookOn.ERROR)

        # When a run of it completes
        with in_process_worker() as broker:
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=run.pk).is_finished, message="the run")
            broker.join("webhooks")

        # Then nothing is recorded, nor posted
        self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.COMPLETED)
        self.assertFalse(WebhookDelivery.objects.exists())
        self.assertEqual(self.endpoint.requests, [])

    def test_a_parser_without_a_webhook_url_gets_no_alert(self):
        parser = make_parser(WORKING_SCRIPT, webhook_on=Parser.WebhookOn.FINISH)

        end_run(Run.objects.create(parser=parser), Run.Status.ERROR, error="boom")

        self.assertFalse(WebhookDelivery.objects.exists())

    def test_a_parser_alerted_on_every_finish_posts_its_completed_and_cancelled_runs(self):
        # Given a parser alerted on every run that ends
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url, webhook_on=Parser.WebhookOn.FINISH)
        user = get_user_model().objects.create_user("alice")

        with in_process_worker():
            # When one run completes with a file, and another is cancelled by a user
            completed = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            wait_until(lambda: Run.objects.get(pk=completed.pk).is_finished, message="the run")
            cancelled = Run.objects.create(parser=parser, trigger=Run.Trigger.SCHEDULE)
            self.assertTrue(services.cancel_run(run=cancelled, user=user, source="admin"))

            # Then both are posted
            self.endpoint.wait_for_requests(2)
            wait_until(settled(delivery_of(cancelled)), message="the second delivery")

        completed.refresh_from_db()
        by_event = {payload["event"]: payload for payload in self.endpoint.payloads()}
        self.assertEqual(sorted(by_event), ["run.cancelled", "run.completed"])
        done = by_event["run.completed"]
        self.assertEqual(done["run"]["status"], "completed")
        self.assertEqual(
            done["run"]["files"],
            [{"name": "rates.csv", "size": 7, "url": f"{PUBLIC_URL}/{completed.run_id}/rates.csv"}],
        )
        self.assertIsNone(done["run"]["links"]["error"])
        self.assertEqual(
            done["text"].split(" — ")[0], f"Parseq: parser demo run {str(completed.run_id)[:8]} completed with 1 file"
        )
        stopped = by_event["run.cancelled"]
        self.assertEqual((stopped["run"]["status"], stopped["run"]["cancelled_by"]), ("cancelled", "alice"))
        self.assertEqual((stopped["run"]["trigger"], stopped["run"]["error"]), ("schedule", "cancelled by alice"))
        self.assertIn("was cancelled by alice", stopped["text"])
        self.assertEqual(
            set(WebhookDelivery.objects.values_list("status", flat=True)), {WebhookDelivery.Status.DELIVERED}
        )

    def test_only_the_last_2000_characters_of_a_long_error_are_sent(self):
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url)
        error = "Traceback (most recent call last):\n" + "x" * 5000 + "\nValueError: the end"

        run = end_run(Run.objects.create(parser=parser), Run.Status.ERROR, error=error)

        sent = delivery_of(run).payload["run"]["error"]
        self.assertEqual(sent, error[-2000:])
        self.assertIn("ended in error: ValueError: the end", delivery_of(run).payload["text"])


@override_settings(**FAST)
class RetryTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.endpoint = WebhookEndpoint().__enter__()
        self.addCleanup(self.endpoint.__exit__, None, None, None)

    def failed_run(self, url):
        parser = make_parser(WORKING_SCRIPT, webhook_url=url)
        return end_run(Run.objects.create(parser=parser), Run.Status.ERROR, error="ValueError: boom")

    def test_a_failing_endpoint_is_tried_again_until_it_answers_2xx(self):
        # Given an endpoint that answers 500 twice, then 200
        self.endpoint.fail(2)

        # When a run fails
        with in_process_worker():
            delivery = delivery_of(self.failed_run(self.endpoint.url))
            wait_until(settled(delivery), message="the delivery")

        # Then the third attempt delivered it, with the same body each time
        self.assertEqual(delivery.status, WebhookDelivery.Status.DELIVERED)
        self.assertEqual((delivery.attempts, delivery.last_status_code, delivery.last_error), (3, 200, ""))
        self.assertEqual(len(self.endpoint.requests), 3)
        self.assertEqual(len({request.body for request in self.endpoint.requests}), 1)
        self.assertIsNone(delivery.next_attempt_time)

    def test_after_the_last_attempt_the_delivery_is_failed_with_the_last_error(self):
        self.endpoint.fail(10, code=503)

        with in_process_worker():
            delivery = delivery_of(self.failed_run(self.endpoint.url))
            wait_until(settled(delivery), message="the delivery to fail")
            time.sleep(0.2)  # room for a fourth attempt, which must not come

        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertEqual(delivery.attempts, 3)
        self.assertEqual(len(self.endpoint.requests), 3)
        self.assertEqual(delivery.last_status_code, 503)
        self.assertEqual(delivery.last_error, "HTTP 503 Service Unavailable: temporarily broken")
        self.assertIsNone(delivery.delivered_time)

    def test_an_unreachable_endpoint_is_tried_again_then_fails_with_connection_refused(self):
        with in_process_worker():
            delivery = delivery_of(self.failed_run(unreachable_url()))
            wait_until(settled(delivery), message="the delivery to fail")

        self.assertEqual((delivery.status, delivery.attempts), (WebhookDelivery.Status.FAILED, 3))
        self.assertEqual(delivery.last_error, "connection refused")
        self.assertIsNone(delivery.last_status_code)

    @override_settings(WEBHOOK_ATTEMPTS=1)
    def test_a_host_that_does_not_resolve_fails_naming_the_lookup(self):
        with in_process_worker():
            delivery = delivery_of(self.failed_run("http://no-such-host.invalid/hook"))
            wait_until(settled(delivery), message="the delivery to fail")

        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertTrue(delivery.last_error.startswith("cannot resolve the host"), delivery.last_error)

    @override_settings(WEBHOOK_ATTEMPTS=1)
    def test_a_redirect_is_not_followed_and_counts_as_a_failure(self):
        # Given an endpoint that redirects to another one
        with WebhookEndpoint() as elsewhere:
            self.endpoint.redirect(elsewhere.url)

            with in_process_worker():
                delivery = delivery_of(self.failed_run(self.endpoint.url))
                wait_until(settled(delivery), message="the delivery to fail")

        # Then the other endpoint got nothing, and the delivery says why it failed
        self.assertEqual(elsewhere.requests, [])
        self.assertEqual(len(self.endpoint.requests), 1)
        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertEqual(delivery.last_status_code, 302)
        # The other endpoint's path is the webhook's own (/hook): a webhook's path is masked wherever it shows.
        where = elsewhere.url.replace("/hook", "********")
        self.assertEqual(delivery.last_error, f"HTTP 302: redirected to {where}; redirects are not followed")

    @override_settings(WEBHOOK_TIMEOUT=0.3, WEBHOOK_ATTEMPTS=2)
    def test_an_endpoint_slower_than_the_timeout_is_a_failed_attempt(self):
        self.endpoint.hang(5)

        with in_process_worker():
            delivery = delivery_of(self.failed_run(self.endpoint.url))
            started = time.monotonic()
            wait_until(settled(delivery), message="the attempts to time out")

        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual((delivery.status, delivery.attempts), (WebhookDelivery.Status.FAILED, 2))
        self.assertEqual(delivery.last_error, "timed out after 0.3 s")

    def test_a_duplicate_message_leaves_a_delivered_delivery_alone(self):
        # Given a delivered alert
        with in_process_worker() as broker:
            delivery = delivery_of(self.failed_run(self.endpoint.url))
            wait_until(settled(delivery), message="the delivery")
            before = WebhookDelivery.objects.values().get(pk=delivery.pk)

            # When its messages come again (the first attempt, and a retry that was never due)
            deliver_webhook.send(delivery.pk, 1)
            deliver_webhook.send(delivery.pk, 2)
            broker.join("webhooks")

        # Then nothing is posted again, and the delivery is as it was
        self.assertEqual(len(self.endpoint.requests), 1)
        self.assertEqual(WebhookDelivery.objects.values().get(pk=delivery.pk), before)

    def test_a_message_about_a_deleted_delivery_is_dropped(self):
        run = self.failed_run(self.endpoint.url)
        delivery_id = delivery_of(run).pk
        run.delete()

        self.assertIsNone(alert_services.attempt_delivery(delivery_id=delivery_id, attempt=1))
        self.assertEqual(self.endpoint.requests, [])


class BackoffTests(TestCase):
    @override_settings(WEBHOOK_BACKOFF=10)
    def test_retries_wait_the_backoff_doubling_each_time_up_to_an_hour(self):
        delays = [alert_services.retry_delay(attempt=attempt) for attempt in range(1, 11)]

        self.assertEqual(delays, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600])
        self.assertEqual(alert_services.retry_delay(attempt=10_000), 3600)


class PayloadTests(TemporaryMediaMixin, TestCase):
    def test_a_value_left_in_an_error_is_masked_in_the_payload_too_even_url_encoded(self):
        # Given a failed run whose stored error still holds a variable's value (the worker did not store it)
        parser = make_parser(FAILING_SCRIPT, environment={"API_TOKEN": "tok/with space"})
        run = Run.objects.create(
            parser=parser, status=Run.Status.ERROR, error="failed: tok/with space, tok%2Fwith%20space, tok%2Fwith+space"
        )

        payload = alert_services.run_alert_payload(run=run, event="run.error")

        self.assertEqual(payload["run"]["error"], "failed: ********, ********, ********")
        self.assertNotIn("tok", payload["text"])


@override_settings(**FAST)
class AlertTransactionTests(TemporaryMediaMixin, TestCase):
    """The alert is made with the run's end and never gets in its way."""

    def setUp(self):
        self.broker = dramatiq.get_broker()
        self.broker.flush_all()
        self.user = get_user_model().objects.create_user("alice")
        self.parser = make_parser(WORKING_SCRIPT, webhook_url="http://127.0.0.1:9/hook", webhook_on="finish")

    def queued_alerts(self):
        return self.broker.queues["webhooks"].qsize()

    def test_an_alert_is_sent_to_the_workers_only_when_the_transaction_that_ended_the_run_commits(self):
        run = Run.objects.create(parser=self.parser)

        with self.captureOnCommitCallbacks(execute=True):
            services.cancel_run(run=run, user=self.user, source="admin")
            # The row exists inside the transaction, but nothing is sent before it commits
            self.assertEqual(delivery_of(run).status, WebhookDelivery.Status.PENDING)
            self.assertEqual(self.queued_alerts(), 0)

        self.assertEqual(self.queued_alerts(), 1)
        self.assertEqual(take_message("webhooks")["args"], [delivery_of(run).pk, 1])

    def test_a_failing_alert_does_not_keep_a_run_from_ending(self):
        run = Run.objects.create(parser=self.parser)

        with (
            mock.patch.object(alert_services, "record_run_alert", side_effect=RuntimeError("alerts are broken")),
            self.assertLogs("parseq.alerts.signals", "ERROR") as logs,
        ):
            self.assertTrue(services.cancel_run(run=run, user=self.user, source="admin"))

        self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.CANCELLED)
        self.assertIn("could not record the alert", logs.output[0])

    def test_a_database_error_in_the_alert_leaves_the_transaction_that_ended_the_run_usable(self):
        run = Run.objects.create(parser=self.parser)

        def broken_payload(**kwargs):
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table")

        with (
            transaction.atomic(),
            mock.patch.object(alert_services, "run_alert_payload", side_effect=broken_payload),
            self.assertLogs("parseq.alerts.signals", "ERROR"),
        ):
            self.assertTrue(services.cancel_run(run=run, user=self.user, source="admin"))
            # Still usable: the alert's failure was rolled back to its savepoint
            self.assertEqual(Run.objects.get(pk=run.pk).status, Run.Status.CANCELLED)

        self.assertFalse(WebhookDelivery.objects.exists())

    def test_an_alert_the_broker_refuses_is_recorded_as_failed(self):
        run = Run.objects.create(parser=self.parser)

        with (
            mock.patch.object(deliver_webhook, "send_with_options", side_effect=ConnectionError("broker down")),
            self.assertLogs("parseq.alerts.tasks", "ERROR"),
            self.captureOnCommitCallbacks(execute=True),
        ):
            services.cancel_run(run=run, user=self.user, source="admin")

        delivery = delivery_of(run)
        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertEqual(delivery.last_error, "could not enqueue attempt 1: the broker did not accept it (broker down)")

    def test_a_run_ends_once_so_it_has_one_alert_per_event(self):
        run = end_run(Run.objects.create(parser=self.parser), Run.Status.ERROR, error="boom")

        run_finished.send(sender=Run, run_id=run.pk, status=Run.Status.ERROR)

        self.assertEqual(WebhookDelivery.objects.filter(run=run).count(), 1)

    def test_a_database_outage_at_the_end_of_an_attempt_is_left_to_the_actors_retries(self):
        # The actor retries DatabaseError (the same attempt number, so nothing is skipped); other errors are final.
        self.assertTrue(deliver_webhook.options["retry_when"](0, DatabaseError("gone")))
        self.assertFalse(deliver_webhook.options["retry_when"](0, ValueError("bug")))


class DeliveryAdminTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        dramatiq.get_broker().flush_all()
        self.admin_user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(self.admin_user)
        self.parser = make_parser(WORKING_SCRIPT, name="cbr_rates", webhook_url="http://127.0.0.1:9/hook")
        self.run = Run.objects.create(parser=self.parser, status=Run.Status.ERROR)

    def delivery(self, status, **fields):
        run = Run.objects.create(parser=self.parser, status=Run.Status.ERROR)
        return WebhookDelivery.objects.create(
            run=run,
            parser=self.parser,
            url=self.parser.webhook_url,
            event="run.error",
            payload={},
            status=status,
            **fields,
        )

    def test_the_delivery_log_lists_each_delivery_with_its_run_and_last_error(self):
        failed = self.delivery("failed", attempts=5, last_status_code=500, last_error="HTTP 500 Internal Server Error")

        response = self.client.get(reverse("admin:alerts_webhookdelivery_changelist"))

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Webhook deliveries")
        self.assertContains(response, reverse("admin:core_run_change", args=[failed.run_id]))
        self.assertContains(response, "HTTP 500 Internal Server Error")
        self.assertContains(response, "Retry delivery")
        self.assertNotContains(response, "Add webhook delivery")
        filtered = self.client.get(reverse("admin:alerts_webhookdelivery_changelist") + "?status__exact=delivered")
        self.assertNotContains(filtered, "HTTP 500 Internal Server Error")

    def test_a_delivery_page_shows_its_payload_read_only(self):
        delivery = self.delivery("delivered", attempts=1, last_status_code=200)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(payload={"text": "Parseq: parser cbr_rates"})

        page = self.client.get(reverse("admin:alerts_webhookdelivery_change", args=[delivery.pk]))

        self.assertEqual(page.status_code, 200)
        self.assertContains(page, "Parseq: parser cbr_rates")
        self.assertNotContains(page, 'name="_save"')
        with self.assertLogs("django.request", "WARNING"):
            self.assertEqual(self.client.get(reverse("admin:alerts_webhookdelivery_add")).status_code, 403)

    def test_retry_delivery_sends_a_failed_delivery_again_and_leaves_the_others_alone(self):
        failed = self.delivery("failed", attempts=5, last_error="connection refused")
        delivered = self.delivery("delivered", attempts=1)

        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                reverse("admin:alerts_webhookdelivery_changelist"),
                {"action": "retry_delivery", "_selected_action": [failed.pk, delivered.pk]},
                follow=True,
            )

        self.assertContains(response, "1 delivery(ies) sent again.")
        self.assertContains(response, "1 delivery(ies) left alone")
        failed.refresh_from_db()
        self.assertEqual((failed.status, failed.attempts), (WebhookDelivery.Status.PENDING, 0))
        self.assertEqual(WebhookDelivery.objects.get(pk=delivered.pk).status, WebhookDelivery.Status.DELIVERED)
        self.assertEqual(take_message("webhooks")["args"], [failed.pk, 1])

    def test_a_staff_user_who_may_only_view_deliveries_cannot_retry_them(self):
        viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
        self.client.force_login(viewer)

        response = self.client.get(reverse("admin:alerts_webhookdelivery_changelist"))

        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, "Retry delivery")

    def test_recent_deliveries_are_a_parsers_newest_first_up_to_the_limit(self):
        deliveries = [self.delivery("delivered") for _ in range(3)]
        other = make_parser(WORKING_SCRIPT, name="other")
        WebhookDelivery.objects.create(
            run=Run.objects.create(parser=other), parser=other, url="http://x.example/", event="run.error", payload={}
        )

        self.assertEqual(list(selectors.recent_deliveries(parser=self.parser, limit=2)), deliveries[::-1][:2])
        self.assertEqual(len(selectors.recent_deliveries(parser=self.parser)), 3)
