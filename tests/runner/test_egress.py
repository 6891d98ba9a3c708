"""The jail's way out: public addresses through the egress proxy, the host's own and private ones refused.

No test sends traffic beyond this machine: refused destinations are refused
before any packet leaves, and the allowed destination is a test host the test
makes itself in a network namespace, behind a veth pair, and removes afterwards.
"""

import os
import shutil
import tempfile
import unittest

import runner
from runner.egress import blocked_reason
from tests.helpers import require
from tests.hosts import CAN_MAKE_HOSTS, TestHost
from tests.runner.test_sandbox import ISOLATING_SUBPROCESS, SandboxTestCase, warm_under_bwrap

JAIL = require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")


class BlockedAddressTests(unittest.TestCase):
    def test_the_hosts_own_private_and_metadata_addresses_are_blocked(self):
        for address in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ]:
            with self.subTest(address=address):
                self.assertIsNotNone(blocked_reason(address))

    def test_public_addresses_are_allowed(self):
        for address in ["93.184.216.34", "1.1.1.1", "198.51.100.6", "2606:4700::1111"]:
            with self.subTest(address=address):
                self.assertIsNone(blocked_reason(address))


@JAIL
class RefusedDestinationTests(SandboxTestCase):
    backend = "bwrap"

    def test_the_hosts_services_private_ranges_and_metadata_are_refused_and_logged(self):
        outcome = self.run_source("""
            import requests

            def parse():
                lines = []
                for url in ["http://127.0.0.1:5432/", "http://10.1.2.3/", "http://169.254.169.254/latest/"]:
                    response = requests.get(url, timeout=5)
                    lines.append(f"{response.status_code} {response.text.strip()}")
                try:
                    requests.get("https://127.0.0.1:5672/", timeout=5)
                except requests.exceptions.ProxyError:
                    lines.append("https refused")
                return {"r.txt": "\\n".join(lines).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "r.txt")) as file:
            lines = file.read().split("\n")
        self.assertEqual(
            lines[:3],
            [
                "403 parseq: connections to 127.0.0.1:5432 are not allowed: 127.0.0.1 is a loopback address",
                "403 parseq: connections to 10.1.2.3:80 are not allowed: 10.1.2.3 is a private or reserved address",
                "403 parseq: connections to 169.254.169.254:80 are not allowed: "
                "169.254.169.254 is a link-local address",
            ],
        )
        self.assertEqual(lines[3], "https refused")
        self.assertIn("[parseq] refused: connections to 127.0.0.1:5672 are not allowed", outcome.log)

    def test_a_direct_connection_that_skips_the_proxy_goes_nowhere(self):
        outcome = self.run_source("""
            import socket

            def parse():
                try:
                    socket.create_connection(("127.0.0.1", 5432), timeout=2)
                    return {"r.txt": b"connected"}
                except OSError as error:
                    return {"r.txt": type(error).__name__.encode()}
        """)

        with open(os.path.join(self.out_dir, "r.txt")) as file:
            self.assertEqual(file.read(), "ConnectionRefusedError")
        self.assertEqual(outcome.status, runner.COMPLETED)


@JAIL
@unittest.skipUnless(CAN_MAKE_HOSTS, "making a test host in a network namespace needs root and iproute2")
class AllowedDestinationTests(SandboxTestCase):
    backend = "bwrap"

    def setUp(self):
        super().setUp()
        self.site = tempfile.mkdtemp(prefix="parseq-site-")
        self.addCleanup(shutil.rmtree, self.site, ignore_errors=True)
        with open(os.path.join(self.site, "page.html"), "w") as file:
            file.write("<title>served by the test host</title>")
        self.host = TestHost(self.site).__enter__()
        self.addCleanup(self.host.__exit__, None, None, None)

    def test_a_restricted_scraper_fetches_a_page_from_an_outside_host_through_the_proxy(self):
        outcome = self.run_source(
            f"""
            import requests
            from bs4 import BeautifulSoup

            def parse():
                page = requests.get("http://{self.host.address}:8080/page.html", timeout=10)
                page.raise_for_status()
                return {{"title.txt": BeautifulSoup(page.text, "html.parser").title.string.encode()}}
            """,
            restricted=True,
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "title.txt")) as file:
            self.assertEqual(file.read(), "served by the test host")

    def test_a_connect_tunnel_reaches_the_outside_host(self):
        outcome = self.run_source(f"""
            import http.client, os, urllib.parse

            def parse():
                proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
                connection = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
                connection.set_tunnel("{self.host.address}", 8080)
                connection.request("GET", "/page.html")
                return {{"page.html": connection.getresponse().read()}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "page.html")) as file:
            self.assertIn("served by the test host", file.read())


@JAIL
class ProxyLimitTests(SandboxTestCase):
    backend = "bwrap"

    def test_a_flood_of_connections_to_the_proxy_is_capped_and_noted_in_the_log(self):
        outcome = self.run_source("""
            import os, socket, time

            def parse():
                held = []
                for _ in range(60):
                    connection = socket.socket(socket.AF_UNIX)
                    connection.connect(os.path.join(os.environ["HOME"], ".parseq-egress.sock"))
                    held.append(connection)
                time.sleep(0.5)
                return {}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertIn("[parseq] refused: more than 32 connections at once", outcome.log)


def under_isolating_subprocess(test_class):
    """The same tests through the subprocess backend, where it isolates the network (as root)."""
    variant = type(f"Subprocess{test_class.__name__}", (test_class,), {"backend": "subprocess", "__module__": __name__})
    return unittest.skipUnless(ISOLATING_SUBPROCESS, "the subprocess backend isolates the network only as root")(
        variant
    )


def warm_under_root(test_class):
    """The same tests forked from the warm zygote, which gives each fork a network namespace as root."""
    variant = type(
        f"Warm{test_class.__name__}", (test_class,), {"backend": "subprocess", "warm": True, "__module__": __name__}
    )
    return unittest.skipUnless(os.geteuid() == 0, "a warm sandbox isolates the network only as root")(variant)


SubprocessRefusedDestinationTests = under_isolating_subprocess(RefusedDestinationTests)
SubprocessAllowedDestinationTests = under_isolating_subprocess(AllowedDestinationTests)
SubprocessProxyLimitTests = under_isolating_subprocess(ProxyLimitTests)
WarmBwrapRefusedDestinationTests = warm_under_bwrap(RefusedDestinationTests)
WarmBwrapAllowedDestinationTests = warm_under_bwrap(AllowedDestinationTests)
WarmBwrapProxyLimitTests = warm_under_bwrap(ProxyLimitTests)
WarmRefusedDestinationTests = warm_under_root(RefusedDestinationTests)
WarmAllowedDestinationTests = warm_under_root(AllowedDestinationTests)
WarmProxyLimitTests = warm_under_root(ProxyLimitTests)
