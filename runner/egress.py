"""The egress proxy of the bwrap jail: the only way out of a jail whose network policy is "internet".

The jail has its own network namespace with nothing but a loopback. The
bootstrap listens there and passes every connection over a Unix socket to this
proxy, which runs in the worker, resolves the destination itself and refuses
what runner/addresses.py refuses (loopback, private, link-local, special-purpose
ranges, IPv4 hidden in IPv6, this host's own addresses: its services and cloud
metadata among them) before any packet is sent. It speaks HTTP: CONNECT for
https, absolute URIs for http, as HTTP(S)_PROXY.
"""

import contextlib
import os
import socket
import threading
import time

from runner.addresses import Refused, Unresolvable, as_networks, resolve
from runner.outcome import SCRIPT_ERROR

# The proxy's socket in a run's directory, where the jail or the container finds it.
EGRESS_SOCKET = ".parseq-egress.sock"

__all__ = ["EgressProxy", "Refused"]

HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 15
# A client has this long to send its request; a relayed connection with nothing passing either way this long is
# closed. Without them, a site that never answers would keep two threads and two descriptors of the worker for good.
HEAD_TIMEOUT = 30
IDLE_TIMEOUT = 60
# Where web pages are; a parser may add ports of its own. Any port would make the proxy a relay for any protocol.
DEFAULT_PORTS = (80, 443)
MAX_EXTRA_PORTS = 20
# Each connection costs the worker two threads: a jail gets this many at a time, not more.
MAX_CONNECTIONS = 32


class EgressProxy:
    """Serves one run's jail on a Unix socket, in daemon threads, until closed."""

    def __init__(self, socket_path, on_refusal=None, *, allowed_networks=(), refused_networks=(), extra_ports=()):
        """`allowed_networks`: networks the policy of runner.addresses lets through all the same (tests' own hosts);
        `refused_networks`: networks it keeps out all the same (an operator's), which win; `extra_ports`: ports
        besides 80 and 443 that requests may go to.
        """
        self.ports = frozenset((*DEFAULT_PORTS, *extra_ports))
        self.on_refusal = on_refusal or (lambda message: None)
        self.allowed_networks = as_networks(allowed_networks)
        self.refused_networks = as_networks(refused_networks)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(socket_path)
        self.server.listen(64)
        self.closed = False
        self.last_failure = None
        self.open_sockets = set()
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        threading.Thread(target=self.accept_forever, name="parseq-egress", daemon=True).start()

    def close(self):
        """Stop serving, and end every connection the run still has open: their threads return at once."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        with self.lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def track(self, sock):
        """Note `sock` as open until the connection it serves ends; one opened after close() is shut at once."""
        with self.lock:
            self.open_sockets.add(sock)
            closed = self.closed
        if closed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def forget(self, *sockets):
        with self.lock:
            self.open_sockets.difference_update(sockets)

    def accept_forever(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.slots.acquire(blocking=False):
                self.on_refusal(f"more than {MAX_CONNECTIONS} connections at once")
                client.close()
                continue
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        self.track(client)
        try:
            self.serve_connection(client)
        except OSError:
            pass  # the script or the site hung up mid-way: that connection is over, and no one else's
        finally:
            self.forget(client)
            self.slots.release()

    def serve_connection(self, client):
        with client:
            head = b""
            client.settimeout(HEAD_TIMEOUT)
            try:
                head, early_data = read_head(client)
                upstream, reply = self.open_upstream(head)
            except Refused as error:
                self.on_refusal(str(error))
                # What the run's error ends with, if the script fails: a library would only say "proxy error 403".
                why = str(error) if isinstance(error, Unresolvable) else error.reason  # "cannot resolve x: ..."
                self.last_failure = f"egress refused {requested(head)}: {why}"
                body = f"parseq: {error}\n".encode()
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n")
                client.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            self.track(upstream)
            try:
                with upstream:
                    if reply:
                        client.sendall(reply)
                    if early_data:  # a request body, or a client that did not wait for the tunnel
                        upstream.sendall(early_data)
                    relay(client, upstream)
            finally:
                self.forget(upstream)

    def open_upstream(self, head):
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            raise Refused("the proxy got a malformed request") from None
        if method == "CONNECT":
            host, port = split_host_port(target, default_port=443)
            return self.connect(host, port), b"HTTP/1.1 200 Connection established\r\n\r\n"
        if not target.startswith("http://"):
            raise Refused(f"the proxy only forwards http:// and CONNECT requests, not {target[:60]!r}")
        authority, _, path = target[len("http://") :].partition("/")
        host, port = split_host_port(authority, default_port=80)
        upstream = self.connect(host, port)
        headers = [line for line in rest.split(b"\r\n") if line and not is_hop_header(line)]
        forwarded = f"{method} /{path} {version}\r\n".encode() + b"".join(h + b"\r\n" for h in headers)
        upstream.sendall(forwarded + b"Connection: close\r\n\r\n")
        return upstream, b""

    def connect(self, host, port):
        # The address first: "127.0.0.1 is a loopback address" says more about localhost:5432 than its port does.
        address = resolve(host, port, allowed=self.allowed_networks, refused=self.refused_networks)
        if port not in self.ports:
            open_ports = ", ".join(str(port) for port in sorted(self.ports))
            raise Refused(
                f"port {port} is not open to this parser's requests (only {open_ports}; see its extra egress ports)"
            )
        try:
            return socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise Refused(f"cannot connect to {host}:{port}: {error.strerror or error}") from None


def egress_ports_problem(ports):
    """Why `ports` is not a parser's list of extra egress ports (whole numbers from 1 to 65535, each once), or None."""
    if not isinstance(ports, list):
        return "Give a list of port numbers, as [8080, 8443]."
    if len(ports) > MAX_EXTRA_PORTS:
        return f"At most {MAX_EXTRA_PORTS} extra ports."
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return f"{port!r} is not a port: a port is a whole number from 1 to 65535."
        if port in DEFAULT_PORTS:
            return f"Port {port} is always open: list only ports besides 80 and 443."
    if len(set(ports)) != len(ports):
        return "A port is listed twice."
    return None


def requested(head):
    """What a request head asked for, to name it in an error: the URL, or CONNECT's host:port."""
    parts = head.partition(b"\r\n")[0].decode("latin-1").split(" ")
    return parts[1][:200] if len(parts) == 3 else "a malformed request"


def read_head(connection):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        if not chunk or len(head) > HEAD_LIMIT:
            raise Refused("the proxy got an incomplete request")
        head += chunk
    head, _, early_data = head.partition(b"\r\n\r\n")
    return head, early_data


def split_host_port(authority, *, default_port):
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port:
        return host, default_port
    # Digits only, and a real port: socket functions would take "+80" or 70000 (as port 4464).
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Refused(f"bad port in {authority!r}")
    return host, int(port)


def is_hop_header(line):
    name = line.split(b":", 1)[0].strip().lower()
    return name in (b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive")


def relay(first, second, *, idle_timeout=IDLE_TIMEOUT):
    """Copy bytes both ways until either side closes, or nothing has passed either way for `idle_timeout` seconds."""
    last_passed = [time.monotonic()]

    def still_alive():
        # Quiet one way is not idle: a download's request side waits, a slow reader lets its buffer fill.
        return time.monotonic() - last_passed[0] < idle_timeout

    def send(target, data):
        view = memoryview(data)
        while view:
            try:
                view = view[target.send(view) :]
            except TimeoutError:
                if not still_alive():
                    raise
                continue
            last_passed[0] = time.monotonic()

    def pump(source, target):
        with contextlib.suppress(OSError):
            while True:
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    if still_alive():
                        continue
                    break
                if not data:
                    break
                last_passed[0] = time.monotonic()
                send(target, data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    for sock in (first, second):
        sock.settimeout(idle_timeout / 4)
    other = threading.Thread(target=pump, args=(second, first), daemon=True)
    other.start()
    pump(first, second)
    other.join()


def behind_egress_proxy(run, *, workdir, allowed_networks=(), refused_networks=(), extra_ports=()):
    """`run()`'s Outcome, with the run's egress proxy listening in `workdir` meanwhile (EGRESS_SOCKET).

    What the proxy refused goes to the end of the log; a failed run's error ends with the proxy's reason,
    since the script's own last line only says "ProxyError ... 403 Forbidden".
    """
    refusals = []
    proxy = EgressProxy(
        os.path.join(workdir, EGRESS_SOCKET),
        on_refusal=refusals.append,
        allowed_networks=allowed_networks,
        refused_networks=refused_networks,
        extra_ports=extra_ports,
    )
    try:
        outcome = run()
    finally:
        proxy.close()
    outcome.log += "".join(f"[parseq] refused: {refusal}\n" for refusal in refusals)
    if outcome.status == SCRIPT_ERROR and proxy.last_failure:
        outcome.error = f"{outcome.error.rstrip()}\n{proxy.last_failure}"
    return outcome
