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
import socket
import threading

from runner.addresses import Refused, as_networks, resolve

__all__ = ["EgressProxy", "Refused"]

HEAD_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 15
# Each connection costs the worker two threads: a jail gets this many at a time, not more.
MAX_CONNECTIONS = 32


class EgressProxy:
    """Serves one run's jail on a Unix socket, in daemon threads, until closed."""

    def __init__(self, socket_path, on_refusal=None, *, allowed_networks=(), refused_networks=()):
        """`allowed_networks`: networks the policy of runner.addresses lets through all the same (tests' own hosts);
        `refused_networks`: networks it keeps out all the same (an operator's), which win.
        """
        self.on_refusal = on_refusal or (lambda message: None)
        self.allowed_networks = as_networks(allowed_networks)
        self.refused_networks = as_networks(refused_networks)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(socket_path)
        self.server.listen(64)
        self.closed = False
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        threading.Thread(target=self.accept_forever, name="parseq-egress", daemon=True).start()

    def close(self):
        self.closed = True
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()

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
        try:
            self.serve_connection(client)
        except OSError:
            pass  # the script or the site hung up mid-way: that connection is over, and no one else's
        finally:
            self.slots.release()

    def serve_connection(self, client):
        with client:
            try:
                head, early_data = read_head(client)
                upstream, reply = self.open_upstream(head)
            except Refused as error:
                self.on_refusal(str(error))
                body = f"parseq: {error}\n".encode()
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n")
                client.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            with upstream:
                if reply:
                    client.sendall(reply)
                if early_data:  # a request body, or a client that did not wait for the tunnel
                    upstream.sendall(early_data)
                relay(client, upstream)

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
        address = resolve(host, port, allowed=self.allowed_networks, refused=self.refused_networks)
        try:
            return socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise Refused(f"cannot connect to {host}:{port}: {error.strerror or error}") from None


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


def relay(first, second):
    """Copy bytes both ways until either side closes."""

    def pump(source, target):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    for sock in (first, second):
        sock.settimeout(None)
    other = threading.Thread(target=pump, args=(second, first), daemon=True)
    other.start()
    pump(first, second)
    other.join()
