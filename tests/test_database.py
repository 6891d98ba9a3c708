"""The database connections of a process: turns on a few shared ones, and waits bounded with any descriptor."""

import os
import resource
import threading
import time

from django.db import DatabaseError, connection, connections
from django.test import TestCase, TransactionTestCase

from parseq.database import DatabaseTurns, bound_waits
from tests.helpers import requires_postgresql


def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def open_connections():
    """The connections to the test database besides the one asking (a connection of its own, closed after)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]
    finally:
        other.close()


@requires_postgresql
class DatabaseTurnTests(TransactionTestCase):
    def setUp(self):
        connection.close()  # the test's own connection is not one of the turns'
        self.turns = DatabaseTurns(size=3)
        self.turns.open()
        self.addCleanup(self.turns.close)

    def take_turns(self, count, work):
        threads = [threading.Thread(target=work) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def test_forty_threads_take_turns_on_three_connections_at_most(self):
        # Given 40 threads that each want the database for 50 ms
        inside, most, pids = [0], [0], set()
        lock = threading.Lock()

        def work():
            with self.turns.turn():
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                pids.add(backend_pid())
                time.sleep(0.05)
                with lock:
                    inside[0] -= 1

        # When they all take their turn at once
        self.take_turns(40, work)

        # Then no more than three were inside at once, on no more than three connections in all
        self.assertEqual(most[0], 3)
        self.assertLessEqual(len(pids), 3)
        # And once no turn waits, none of them is left open
        self.assertEqual(open_connections(), 0)

    def test_a_turn_alone_leaves_no_connection_open(self):
        with self.turns.turn():
            backend_pid()
        self.assertEqual(open_connections(), 0)
        self.assertIsNone(connection.connection)

    def test_a_connection_that_failed_in_a_turn_is_not_the_next_turns(self):
        # Given a turn whose connection the server ends mid-turn, while another turn waits
        waiting = threading.Event()
        failed = []

        def broken_turn():
            try:
                with self.turns.turn():
                    pid = backend_pid()
                    other = connections.create_connection("default")
                    with other.cursor() as cursor:
                        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                    other.close()
                    waiting.wait(5)
                    backend_pid()
            except DatabaseError as error:
                failed.append(error)

        first = threading.Thread(target=broken_turn)
        first.start()
        # When the next turn runs (it waits for a free connection only if all three are taken: here, none is)
        waiting.set()
        first.join()
        with self.turns.turn():
            pid = backend_pid()
        # Then the first turn failed, and the next one had a working connection of its own
        self.assertEqual(len(failed), 1)
        self.assertIsInstance(pid, int)

    def test_a_connection_a_turn_left_mid_transaction_is_not_the_next_turns(self):
        # Given a turn that turns autocommit off and leaves a transaction open, while another turn waits for it
        turns = DatabaseTurns(size=1)
        turns.open()
        started, seen = threading.Event(), []

        def careless():
            with turns.turn():
                started.set()
                connection.set_autocommit(False)
                with connection.cursor() as cursor:
                    cursor.execute("CREATE TEMPORARY TABLE left_over (n int)")
                time.sleep(0.2)

        def next_turn():
            started.wait(5)
            with turns.turn():
                seen.append(connection.get_autocommit())
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_class WHERE relname = 'left_over'")
                    seen.append(cursor.fetchone()[0])

        threads = [threading.Thread(target=careless), threading.Thread(target=next_turn)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        # Then the next turn has a connection of its own, in autocommit, without the other's table
        self.assertEqual(seen, [True, 0])

    def test_a_thread_gets_its_own_connection_back_after_a_turn(self):
        own = connections["default"]
        seen = []

        def work():
            with self.turns.turn():
                seen.append(connections["default"])
                time.sleep(0.05)

        self.take_turns(5, work)
        self.assertIs(connections["default"], own)
        self.assertNotIn(own, seen)

    def test_closed_turns_use_the_threads_own_connection_and_close_it(self):
        self.turns.close()
        own = connections["default"]
        with self.turns.turn():
            self.assertIs(connections["default"], own)
            backend_pid()
        self.assertIsNone(own.connection)


class TurnsInATransactionTests(TestCase):
    def test_a_turn_inside_a_transaction_uses_that_transactions_connection(self):
        turns = DatabaseTurns(size=1)
        turns.open()
        own = connections["default"]
        with turns.turn():
            self.assertIs(connections["default"], own)
        self.assertTrue(connection.in_atomic_block)


@requires_postgresql
class BoundedWaitTests(TransactionTestCase):
    def test_a_connection_past_select_s_1024_descriptors_still_waits_and_answers(self):
        # Given a process with over 1,100 descriptors open (hundreds of runs' pipes), and bounded waits
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1200:
            self.skipTest(f"only {hard} open files allowed here")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        null = os.open(os.devnull, os.O_RDONLY)
        spare = [os.dup(null) for _ in range(1100)]
        self.addCleanup(lambda: [os.close(fd) for fd in [null, *spare]])
        bound_waits(seconds=5)
        connection.close()

        # When a new connection (whose descriptor is past 1024) connects and queries
        pid = backend_pid()

        # Then it answers (select() would have refused the descriptor)
        self.assertGreater(connection.connection.fileno(), 1024)
        self.assertIsInstance(pid, int)
