"""The egress proxy of the bwrap jail: the only way out of a jail whose network policy is "internet".

The jail has its own network namespace with nothing but a loopback. The
bootstrap listens there and passes every connection over a Unix socket to this
proxy, which runs in the worker, resolves the destination itself and refuses
what runner/addresses.py refuses (loopback, private, link-local, special-purpose
ranges, IPv4 hidden in IPv6, this host's own addresses: its services and cloud
metadata among them) before any packet is sent. It speaks HTTP: CONNECT for
https, absolute URIs for http, as HTTP(S)_PROXY.

One thread of the worker process runs an event loop that serves every run's proxy: a worker
running hundreds of runs at once relays their connections without a thread for each
(ProxyLoop). Names are resolved by a small pool of threads of its own.
"""

import asyncio
import concurrent.futures
import contextlib
import ipaddress
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
# closed. Without them, a site that never answers would keep two sockets of the worker open for good.
HEAD_TIMEOUT = 30
IDLE_TIMEOUT = 60
# Where web pages are; a parser may add ports of its own. Any port would make the proxy a relay for any protocol.
DEFAULT_PORTS = (80, 443)
MAX_EXTRA_PORTS = 20
# Each connection costs the worker two sockets and their buffers: a jail gets this many at a time, not more.
MAX_CONNECTIONS = 32
# getaddrinfo blocks: this many names are resolved at once for all of a worker process's runs, and at most
# RESOLVING_PER_RUN of them for one run (names that take long to fail must not hold up the other runs').
RESOLVERS = 32
RESOLVING_PER_RUN = 4
CLOSE_SECONDS = 10
MAX_AUTHORITY = 253 + len(":65535")
# The log names this many of a run's refusals, then counts the others: each costs the worker's memory.
REFUSALS_NAMED = 20


class ProxyLoop:
    """This process's event loop for its runs' proxies, in a daemon thread started on first use (again after a fork)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.loop = None
        self.resolvers = None
        self.owner = None

    def call(self, coroutine, *, timeout=None):
        """Run `coroutine` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.running()).result(timeout)

    def running(self):
        with self.lock:
            if self.loop is None or self.owner != os.getpid():
                self.owner = os.getpid()
                self.loop = asyncio.new_event_loop()
                self.resolvers = concurrent.futures.ThreadPoolExecutor(RESOLVERS, thread_name_prefix="parseq-resolve")
                threading.Thread(target=self.loop.run_forever, name="parseq-egress", daemon=True).start()
            return self.loop

    async def resolve(self, host, port, *, slots, **policy):
        """runner.addresses.resolve: at once for an address, else in a resolving thread once one of `slots` (the
        run's) is free. The slot is the run's until the thread is done, even when the run ends first.
        """
        if is_ip_address(host):
            return resolve(host, port, **policy)  # no lookup: nothing to wait for
        await slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            lookup = self.resolvers.submit(resolve, host, port, **policy)
        except BaseException:
            slots.release()
            raise
        lookup.add_done_callback(lambda _: loop.call_soon_threadsafe(slots.release))
        return await asyncio.wrap_future(lookup)


proxy_loop = ProxyLoop()


class EgressProxy:
    """Serves one run's jail on a Unix socket, on this process's proxy loop, until closed."""

    def __init__(self, socket_path, on_refusal=None, *, allowed_networks=(), refused_networks=(), extra_ports=()):
        """`allowed_networks`: networks the policy of runner.addresses lets through all the same (tests' own hosts);
        `refused_networks`: networks it keeps out all the same (an operator's), which win; `extra_ports`: ports
        besides 80 and 443 that requests may go to.
        """
        self.ports = frozenset((*DEFAULT_PORTS, *extra_ports))
        self.on_refusal = on_refusal or (lambda message: None)
        self.allowed_networks = as_networks(allowed_networks)
        self.refused_networks = as_networks(refused_networks)
        self.last_failure = None
        self.connections = set()  # the tasks serving its connections, touched only on the loop
        self.resolving = asyncio.Semaphore(RESOLVING_PER_RUN)
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(socket_path)
            listening.listen(64)
            self.server = proxy_loop.call(self.listen(listening))
        except BaseException:
            listening.close()
            raise

    async def listen(self, listening):
        return await asyncio.start_unix_server(self.serve, sock=listening, limit=HEAD_LIMIT)

    def close(self):
        """Stop serving, and end every connection the run still has open."""
        # Only a loop stuck by a bug could take this long; the run's outcome must not be lost for it.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            proxy_loop.call(self.stop(), timeout=CLOSE_SECONDS)

    async def stop(self):
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def serve(self, reader, writer):
        if len(self.connections) >= MAX_CONNECTIONS:
            self.on_refusal(f"more than {MAX_CONNECTIONS} connections at once")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self.connections.add(task)
        unbuffered(writer)
        try:
            await self.serve_connection(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass  # the script or the site hung up mid-way, or the run ended: that connection is over, no one else's
        finally:
            self.connections.discard(task)
            # Not close(): a transport with data a peer never reads would keep its socket in the worker for good.
            writer.transport.abort()

    async def serve_connection(self, reader, writer):
        head = b""
        try:
            head = await asyncio.wait_for(read_head(reader), HEAD_TIMEOUT)
            upstream, reply = await self.open_upstream(head)
        except Refused as error:
            self.on_refusal(str(error))
            # What the run's error ends with, if the script fails: a library would only say "proxy error 403".
            why = str(error) if isinstance(error, Unresolvable) else error.reason  # "cannot resolve x: ..."
            self.last_failure = f"egress refused {requested(head)}: {why}"
            body = f"parseq: {error}\n".encode()
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
            return
        try:
            if reply:
                writer.write(reply)
            # A request body, or a client that did not wait for the tunnel, is still in `reader`: relayed next.
            await relay((reader, writer), upstream)
        finally:
            upstream[1].transport.abort()  # as the client's (serve)

    async def open_upstream(self, head):
        """The (reader, writer) of the connection `head` asks for, and what to answer the client first."""
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            raise Refused("the proxy got a malformed request") from None
        if method == "CONNECT":
            host, port = split_host_port(target, default_port=443)
            return await self.connect(host, port), b"HTTP/1.1 200 Connection established\r\n\r\n"
        if not target.startswith("http://"):
            raise Refused(f"the proxy only forwards http:// and CONNECT requests, not {target[:60]!r}")
        authority, _, path = target[len("http://") :].partition("/")
        host, port = split_host_port(authority, default_port=80)
        upstream = await self.connect(host, port)
        headers = [line for line in rest.split(b"\r\n") if line and not is_hop_header(line)]
        forwarded = f"{method} /{path} {version}\r\n".encode() + b"".join(h + b"\r\n" for h in headers)
        upstream[1].write(forwarded + b"Connection: close\r\n\r\n")
        return upstream, b""

    async def connect(self, host, port):
        # The address first: "127.0.0.1 is a loopback address" says more about localhost:5432 than its port does.
        policy = {"allowed": self.allowed_networks, "refused": self.refused_networks}
        ip, port = await proxy_loop.resolve(host, port, slots=self.resolving, **policy)
        if port not in self.ports:
            open_ports = ", ".join(str(port) for port in sorted(self.ports))
            raise Refused(
                f"port {port} is not open to this parser's requests (only {open_ports}; see its extra egress ports)"
            )
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Refused(f"cannot connect to {host}:{port}: timed out") from None
        except OSError as error:
            raise Refused(f"cannot connect to {host}:{port}: {error.strerror or error}") from None
        unbuffered(writer)
        return reader, writer


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


async def read_head(reader):
    """A request's head, up to its blank line; what follows it stays in `reader`."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise Refused("the proxy got an incomplete request") from None
    return head[:-4]


def split_host_port(authority, *, default_port):
    # No host name is longer than 253 characters; a longer one would only make every message naming it long.
    if len(authority) > MAX_AUTHORITY:
        raise Refused(f"a host and port of {len(authority)} characters: longer than any host name")
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


def unbuffered(writer):
    """drain() then waits until all is handed to the kernel: a connection aborted after it loses nothing."""
    writer.transport.set_write_buffer_limits(high=0)


def is_ip_address(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_hop_header(line):
    name = line.split(b":", 1)[0].strip().lower()
    return name in (b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive")


async def relay(first, second, *, idle_timeout=IDLE_TIMEOUT):
    """Copy bytes both ways between two (reader, writer) pairs until both sides have closed theirs, or until
    nothing has passed either way for `idle_timeout` seconds.
    """
    last_passed = time.monotonic()

    def still_alive():
        # Quiet one way is not idle: a download's request side waits, a slow reader lets its buffer fill.
        return time.monotonic() - last_passed < idle_timeout

    async def drain(writer):
        nonlocal last_passed
        while True:
            waiting = writer.transport.get_write_buffer_size()
            try:
                return await asyncio.wait_for(writer.drain(), idle_timeout / 4)
            except TimeoutError:
                if writer.transport.get_write_buffer_size() < waiting:
                    last_passed = time.monotonic()  # the reader takes it, slowly
                elif not still_alive():
                    raise

    async def pump(reader, writer):
        nonlocal last_passed
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), idle_timeout / 4)
            except TimeoutError:
                if still_alive():
                    continue
                raise
            if not data:
                break
            last_passed = time.monotonic()
            writer.write(data)
            await drain(writer)
        with contextlib.suppress(OSError):  # the other side may be gone already
            writer.write_eof()

    pumps = [asyncio.ensure_future(pump(first[0], second[1])), asyncio.ensure_future(pump(second[0], first[1]))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for running in pumps:
            running.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def behind_egress_proxy(run, *, workdir, allowed_networks=(), refused_networks=(), extra_ports=()):
    """`run()`'s Outcome, with the run's egress proxy listening in `workdir` meanwhile (EGRESS_SOCKET).

    What the proxy refused goes to the end of the log; a failed run's error ends with the proxy's reason,
    since the script's own last line only says "ProxyError ... 403 Forbidden".
    """
    refusals = Refusals()
    proxy = EgressProxy(
        os.path.join(workdir, EGRESS_SOCKET),
        on_refusal=refusals.note,
        allowed_networks=allowed_networks,
        refused_networks=refused_networks,
        extra_ports=extra_ports,
    )
    try:
        outcome = run()
    finally:
        proxy.close()
    outcome.log += refusals.lines()
    if outcome.status == SCRIPT_ERROR and proxy.last_failure:
        outcome.error = f"{outcome.error.rstrip()}\n{proxy.last_failure}"
    return outcome


class Refusals:
    """What a run's proxy refused, for its log: the first REFUSALS_NAMED, and how many more (a script may
    ask thousands of times a second; the worker keeps a bounded note of it).
    """

    def __init__(self):
        self.named = []
        self.more = 0

    def note(self, message):
        if len(self.named) < REFUSALS_NAMED:
            self.named.append(message)
        else:
            self.more += 1

    def lines(self):
        more = [f"{self.more} more refusal(s) not listed"] if self.more else []
        return "".join(f"[parseq] refused: {refusal}\n" for refusal in [*self.named, *more])
