"""A message to the broker within a bounded time: a broker that does not answer holds no caller for long."""

import contextlib
import os
import signal
import threading

from django.test import SimpleTestCase

from parseq.core.sending import BoundedSender, BrokerTimeout


class BoundedSenderTests(SimpleTestCase):
    def setUp(self):
        self.sender = BoundedSender()
        self.broker_answers = threading.Event()
        self.addCleanup(self.broker_answers.set)  # frees the sending thread
        self.published = []

    def publish(self, message, *, wait=False):
        def publishing():
            if wait:
                self.broker_answers.wait()
            self.published.append(message)
            return message

        return publishing

    def test_a_message_the_broker_confirms_returns_what_the_publish_returned(self):
        self.assertEqual(self.sender.send(self.publish("a"), timeout=5), "a")
        self.assertEqual(self.published, ["a"])

    def test_a_publish_error_reaches_its_caller(self):
        def refused():
            raise ConnectionError("connection refused")

        with self.assertRaisesRegex(ConnectionError, "connection refused"):
            self.sender.send(refused, timeout=5)

    def test_a_broker_that_does_not_answer_fails_the_caller_once_its_time_is_up(self):
        with self.assertRaisesRegex(BrokerTimeout, r"the broker did not answer within 0.2 s"):
            self.sender.send(self.publish("stuck", wait=True), timeout=0.2)

    def test_while_a_publish_is_stuck_the_next_callers_are_told_at_once_and_their_messages_never_sent(self):
        # Given a publish stuck on a broker that does not answer
        with self.assertRaises(BrokerTimeout):
            self.sender.send(self.publish("stuck", wait=True), timeout=0.2)

        # When another message is sent
        with self.assertRaisesRegex(BrokerTimeout, r"the broker has not answered for \d+ s"):
            self.sender.send(self.publish("next"), timeout=0.1)

        # Then, once the broker answers, only the stuck message went out, and sending works again
        self.broker_answers.set()
        self.assertEqual(self.sender.send(self.publish("after"), timeout=5), "after")
        self.assertEqual(self.published, ["stuck", "after"])

    def test_a_message_whose_caller_gave_up_before_it_was_published_is_never_sent(self):
        blocker = threading.Thread(target=self.try_send, args=("stuck", True, 5))
        blocker.start()
        self.addCleanup(blocker.join)
        while not self.published and self.sender.busy_since is None:
            threading.Event().wait(0.01)

        with self.assertRaises(BrokerTimeout):
            self.sender.send(self.publish("queued"), timeout=0.2)  # waits behind the stuck one, then gives up

        self.broker_answers.set()
        blocker.join()
        self.assertEqual(self.sender.send(self.publish("later"), timeout=5), "later")
        self.assertEqual(self.published, ["stuck", "later"])

    def try_send(self, message, wait, timeout):
        with contextlib.suppress(BrokerTimeout):
            self.sender.send(self.publish(message, wait=wait), timeout=timeout)

    def test_a_process_forked_while_another_thread_held_the_lock_still_sends(self):
        self.assertEqual(self.sender.send(self.publish("before"), timeout=5), "before")
        read, write = os.pipe()
        with self.sender.lock:  # as if another thread were starting the sending thread as the process forks
            child = os.fork()
        if child == 0:  # the child: its own thread, and a lock no one holds
            signal.alarm(10)  # a child stuck on the lock dies, and the parent reads nothing
            os.close(read)
            try:
                answer = self.sender.send(lambda: b"sent from the child", timeout=5)
            except BaseException as error:  # reported to the parent, whatever it is
                answer = repr(error).encode()
            os.write(write, answer)
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read, "rb") as pipe:
            self.assertEqual(pipe.read(), b"sent from the child")
