"""Hosts of the tests' own: network namespaces behind veth pairs, with an HTTP server in each.

Sandboxed scripts may not reach loopback, private or documentation addresses (the egress
proxy refuses them), so a site a test serves to a script lives at a TEST-NET-2 address of
its own, and the test lets the proxy through to it: `run_script(..., allowed_networks=[host.network])`.
A TEST-NET-2 address is never routed on the internet, so allowing it lets nothing else through.
"""

import ipaddress
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from tests import processes

CAN_MAKE_HOSTS = os.geteuid() == 0 and shutil.which("ip") is not None
FIXTURE_SERVER = Path(__file__).with_name("fixture_server.py")
PORT = 8080


class TestHost:
    """Serves `directory`: as plain files, or, with `routes=True`, as its routes.json says (fixture_server.py)."""

    def __init__(self, directory, *, routes=False):
        self.directory = str(directory)
        self.routes = routes
        self.name = f"pq{random.randrange(16**6):06x}"
        block = random.randrange(1, 63) * 4  # a /30 of TEST-NET-2, so that parallel runs do not collide
        self.host_side, self.address = f"198.51.100.{block + 1}", f"198.51.100.{block + 2}"
        # The /30 of this host alone: the network a test allows the egress proxy to reach.
        self.network = ipaddress.ip_network(f"198.51.100.{block}/30")

    @property
    def url(self):
        return f"http://{self.address}:{PORT}"

    def __enter__(self):
        ns, veth = self.name, f"v{self.name}"
        for command in (
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}h"],
            ["ip", "link", "set", f"{veth}h", "netns", ns],
            ["ip", "addr", "add", f"{self.host_side}/30", "dev", veth],
            ["ip", "link", "set", veth, "up"],
            ["ip", "-n", ns, "addr", "add", f"{self.address}/30", "dev", f"{veth}h"],
            ["ip", "-n", ns, "link", "set", f"{veth}h", "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        if self.routes:
            server = [str(FIXTURE_SERVER), self.address, str(PORT), self.directory]
        else:
            server = ["-m", "http.server", str(PORT), "--bind", self.address, "--directory", self.directory]
        self.server = processes.start(
            ["ip", "netns", "exec", ns, sys.executable, *server],
            name=f"host-{ns}",
            ready=lambda: processes.port_accepting(self.address, PORT),
            timeout=10,
            message="the test host's server",
        )
        return self

    def __exit__(self, *exc):
        self.server.kill()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"v{self.name}"], capture_output=True)
