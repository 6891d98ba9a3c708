"""The process harness itself (tests/processes.py): ready, logged, stopped whole."""

import sys
import time
import unittest
import uuid

from tests import processes

# A parent that forks a child and both sleep; the marker on the command line tells them from anything else.
FORKING = "import os, time\nos.fork()\nprint('up', flush=True)\ntime.sleep(60)\n"
IGNORES_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
)


def python(source, marker):
    return [sys.executable, "-c", source, marker]


class ProcessHarnessTests(unittest.TestCase):
    def test_a_started_process_is_ready_once_it_logs_and_stopping_it_ends_its_forked_child_too(self):
        marker = f"harness-{uuid.uuid4().hex}"
        process = processes.Process(python(FORKING, marker))
        self.addCleanup(process.kill)

        process.wait_until(lambda: process.log_text().count("up") == 2, timeout=10, message="both to log")
        self.assertEqual(len(processes.live_processes_with(marker)), 2)
        self.assertEqual(len(process.children()), 1)

        process.stop()
        self.assertEqual(processes.live_processes_with(marker), [])
        self.assertFalse(process.log_path.exists())  # its own temporary log goes with it

    def test_a_process_that_exits_before_it_is_ready_fails_at_once_with_its_log(self):
        started = time.monotonic()
        with self.assertRaises(processes.ProcessExited) as failure:
            processes.start([sys.executable, "-c", "print('no config'); raise SystemExit(3)"], ready=lambda: False)

        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("exited with code 3", str(failure.exception))
        self.assertIn("no config", str(failure.exception))

    def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(self):
        marker = f"harness-{uuid.uuid4().hex}"
        process = processes.Process(python(IGNORES_SIGTERM, marker))
        self.addCleanup(process.kill)
        process.wait_until(lambda: process.logged("up"), timeout=10, message="SIGTERM to be ignored")

        started = time.monotonic()
        process.stop(grace=0.5)

        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        self.assertEqual(processes.live_processes_with(marker), [])
