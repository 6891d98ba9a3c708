"""Messages to the broker within a bounded time, however the broker fails.

A broker that stops answering without closing its connections (a frozen process, a network that
drops packets) blocks pika's publish until the connection is declared dead, which takes a minute
or more; a request or a scheduler round must not wait that long. So one thread per process
publishes, and each caller waits for its own message at most PARSEQ_BROKER_TIMEOUT. While a
publish is stuck, later callers are told at once instead of queueing behind it; a message whose
caller gave up before it was published is never sent.
"""

import concurrent.futures
import os
import queue
import threading
import time


class BrokerTimeout(Exception):
    """The broker did not confirm a message in time."""


class BoundedSender:
    def __init__(self, *, clock=time.monotonic):
        self.clock = clock
        self._forget_the_thread()
        # The thread does not survive a fork, and a lock held by another thread meanwhile would stay held.
        os.register_at_fork(after_in_child=self._forget_the_thread)

    def _forget_the_thread(self):
        self.lock = threading.Lock()
        self.jobs = queue.SimpleQueue()
        self.owner_pid = None  # the process whose thread publishes: a forked one starts its own
        self.busy_since = None  # when the publish in progress began

    def send(self, publish, *, timeout):
        """Call `publish()` on the sending thread; its result, or BrokerTimeout after `timeout` seconds."""
        self._start_once()
        busy_since = self.busy_since
        if busy_since is not None and self.clock() - busy_since > timeout:
            raise BrokerTimeout(f"the broker has not answered for {self.clock() - busy_since:.0f} s")
        future = concurrent.futures.Future()
        self.jobs.put((publish, future))
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not sent at all, if it had not begun
            raise BrokerTimeout(f"the broker did not answer within {timeout} s") from None

    def _start_once(self):
        with self.lock:
            if self.owner_pid != os.getpid():
                self.owner_pid, self.jobs, self.busy_since = os.getpid(), queue.SimpleQueue(), None
                threading.Thread(
                    target=self._publish_forever, args=(self.jobs,), name="parseq-sender", daemon=True
                ).start()

    def _publish_forever(self, jobs):
        while True:
            publish, future = jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            self.busy_since = self.clock()
            try:
                future.set_result(publish())
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who decides
                future.set_exception(error)
            finally:
                self.busy_since = None


sender = BoundedSender()
