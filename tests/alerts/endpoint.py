"""A real webhook endpoint for tests: an HTTP server on a free local port, in a thread of the test.

It records every request and answers 200, unless told to fail a number of times, to hang,
to redirect, or to answer a body of its own.

It listens on loopback, which the webhook address policy refuses: a test allows it with
`override_settings(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)`, as an operator allows an internal receiver.
"""

import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import wait_until

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    arrived: float  # time.monotonic()

    def json(self):
        return json.loads(self.body)


class WebhookEndpoint:
    """Use as a context manager; `url` is where it listens (https with a `certificate`: a PEM of cert and key)."""

    def __init__(self, *, certificate=None):
        self.requests = []
        self.arrived = threading.Event()
        self._failures_left = 0
        self._failure_code = 500
        self._hang_seconds = 0.0
        self._redirect_to = None
        self._answer_body = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.endpoint = self
        self.scheme = "http"
        if certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._released.set()  # a hanging answer ends now
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self._server.server_port}/hook"

    def fail(self, times, *, code=500):
        """Answer the next `times` requests with `code`."""
        self._failures_left, self._failure_code = times, code

    def hang(self, seconds):
        """Wait `seconds` (or until the endpoint stops) before answering each request."""
        self._hang_seconds = seconds

    def redirect(self, location):
        """Answer every request with a 302 to `location`."""
        self._redirect_to = location

    def answer(self, code, body):
        """Answer every request with `code` and `body` (bytes)."""
        self._answer_body = (code, body)

    def payloads(self):
        return [request.json() for request in self.requests]

    def wait_for_requests(self, count, timeout=10):
        wait_until(lambda: len(self.requests) >= count, timeout=timeout, message=f"{count} request(s) at the endpoint")
        return self.requests

    def _answer(self, handler, body):
        with self._lock:
            self.requests.append(Received(handler.path, dict(handler.headers.items()), body, time.monotonic()))
            failing = self._failures_left > 0
            if failing:
                self._failures_left -= 1
        self.arrived.set()
        if self._hang_seconds:
            self._released.wait(self._hang_seconds)
        if self._redirect_to:
            return 302, {"Location": self._redirect_to}, b""
        if self._answer_body:
            code, content = self._answer_body
            return code, {"Content-Type": "text/plain"}, content
        if failing:
            return self._failure_code, {"Content-Type": "text/plain"}, b"temporarily\nbroken"
        return 200, {"Content-Type": "text/plain"}, b"ok"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        code, headers, content = self.server.endpoint._answer(self, body)
        try:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        except OSError:
            pass  # the client gave up (it timed out): nobody reads the answer

    def log_message(self, format, *args):
        pass


def unreachable_url():
    """A URL on a local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
