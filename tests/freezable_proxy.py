"""A TCP proxy in front of a real service that a test can freeze, as SIGSTOP freezes a server, or cut off.

Frozen, it accepts nothing and relays nothing: new connections complete in the kernel's backlog and
then hear nothing, and open ones stay open and silent, as with a server that was sent SIGSTOP. Cut
off, it refuses new connections and closes the open ones, as a stopped server does. The shared
service behind it is never touched.
"""

import selectors
import socket
import threading

CHUNK = 64 * 1024


class FreezableProxy:
    def __init__(self, *, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.cut = threading.Event()
        self.closing = threading.Event()
        self.pairs = {}  # socket -> the socket it relays to
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._relay, name="freezable-proxy", daemon=True)
        self.thread.start()

    def freeze(self):
        self.frozen.set()

    def thaw(self):
        self.frozen.clear()

    def cut_off(self):
        """Refuse new connections and close the open ones, until `restore`."""
        self.cut.set()

    def restore(self):
        self.cut.clear()
        self.frozen.clear()

    def close(self):
        self.closing.set()
        self.thread.join(timeout=5)
        self.listener.close()

    def _relay(self):
        selector = selectors.DefaultSelector()
        listening = True
        selector.register(self.listener, selectors.EVENT_READ)
        while not self.closing.is_set():
            if self.cut.is_set():
                self._close_all(selector)
                if listening:
                    selector.unregister(self.listener)
                    self.listener.close()  # refused from now on
                    listening = False
            elif not listening:
                self.listener = socket.create_server(("127.0.0.1", self.port))
                self.listener.setblocking(False)
                selector.register(self.listener, selectors.EVENT_READ)
                listening = True
            if self.frozen.is_set() or self.cut.is_set():
                self.closing.wait(0.05)
                continue
            for key, _ in selector.select(timeout=0.05):
                if key.fileobj is self.listener:
                    self._accept(selector)
                else:
                    self._forward(selector, key.fileobj)
        self._close_all(selector)
        selector.close()

    def _accept(self, selector):
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for end in (client, upstream):
            end.setblocking(True)
            end.settimeout(5)
        self.pairs[client], self.pairs[upstream] = upstream, client
        selector.register(client, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)

    def _forward(self, selector, source):
        other = self.pairs.get(source)
        if other is None:
            return
        try:
            data = source.recv(CHUNK)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for end in (source, other):
            self._drop(selector, end)

    def _drop(self, selector, end):
        if self.pairs.pop(end, None) is not None:
            selector.unregister(end)
            end.close()

    def _close_all(self, selector):
        for end in list(self.pairs):
            self._drop(selector, end)
