"""The jail's way out: public addresses through the egress proxy, the host's own and private ones refused.

The address policy itself (runner/addresses.py, shared with webhooks) is tested here too.

No test sends traffic beyond this machine: refused destinations are refused
before any packet leaves, and the allowed destination is a test host the test
makes itself in a network namespace, behind a veth pair, and removes afterwards.
"""

import asyncio
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from django.conf import settings

import runner
from runner import addresses, egress
from tests.helpers import require, wait_until
from tests.hosts import CAN_MAKE_HOSTS, PORT, TestHost
from tests.runner.test_sandbox import ISOLATING_SUBPROCESS, SandboxTestCase, under_docker, warm_under_bwrap

JAIL = require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")


# One address of each range the policy refuses, and what the refusal calls it.
REFUSED_RANGES = [
    ("0.0.0.1", "0.0.0.1 is a 'this network' address (0.0.0.0/8)"),
    ("10.0.0.1", "10.0.0.1 is a private address"),
    ("100.64.0.1", "100.64.0.1 is a shared address (carrier-grade NAT, 100.64.0.0/10)"),
    ("127.8.9.10", "127.8.9.10 is a loopback address"),
    ("169.254.169.254", "169.254.169.254 is a link-local address"),
    ("172.16.5.4", "172.16.5.4 is a private address"),
    ("192.0.0.9", "192.0.0.9 is an IETF protocol assignment (192.0.0.0/24)"),
    ("192.0.0.192", "192.0.0.192 is an IETF protocol assignment (192.0.0.0/24)"),  # Oracle Cloud's metadata
    ("192.0.2.1", "192.0.2.1 is a documentation address"),
    ("192.31.196.1", "192.31.196.1 is an AS112 DNS address"),
    ("192.52.193.1", "192.52.193.1 is an AMT relay address (192.52.193.0/24)"),
    ("192.88.99.1", "192.88.99.1 is a deprecated 6to4 relay address (192.88.99.0/24)"),
    ("192.168.1.1", "192.168.1.1 is a private address"),
    ("192.175.48.1", "192.175.48.1 is an AS112 DNS address"),
    ("198.18.0.1", "198.18.0.1 is a benchmarking address (198.18.0.0/15)"),
    ("198.19.255.254", "198.19.255.254 is a benchmarking address (198.18.0.0/15)"),
    ("198.51.100.6", "198.51.100.6 is a documentation address"),
    ("203.0.113.7", "203.0.113.7 is a documentation address"),
    ("224.0.0.1", "224.0.0.1 is a multicast address"),
    ("239.255.255.250", "239.255.255.250 is a multicast address"),
    ("240.0.0.1", "240.0.0.1 is a reserved address (240.0.0.0/4)"),
    ("255.255.255.255", "255.255.255.255 is the broadcast address"),
    ("::", ":: is the unspecified address"),
    ("::1", "::1 is a loopback address"),
    ("100::1", "100::1 is a discard-only address (100::/64)"),
    ("100:0:0:1::1", "100:0:0:1::1 is a dummy prefix address (100:0:0:1::/64)"),
    ("2001:2::1", "2001:2::1 is an IETF protocol assignment (2001::/23)"),
    ("2001:db8::1", "2001:db8::1 is a documentation address"),
    ("2620:4f:8000::1", "2620:4f:8000::1 is an AS112 DNS address"),
    ("3fff::1", "3fff::1 is a documentation address"),
    ("5f00::1", "5f00::1 is an SRv6 segment identifier (5f00::/16)"),
    ("fd00::1", "fd00::1 is a unique local (private) address"),
    ("fc00::1", "fc00::1 is a unique local (private) address"),
    ("fe80::1", "fe80::1 is a link-local address"),
    ("fe80::1%eth0", "fe80::1%eth0 is a link-local address"),
    ("fec0::1", "fec0::1 is a site-local address (deprecated)"),
    ("ff02::1", "ff02::1 is a multicast address"),
    ("4000::1", "4000::1 is a reserved address (outside the global unicast 2000::/3)"),
]
PUBLIC_ADDRESSES = ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001::1"]
# IPv6 forms that carry an IPv4 address, with a public and a loopback or private one in each.
EMBEDDED = [
    ("::ffff:8.8.8.8", None),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1 embeds 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "::ffff:169.254.169.254 embeds 169.254.169.254, a link-local address"),
    ("64:ff9b::8.8.8.8", None),
    ("64:ff9b::a00:1", "64:ff9b::a00:1 embeds 10.0.0.1, a private address"),
    ("64:ff9b::127.0.0.1", "64:ff9b::127.0.0.1 embeds 127.0.0.1, a loopback address"),
    ("2002:808:808::1", None),
    ("2002:7f00:1::", "2002:7f00:1:: embeds 127.0.0.1, a loopback address"),
    ("2002:c0a8:101::", "2002:c0a8:101:: embeds 192.168.1.1, a private address"),
]
# Refused whatever they carry: deprecated, local, or the packets go through someone else's relay.
REFUSED_OUTRIGHT = [
    ("::808:808", "::808:808 is an IPv4-compatible address (deprecated, ::/96), embedding 8.8.8.8"),
    ("::7f00:1", "::7f00:1 is an IPv4-compatible address (deprecated, ::/96), embedding 127.0.0.1"),
    ("64:ff9b:1::808:808", "64:ff9b:1::808:808 is a local-use NAT64 address (64:ff9b:1::/48)"),
    (
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo for 8.8.8.8, the client's address inverted
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7 is a Teredo tunnel address (2001::/32), "
        "for 8.8.8.8 through the server 65.54.227.120",
    ),
    (
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2001:0:4136:e378:8000:63bf:80ff:fffe is a Teredo tunnel address (2001::/32), "
        "for 127.0.0.1 through the server 65.54.227.120",
    ),
]


class AddressPolicyTests(unittest.TestCase):
    """runner.addresses: the one policy of the egress proxy and of webhooks."""

    def test_every_special_purpose_range_is_refused_naming_the_address_and_what_it_is(self):
        for address, reason in REFUSED_RANGES:
            with self.subTest(address=address):
                self.assertEqual(addresses.refusal(address), reason)

    def test_public_addresses_are_allowed(self):
        for address in PUBLIC_ADDRESSES:
            with self.subTest(address=address):
                self.assertIsNone(addresses.refusal(address))

    def test_an_ipv4_address_embedded_in_ipv6_is_judged_as_that_ipv4_address(self):
        for address, reason in EMBEDDED:
            with self.subTest(address=address):
                self.assertEqual(addresses.refusal(address), reason)

    def test_ipv4_compatible_local_use_nat64_and_teredo_are_refused_whatever_they_carry(self):
        for address, reason in REFUSED_OUTRIGHT:
            with self.subTest(address=address):
                self.assertEqual(addresses.refusal(address), reason)

    def test_an_allowed_network_lets_its_addresses_through_and_nothing_else(self):
        # Given an operator who allows the loopback network and an internal /24 (as texts or networks)
        allowed = ["127.0.0.0/8", ipaddress.ip_network("10.20.30.0/24")]

        # Then those addresses pass, an IPv6 form of an allowed IPv4 address too
        for address in ["127.0.0.1", "10.20.30.40", "::ffff:127.0.0.1", "64:ff9b::a14:1e28"]:
            with self.subTest(address=address):
                self.assertIsNone(addresses.refusal(address, allowed=allowed))
        # And the rest of the policy still holds
        self.assertEqual(addresses.refusal("10.20.31.1", allowed=allowed), "10.20.31.1 is a private address")
        self.assertEqual(addresses.refusal("::1", allowed=allowed), "::1 is a loopback address")

    def test_an_operators_refused_network_is_refused_whatever_else_is_said_of_it(self):
        # Given an operator who refuses the public address of the host their worker containers run on
        refused = ["93.184.216.0/24"]

        # Then it is refused, even where an allow-list would let it through, and so are its IPv6 forms
        for address in ["93.184.216.34", "::ffff:93.184.216.34", "2002:5db8:d822::1"]:
            with self.subTest(address=address):
                reason = addresses.refusal(address, allowed=refused, refused=refused)
                self.assertEqual(reason, f"{address} is in a network this Parseq's operator refuses")
        self.assertIsNone(addresses.refusal("93.184.217.1", refused=refused))

    def test_a_port_must_be_a_port(self):
        for authority in ["example.com:70000", "example.com:0", "example.com:+80", "example.com:\uff18\uff10"]:
            with self.subTest(authority=authority), self.assertRaises(addresses.Refused):
                egress.split_host_port(authority, default_port=443)
        self.assertEqual(egress.split_host_port("[::1]:8443", default_port=443), ("::1", 8443))

    def test_something_that_is_not_an_address_is_refused(self):
        self.assertEqual(addresses.refusal("example.com"), "'example.com' is not an IP address")

    def test_a_name_is_resolved_once_and_refused_naming_the_host_and_the_address(self):
        with self.assertRaises(addresses.Refused) as refused:
            addresses.resolve("localhost", 8000)

        self.assertRegex(
            str(refused.exception), r"^connections to localhost:8000 are not allowed: (127\.0\.0\.1|::1) is a loopback"
        )

    def test_an_ip_literal_resolves_to_itself_and_an_ipv6_one_is_named_in_brackets(self):
        self.assertEqual(addresses.resolve("8.8.8.8", 443), ("8.8.8.8", 443))
        with self.assertRaises(addresses.Refused) as refused:
            addresses.resolve("[::1]", 80)
        self.assertEqual(str(refused.exception), "connections to [::1]:80 are not allowed: ::1 is a loopback address")
        self.assertEqual(addresses.resolve("127.0.0.1", 80, allowed=["127.0.0.0/8"]), ("127.0.0.1", 80))

    def test_a_name_that_does_not_resolve_is_unresolvable(self):
        with self.assertRaises(addresses.Unresolvable) as refused:
            addresses.resolve("no-such-host.invalid", 80)

        self.assertTrue(str(refused.exception).startswith("cannot resolve no-such-host.invalid: "))
        self.assertIsInstance(refused.exception, addresses.Refused)

    def test_the_egress_proxy_refuses_with_the_same_exception(self):
        self.assertIs(egress.Refused, addresses.Refused)


@unittest.skipUnless(CAN_MAKE_HOSTS, "a network and mount namespace of the test's own needs root and iproute2")
class NamespaceAddressTests(unittest.TestCase):
    """What only a namespace of the test's own can show: this host's addresses, and a name with two addresses."""

    def setUp(self):
        self.namespace = f"pqaddr{random.randrange(16**6):06x}"
        subprocess.run(["ip", "netns", "add", self.namespace], check=True, capture_output=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.namespace], capture_output=True)

    def ip(self, *arguments):
        subprocess.run(["ip", "-n", self.namespace, *arguments], check=True, capture_output=True)

    def python_in_namespace(self, code):
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", code],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.splitlines()

    def test_a_public_address_of_this_host_is_refused_as_this_hosts_own(self):
        # Given a namespace whose interface has public-looking addresses (they never leave it)
        # (a veth pair with both ends inside: this kernel may have no dummy interfaces)
        self.ip("link", "add", "pqeth0", "type", "veth", "peer", "name", "pqeth1")
        self.ip("addr", "add", "8.8.4.4/32", "dev", "pqeth0")
        self.ip("addr", "add", "2001:4860:4860::8844/128", "dev", "pqeth0", "nodad")
        self.ip("link", "set", "pqeth0", "up")
        self.ip("link", "set", "pqeth1", "up")

        # When the policy is asked about them in that namespace
        lines = self.python_in_namespace(
            "from runner.addresses import refusal\n"
            "for address in ['8.8.4.4', '2001:4860:4860::8844', '::ffff:8.8.4.4', '8.8.8.8']:\n"
            "    print(refusal(address))"
        )

        # Then they are refused as this host's own addresses, and another public address is not
        self.assertEqual(
            lines,
            [
                "8.8.4.4 is an address of this host",
                "2001:4860:4860::8844 is an address of this host",
                "::ffff:8.8.4.4 embeds 8.8.4.4, an address of this host",
                "None",
            ],
        )
        # And outside the namespace they are public addresses like any other
        self.assertIsNone(addresses.refusal("8.8.4.4"))
        self.assertIsNone(addresses.refusal("2001:4860:4860::8844"))

    def test_every_address_of_a_local_route_is_this_hosts_own(self):
        # Given a host that answers a whole public range itself, as scraping hosts do to rotate their addresses
        self.ip("link", "set", "lo", "up")
        self.ip("route", "add", "local", "9.9.9.0/24", "dev", "lo")
        self.ip("-6", "route", "add", "local", "2606:4700:1::/64", "dev", "lo")

        # When the policy is asked about addresses in those ranges, and next to them
        lines = self.python_in_namespace(
            "from runner.addresses import refusal\n"
            "for address in ['9.9.9.9', '::ffff:9.9.9.200', '2606:4700:1::5', '9.9.10.1', '2606:4700:2::5']:\n"
            "    print(refusal(address))"
        )

        # Then the routed ranges are this host (found by an attacker), and the rest of the internet is not
        self.assertEqual(
            lines,
            [
                "9.9.9.9 is an address of this host",
                "::ffff:9.9.9.200 embeds 9.9.9.200, an address of this host",
                "2606:4700:1::5 is an address of this host",
                "None",
                "None",
            ],
        )

    def test_the_hosts_addresses_are_read_again_once_the_cache_has_expired(self):
        # Given a process that has read this host's addresses, with a short cache
        lines = self.python_in_namespace(
            "import subprocess, time\n"
            "from runner import addresses\n"
            "addresses.LOCAL_ADDRESSES_TTL = 1\n"
            "print(addresses.refusal('8.8.4.4'))\n"
            # When the host gains an address
            "subprocess.run(['ip', 'addr', 'add', '8.8.4.4/32', 'dev', 'lo'], check=True)\n"
            "print(addresses.refusal('8.8.4.4'))\n"
            "time.sleep(1.2)\n"
            "print(addresses.refusal('8.8.4.4'))"
        )

        # Then the policy knows it after the cache's few seconds, not at once
        self.assertEqual(lines, ["None", "None", "8.8.4.4 is an address of this host"])

    def test_a_name_with_one_public_and_one_loopback_address_is_refused(self):
        # Given a name that resolves to a public address first and a loopback one second
        hosts = tempfile.NamedTemporaryFile("w", prefix="parseq-hosts-", delete=False)  # noqa: SIM115
        self.addCleanup(os.unlink, hosts.name)
        with hosts:
            hosts.write("8.8.8.8 mixed.parseq.test\n127.0.0.1 mixed.parseq.test\n")
        code = (
            "from runner import addresses\n"
            "import socket\n"
            "print(sorted({info[4][0] for info in socket.getaddrinfo('mixed.parseq.test', 80)}))\n"
            "try:\n"
            "    addresses.resolve('mixed.parseq.test', 80)\n"
            "except addresses.Refused as refused:\n"
            "    print(refused)\n"
        )

        # When it is resolved where that is what /etc/hosts says (a mount namespace of its own)
        in_namespace = f'mount --bind {hosts.name} /etc/hosts && exec "$0" -c "$1"'
        result = subprocess.run(
            ["unshare", "--mount", "sh", "-c", in_namespace, sys.executable, code],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )

        # Then the name is refused for its loopback address, although the public one comes first
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.splitlines(),
            [
                "['127.0.0.1', '8.8.8.8']",
                "connections to mixed.parseq.test:80 are not allowed: 127.0.0.1 is a loopback address",
            ],
        )


@JAIL
class RefusedDestinationTests(SandboxTestCase):
    backend = "bwrap"

    def test_the_hosts_services_private_ranges_and_metadata_are_refused_and_logged(self):
        outcome = self.run_source("""
            import requests

            def parse():
                lines = []
                for url in [
                    "http://127.0.0.1:5432/",
                    "http://10.1.2.3/",
                    "http://169.254.169.254/latest/",
                    "http://[::ffff:127.0.0.1]:5432/",
                    "http://[2002:7f00:1::]:5432/",
                ]:
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
            lines[:5],
            [
                "403 parseq: connections to 127.0.0.1:5432 are not allowed: 127.0.0.1 is a loopback address",
                "403 parseq: connections to 10.1.2.3:80 are not allowed: 10.1.2.3 is a private address",
                "403 parseq: connections to 169.254.169.254:80 are not allowed: "
                "169.254.169.254 is a link-local address",
                "403 parseq: connections to [::ffff:127.0.0.1]:5432 are not allowed: "
                "::ffff:127.0.0.1 embeds 127.0.0.1, a loopback address",
                "403 parseq: connections to [2002:7f00:1::]:5432 are not allowed: "
                "2002:7f00:1:: embeds 127.0.0.1, a loopback address",
            ],
        )
        self.assertEqual(lines[5], "https refused")
        self.assertIn("[parseq] refused: connections to 127.0.0.1:5672 are not allowed", outcome.log)

    def test_a_run_that_fails_on_a_refused_request_ends_with_the_proxys_reason(self):
        for url, last_line in [
            (
                "http://127.0.0.1:8197/data",
                "egress refused http://127.0.0.1:8197/data: 127.0.0.1 is a loopback address",
            ),
            ("https://10.1.2.3/", "egress refused 10.1.2.3:443: 10.1.2.3 is a private address"),
            (
                "http://no-such-host.invalid/",
                "egress refused http://no-such-host.invalid/: cannot resolve no-such-host.",
            ),
        ]:
            with self.subTest(url=url):
                outcome = self.run_source(f"""
                    import requests

                    def parse():
                        requests.get("{url}", timeout=5).raise_for_status()
                        return {{}}
                """)

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertTrue(outcome.error.splitlines()[-1].startswith(last_line), outcome.error[-300:])

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
            allowed_networks=[self.host.network],
            extra_ports=[PORT],
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "title.txt")) as file:
            self.assertEqual(file.read(), "served by the test host")

    def test_a_connect_tunnel_reaches_the_outside_host(self):
        outcome = self.run_source(
            f"""
            import http.client, os, urllib.parse

            def parse():
                proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
                connection = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
                connection.set_tunnel("{self.host.address}", 8080)
                connection.request("GET", "/page.html")
                return {{"page.html": connection.getresponse().read()}}
        """,
            allowed_networks=[self.host.network],
            extra_ports=[PORT],
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "page.html")) as file:
            self.assertIn("served by the test host", file.read())

    def test_a_port_besides_80_and_443_needs_to_be_one_of_the_parsers_extra_ports(self):
        source = f"""
            import requests

            def parse():
                page = requests.get("http://{self.host.address}:{PORT}/page.html", timeout=10)
                return {{"r.txt": f"{{page.status_code}} {{page.text.strip()}}".encode()}}
        """

        refused = self.run_source(source, allowed_networks=[self.host.network])
        with open(os.path.join(self.out_dir, "r.txt")) as file:
            answer = file.read()

        self.assertEqual(refused.status, runner.COMPLETED, refused.error + refused.log)
        self.assertEqual(
            answer,
            f"403 parseq: port {PORT} is not open to this parser's requests (only 80, 443; see its extra egress ports)",
        )

    def test_an_operators_refused_network_wins_over_an_allowed_one(self):
        outcome = self.run_source(
            f"""
            import requests

            def parse():
                page = requests.get("http://{self.host.address}:8080/page.html", timeout=10)
                return {{"r.txt": f"{{page.status_code}} {{page.text.strip()}}".encode()}}
            """,
            allowed_networks=[self.host.network],
            extra_ports=[PORT],
            refused_networks=[self.host.network],
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "r.txt")) as file:
            self.assertIn(f"{self.host.address} is in a network this Parseq's operator refuses", file.read())

    def test_without_its_network_allowed_the_same_host_is_refused_as_a_documentation_address(self):
        outcome = self.run_source(f"""
            import requests

            def parse():
                page = requests.get("http://{self.host.address}:8080/page.html", timeout=10)
                return {{"r.txt": f"{{page.status_code}} {{page.text.strip()}}".encode()}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        with open(os.path.join(self.out_dir, "r.txt")) as file:
            self.assertEqual(
                file.read(),
                f"403 parseq: connections to {self.host.address}:8080 are not allowed: "
                f"{self.host.address} is a documentation address",
            )


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

    def test_what_a_run_opened_through_the_proxy_is_closed_when_it_ends(self):
        # Given a site that accepts connections and never answers nor closes them (a process of its own)
        port = silent_site(self)
        self.run_source("def parse():\n    return {}\n")  # a warm start's zygote is made by the first run
        threads, descriptors = threading.active_count(), open_descriptors()

        # When a run tunnels 30 connections to it, and opens 2 more that never say what they want
        outcome = self.run_source(
            f"""
            import os, socket

            def parse():
                held = []
                for number in range(32):
                    connection = socket.socket(socket.AF_UNIX)
                    connection.connect(os.path.join(os.environ["HOME"], ".parseq-egress.sock"))
                    if number < 30:
                        connection.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n")
                        assert connection.recv(100).startswith(b"HTTP/1.1 200")
                    held.append(connection)
                return {{}}
            """,
            allowed_networks=["127.0.0.0/8"],
            extra_ports=[port],
        )

        # Then the worker is back to its descriptors of before, and to its threads but for the proxy's resolving
        # threads, which stay for later runs and are never more than a few (found: 60 threads left for good)
        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        wait_until(
            lambda: threading.active_count() <= threads + egress.RESOLVERS and open_descriptors() <= descriptors,
            timeout=5,
            message=f"{threads} threads (+ {egress.RESOLVERS} at most) and {descriptors} descriptors, as before",
        )

    def test_a_hundred_connections_of_four_runs_at_once_cost_the_worker_no_thread_each(self):
        # Given a site that holds every connection open without a word
        port = silent_site(self)
        self.run_source("def parse():\n    return {}\n")  # a warm start's zygote is made by the first run
        threads = threading.active_count()
        most = [threads]
        source = f"""
            import os, socket, time

            def parse():
                held = []
                for number in range(25):
                    connection = socket.socket(socket.AF_UNIX)
                    connection.connect(os.path.join(os.environ["HOME"], ".parseq-egress.sock"))
                    connection.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n")
                    assert connection.recv(100).startswith(b"HTTP/1.1 200")
                    held.append(connection)
                time.sleep(2)
                return {{}}
        """
        outcomes = []

        def run(number):
            # Each run its own script file: a shared one could be rewritten before a run reads it.
            name = f"holder_{number}.py"
            outcomes.append(self.run_source(source, name=name, allowed_networks=["127.0.0.0/8"], extra_ports=[port]))

        # When four runs at once each hold 25 tunnels to it
        runs = [threading.Thread(target=run, args=(number,)) for number in range(4)]
        for thread in runs:
            thread.start()
        while any(thread.is_alive() for thread in runs):
            most[0] = max(most[0], threading.active_count())
            time.sleep(0.05)

        # Then all complete, and the worker's threads grew by the four runs' own and the few resolving threads:
        # a thread (or two) for each of the 100 connections would be over a hundred more
        for outcome in outcomes:
            self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        self.assertLessEqual(most[0], threads + 4 + egress.RESOLVERS)

    def test_a_relayed_connection_idle_both_ways_is_closed(self):
        left, right = socket.socketpair()
        far, near = socket.socketpair()
        started = time.monotonic()

        async def relay_in_silence():
            first = await asyncio.open_unix_connection(sock=right)
            second = await asyncio.open_unix_connection(sock=near)
            await egress.relay(first, second, idle_timeout=0.4)  # nobody sends anything
            for _, writer in (first, second):
                writer.close()

        asyncio.run(relay_in_silence())

        self.assertLess(time.monotonic() - started, 2)
        for sock in (left, far):
            sock.close()


class ProxyAbuseTests(unittest.TestCase):
    """A script that abuses the proxy itself, driven here without a sandbox: the worker's memory, descriptors
    and name lookups stay bounded, and other runs are not held up.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def proxy(self, name="proxy.sock", **options):
        path = os.path.join(self.directory, name)
        return path, egress.EgressProxy(path, allowed_networks=["127.0.0.0/8"], **options)

    def ask(self, path, head, *, timeout=10):
        """Send a request head to the proxy at `path`; its first answer, and the connection."""
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(timeout)
        client.connect(path)
        client.sendall(head)
        return client.recv(200), client

    def test_a_flood_of_refused_requests_with_huge_host_names_keeps_the_log_note_small(self):
        # Given a run that asks 500 times for a host name of 60,000 characters
        def flood():
            for _ in range(500):
                self.ask(path, b"CONNECT " + b"a" * 60_000 + b":443 HTTP/1.1\r\n\r\n")[1].close()
            return runner.Outcome(runner.COMPLETED)

        path = os.path.join(self.directory, egress.EGRESS_SOCKET)
        outcome = egress.behind_egress_proxy(flood, workdir=self.directory)

        # Then its log names 20 refusals, each short, and counts the rest (it once kept 500 x 240 KB)
        refusals = outcome.log.splitlines()
        self.assertEqual(len(refusals), egress.REFUSALS_NAMED + 1)
        self.assertIn("longer than any host name", refusals[0])
        self.assertEqual(refusals[-1], "[parseq] refused: 480 more refusal(s) not listed")
        self.assertLess(len(outcome.log), 5_000)

    def test_a_tunnel_to_a_site_that_never_reads_leaves_no_socket_behind_once_the_run_ends(self):
        # Given a tunnel to a site that never reads, with megabytes pushed into it until nothing more goes
        port = silent_site(self)
        descriptors = open_descriptors()
        path, proxy = self.proxy(extra_ports=[port])
        answer, client = self.ask(path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        client.settimeout(2)
        try:
            while True:
                client.send(b"x" * 65536)
        except TimeoutError:
            pass  # every buffer on the way is full

        # When the run ends
        client.close()
        proxy.close()

        # Then the worker holds no socket of it (it kept the site's with its unsent data, for good)
        wait_until(lambda: open_descriptors() <= descriptors, timeout=5, message=f"{descriptors} descriptors")

    def test_lookups_that_hang_in_runs_that_ended_do_not_hold_up_another_runs_address(self):
        # Given names that take 4 s to look up, as with name servers that never answer
        real_lookup = socket.getaddrinfo

        def slow_lookup(host, *arguments, **options):
            if host.endswith(".slow"):
                time.sleep(4)
            return real_lookup(host, *arguments, **options)

        patcher = mock.patch.object(addresses.socket, "getaddrinfo", slow_lookup)
        patcher.start()
        self.addCleanup(time.sleep, 4.5)  # the lookups end before the patch goes
        self.addCleanup(patcher.stop)
        # And runs that each ask for 4 of them and end at once, until every resolving thread is busy
        for number in range(egress.RESOLVERS // egress.RESOLVING_PER_RUN):
            path, proxy = self.proxy(name=f"ended-{number}.sock")
            clients = [socket.socket(socket.AF_UNIX) for _ in range(egress.RESOLVING_PER_RUN)]
            for lookup, client in enumerate(clients):
                client.connect(path)
                client.sendall(f"CONNECT site{lookup}.slow:443 HTTP/1.1\r\n\r\n".encode())
            time.sleep(0.2)  # the lookups begin
            proxy.close()
            for client in clients:
                client.close()
        port = silent_site(self)

        # When another run asks for an address
        path, proxy = self.proxy(name="other.sock", extra_ports=[port])
        self.addCleanup(proxy.close)
        began = time.monotonic()
        answer, client = self.ask(path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        client.close()

        # Then it is answered at once: an address needs no lookup, and waits for none
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        self.assertLess(time.monotonic() - began, 2)


SILENT_SERVER = """
import socket, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
held = []
while True:
    held.append(server.accept()[0])
"""


def silent_site(test):
    """A site on loopback that accepts connections and never reads from them nor closes them, for the length of
    `test`; its port.
    """
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    test.addCleanup(silent.wait)
    test.addCleanup(silent.kill)
    return int(silent.stdout.readline())


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


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
DockerRefusedDestinationTests = under_docker(RefusedDestinationTests)
DockerAllowedDestinationTests = under_docker(AllowedDestinationTests)
DockerProxyLimitTests = under_docker(ProxyLimitTests)
WarmBwrapRefusedDestinationTests = warm_under_bwrap(RefusedDestinationTests)
WarmBwrapAllowedDestinationTests = warm_under_bwrap(AllowedDestinationTests)
WarmBwrapProxyLimitTests = warm_under_bwrap(ProxyLimitTests)
WarmRefusedDestinationTests = warm_under_root(RefusedDestinationTests)
WarmAllowedDestinationTests = warm_under_root(AllowedDestinationTests)
WarmProxyLimitTests = warm_under_root(ProxyLimitTests)
