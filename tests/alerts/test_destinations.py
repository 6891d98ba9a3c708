"""Where webhooks may go: the public internet, and the networks an operator allows; checked at save and at delivery.

The receivers are real HTTP servers on loopback, which the policy refuses unless a test allows it.
"""

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import TestCase, TransactionTestCase, override_settings
from django.urls import reverse
from rest_framework.test import APITestCase

from parseq.alerts.models import WebhookDelivery
from parseq.core.models import Parser, Run
from tests.alerts.endpoint import LOOPBACK, WebhookEndpoint
from tests.alerts.test_webhooks import FAST, WORKING_SCRIPT, delivery_of, end_run, settled
from tests.helpers import TemporaryMediaMixin, in_process_worker, make_parser, wait_until

REFUSED_URLS = [
    ("http://127.0.0.1:9/hook", "connections to 127.0.0.1:9 are not allowed: 127.0.0.1 is a loopback address"),
    ("http://localhost:8000/hook", "connections to localhost:8000 are not allowed: "),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 embeds 127.0.0.1, a loopback address"),
    ("http://[::1]:8080/hook", "connections to [::1]:8080 are not allowed: ::1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("https://10.0.0.5/hook", "connections to 10.0.0.5:443 are not allowed: 10.0.0.5 is a private address"),
    ("http://[2002:7f00:1::]/hook", "2002:7f00:1:: embeds 127.0.0.1, a loopback address"),
    ("http://no-such-host.invalid/hook", "cannot resolve no-such-host.invalid"),
]
PUBLIC_URL = "https://93.184.216.34/hook"  # an address literal: saving it resolves nothing and sends nothing
ONE_KIB = 1024


class ApiSaveTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.client.force_authenticate(get_user_model().objects.create_superuser("admin", "a@example.com", "pw"))
        self.parser = make_parser(WORKING_SCRIPT, name="cbr_rates")

    def patch(self, url):
        return self.client.patch(f"/api/parsers/{self.parser.pk}/", {"webhook_url": url}, format="json")

    def test_a_webhook_to_loopback_private_or_metadata_addresses_is_refused_with_400_naming_why(self):
        for url, reason in REFUSED_URLS:
            with self.subTest(url=url):
                # When a user points the webhook at an address of the inside
                response = self.patch(url)

                # Then the API refuses it, saying which address and why, and nothing is saved
                self.assertEqual(response.status_code, 400, response.content)
                message = response.json()["errors"]["webhook_url"][0]
                self.assertIn(reason, message)
                self.parser.refresh_from_db()
                self.assertEqual(self.parser.webhook_url, "")

    def test_a_name_that_resolves_to_loopback_is_refused_as_loopback(self):
        message = self.patch("http://localhost:8000/hook").json()["errors"]["webhook_url"][0]

        self.assertRegex(message, r"localhost:8000 are not allowed: (127\.0\.0\.1|::1) is a loopback address")

    def test_only_http_and_https_webhooks_are_accepted(self):
        response = self.patch("ftp://93.184.216.34/hook")

        self.assertEqual(response.status_code, 400)
        self.assertIn("must start with http:// or https://", response.json()["errors"]["webhook_url"][0])

    def test_a_url_that_cannot_be_read_is_400_not_500(self):
        # Found by an attacker: urlsplit raises on these, after the URL validator has said its piece
        for url in ["http://[::1", "http://a\uff03b@93.184.216.34/", "http://x℀y/"]:
            with self.subTest(url=url):
                response = self.patch(url)

                self.assertEqual(response.status_code, 400, response.content)
                self.assertIn("webhook_url", response.json()["errors"])

    @override_settings(REFUSED_NETWORKS=[ipaddress.ip_network("93.184.216.0/24")], WEBHOOK_ALLOWED_NETWORKS=[])
    def test_an_operators_refused_network_is_refused_at_save(self):
        message = self.patch(PUBLIC_URL).json()["errors"]["webhook_url"][0]

        self.assertIn("93.184.216.34 is in a network this Parseq's operator refuses", message)

    def test_a_public_address_is_accepted(self):
        response = self.patch(PUBLIC_URL)

        self.assertEqual(response.status_code, 200, response.content)
        self.parser.refresh_from_db()
        self.assertEqual(self.parser.webhook_url, PUBLIC_URL)

    @override_settings(WEBHOOK_ALLOWED_NETWORKS=[ipaddress.ip_network("10.0.0.0/24"), *LOOPBACK])
    def test_the_operators_allowed_networks_let_an_internal_receiver_through(self):
        for url in ["https://10.0.0.5/hook", "http://127.0.0.1:9/hook"]:
            with self.subTest(url=url):
                self.assertEqual(self.patch(url).status_code, 200)
        # And only those networks
        self.assertIn(
            "10.0.1.5 is a private address", self.patch("http://10.0.1.5/").json()["errors"]["webhook_url"][0]
        )


class AdminSaveTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.client.force_login(get_user_model().objects.create_superuser("admin", "a@example.com", "pw"))
        self.parser = make_parser(WORKING_SCRIPT, name="cbr_rates")

    def test_the_change_form_refuses_a_loopback_webhook_naming_the_reason(self):
        # When the webhook URL of a parser is set to loopback on its change form
        response = self.client.post(
            reverse("admin:core_parser_change", args=[self.parser.pk]),
            {
                "name": "cbr_rates",
                "timeout": "60",
                "max_attempts": "2",
                "network": "internet",
                "overlap": "skip",
                "webhook_url": "http://127.0.0.1:5432/hook",
                "webhook_on": "error",
            },
        )

        # Then the form comes back with the reason, and nothing is saved
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "127.0.0.1 is a loopback address")
        self.assertIn("webhook_url", response.context["adminform"].form.errors)
        self.parser.refresh_from_db()
        self.assertEqual(self.parser.webhook_url, "")


@override_settings(**FAST)
class DeliveryTests(TemporaryMediaMixin, TransactionTestCase):
    """Delivery checks the destination again, connects only to the address it checked, and reads little."""

    def setUp(self):
        self.endpoint = WebhookEndpoint().__enter__()
        self.addCleanup(self.endpoint.__exit__, None, None, None)

    def failed_run(self, parser):
        return end_run(Run.objects.create(parser=parser), Run.Status.ERROR, error="ValueError: boom")

    def deliver(self, parser):
        with in_process_worker():
            delivery = delivery_of(self.failed_run(parser))
            wait_until(settled(delivery), message="the delivery")
        return delivery

    def test_a_url_no_longer_allowed_at_delivery_fails_at_once_with_the_reason_and_sends_nothing(self):
        # Given a parser whose webhook was accepted while the operator allowed loopback
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url)
        parser.full_clean()

        # When the allow-list no longer allows it by the time a run's alert is delivered
        with (
            override_settings(WEBHOOK_ALLOWED_NETWORKS=[]),
            self.assertLogs("parseq.alerts.services", "WARNING") as logs,
        ):
            delivery = self.deliver(parser)

        # Then the delivery failed at its first attempt, without retries, saying why, and no request was made
        port = self.endpoint.url.split(":")[2].split("/")[0]
        reason = f"connections to 127.0.0.1:{port} are not allowed: 127.0.0.1 is a loopback address"
        self.assertEqual((delivery.status, delivery.attempts), (WebhookDelivery.Status.FAILED, 1))
        self.assertEqual(delivery.last_error, f"refused by the address policy: {reason}")
        self.assertIsNone(delivery.last_status_code)
        self.assertIsNone(delivery.next_attempt_time)
        self.assertEqual(self.endpoint.requests, [])
        self.assertTrue(any("failed without retries" in line and reason in line for line in logs.output), logs.output)

    def test_an_allowed_internal_receiver_gets_the_post_with_the_urls_host_header(self):
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url)

        delivery = self.deliver(parser)

        self.assertEqual(delivery.status, WebhookDelivery.Status.DELIVERED)
        (request,) = self.endpoint.requests
        self.assertEqual(request.headers["Host"], self.endpoint.url.split("/")[2])
        self.assertEqual(request.path, "/hook")

    @override_settings(WEBHOOK_ALLOWED_NETWORKS=[*LOOPBACK, ipaddress.ip_network("::1/128")])
    def test_a_host_name_is_posted_to_with_its_own_name_in_the_host_header(self):
        first = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
        if first != "127.0.0.1":
            self.skipTest(f"localhost resolves to {first} first here; the endpoint listens on 127.0.0.1")
        url = self.endpoint.url.replace("127.0.0.1", "localhost")
        parser = make_parser(WORKING_SCRIPT, webhook_url=url)

        delivery = self.deliver(parser)

        self.assertEqual(delivery.status, WebhookDelivery.Status.DELIVERED, delivery.last_error)
        self.assertEqual(self.endpoint.requests[0].headers["Host"], url.split("/")[2])

    def test_a_huge_answer_is_read_only_up_to_1_kib_and_at_most_1_kib_of_it_is_stored(self):
        for body in [b"refused " * (5 * 1024 * 1024 // 8), b"\xff" * (5 * 1024 * 1024)]:
            with self.subTest(body=body[:8]):
                # Given a receiver that answers 500 with a 5 MiB body (text, or bytes that are not UTF-8)
                self.endpoint.answer(500, body)
                parser = make_parser(WORKING_SCRIPT, name=f"p{body[0]}", webhook_url=self.endpoint.url)

                with override_settings(WEBHOOK_ATTEMPTS=1):
                    delivery = self.deliver(parser)

                # Then the delivery failed with an excerpt of at most 1 KiB
                self.assertEqual((delivery.status, delivery.last_status_code), (WebhookDelivery.Status.FAILED, 500))
                prefix = "HTTP 500 Internal Server Error: "
                self.assertTrue(delivery.last_error.startswith(prefix), delivery.last_error[:100])
                excerpt = delivery.last_error[len(prefix) :].encode("utf-8")
                self.assertLessEqual(len(excerpt), ONE_KIB)
                self.assertGreater(len(excerpt), ONE_KIB - 8)

    def test_a_receiver_that_echoes_the_urls_secret_path_has_it_masked_in_the_stored_error(self):
        # Given a webhook URL whose path is its credential, as Slack's and Discord's are (found by an attacker)
        path = "/services/T000/B000/XXXXSECRETTOKEN"
        url = self.endpoint.url.replace("/hook", path)
        for name, answer in [
            ("redirect", lambda: self.endpoint.redirect(f"https://hooks.example.com{path}")),
            ("echo", lambda: self.endpoint.answer(404, f"Cannot POST {path}".encode())),
        ]:
            with self.subTest(answer=name):
                answer()
                parser = make_parser(WORKING_SCRIPT, name=name, webhook_url=url)

                # When the receiver answers with the path in its Location or its body
                with override_settings(WEBHOOK_ATTEMPTS=1):
                    delivery = self.deliver(parser)

                # Then the error readers see says what happened, without the path
                self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
                self.assertNotIn("SECRETTOKEN", delivery.last_error)
                self.assertIn("********", delivery.last_error)
                self.endpoint.requests.clear()

    @override_settings(WEBHOOK_TIMEOUT=1, WEBHOOK_ATTEMPTS=1)
    def test_a_receiver_that_never_finishes_its_answer_fails_the_attempt_in_twice_the_timeout(self):
        # Given a receiver that sends "100 Continue" forever, each line well within the timeout (found by an attacker)
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        stop = threading.Event()
        self.addCleanup(stop.set)

        def answer_forever():
            connection, _ = server.accept()
            with connection:
                while not stop.wait(0.2):
                    try:
                        connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    except OSError:
                        return

        threading.Thread(target=answer_forever, daemon=True).start()
        parser = make_parser(WORKING_SCRIPT, webhook_url=f"http://127.0.0.1:{server.getsockname()[1]}/hook")

        # When its alert is delivered
        started = time.monotonic()
        delivery = self.deliver(parser)

        # Then the attempt ends after about twice the timeout, failed, saying so; the worker's thread is free
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertEqual(delivery.last_error, "the answer took longer than 2 s in all")

    def test_a_huge_redirect_location_is_stored_cut_to_1_kib(self):
        self.endpoint.redirect("https://elsewhere.example/" + "a" * 60_000)
        parser = make_parser(WORKING_SCRIPT, webhook_url=self.endpoint.url)

        with override_settings(WEBHOOK_ATTEMPTS=1):
            delivery = self.deliver(parser)

        self.assertEqual((delivery.status, delivery.last_status_code), (WebhookDelivery.Status.FAILED, 302))
        where = delivery.last_error.removeprefix("HTTP 302: redirected to ").removesuffix(
            "; redirects are not followed"
        )
        self.assertEqual(len(where.encode()), ONE_KIB)

    @unittest.skipUnless(shutil.which("openssl"), "making a self-signed certificate needs openssl")
    def test_https_keeps_its_certificate_check(self):
        # Given an https receiver on loopback whose certificate nobody vouches for
        directory = tempfile.mkdtemp(prefix="parseq-tls-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        certificate = os.path.join(directory, "receiver.pem")
        self_signed = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        files = ["-keyout", certificate, "-out", certificate]
        subprocess.run(["openssl", "req", *self_signed, *files], check=True, capture_output=True)
        with WebhookEndpoint(certificate=certificate) as receiver, override_settings(WEBHOOK_ATTEMPTS=1):
            # When an alert is delivered to it
            delivery = self.deliver(make_parser(WORKING_SCRIPT, webhook_url=receiver.url))

        # Then the TLS handshake refuses the certificate, and nothing was posted
        self.assertEqual(delivery.status, WebhookDelivery.Status.FAILED)
        self.assertTrue(delivery.last_error.startswith("TLS error: "), delivery.last_error)
        self.assertIn("certificate verify failed", delivery.last_error)
        self.assertEqual(receiver.requests, [])


class ParserModelTests(TemporaryMediaMixin, TestCase):
    def test_the_models_validation_refuses_a_loopback_webhook_wherever_the_parser_is_saved_from(self):
        parser = Parser(name="x", webhook_url="http://[::1]/hook")

        with self.assertRaises(ValidationError) as refused:
            parser.full_clean(exclude=["script"])

        self.assertIn("::1 is a loopback address", str(refused.exception))
