"""Hostile scripts: each ends in error (or harmlessly) within its limit, and nothing outside changes."""

import os
import signal
import time
import unittest
import uuid

from django.conf import settings

import runner
from tests.helpers import live_processes_with, wait_until
from tests.runner.test_sandbox import SandboxTestCase, under_bwrap, under_docker, warm_start, warm_under_bwrap

SEPARATED = os.geteuid() == 0  # the subprocess backend separates scripts from the worker only as root


class HostileScriptTests(SandboxTestCase):
    def read(self, name):
        with open(os.path.join(self.out_dir, name)) as file:
            return file.read()

    def test_a_script_ignoring_sigterm_is_still_killed_at_its_deadline(self):
        started = time.monotonic()

        source = (
            "import signal, time\ndef parse():\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(60)\n"
        )

        outcome = self.run_source(source, wall_time=1)

        self.assertEqual(outcome.status, runner.TIMEOUT)
        self.assertLess(time.monotonic() - started, 6)

    def test_a_hundred_thousand_files_end_in_error_at_the_file_count_limit(self):
        outcome = self.run_source("def parse():\n    return {f'{i}.txt': b'' for i in range(100_000)}\n")

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED)
        self.assertIn("more than 1000 result files", outcome.error)
        self.assertEqual(self.written(), [])

    def test_absolute_names_are_refused(self):
        outcome = self.run_source("def parse():\n    return {'/etc/passwd': b'root::0:0::/:/bin/sh'}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("path separator", outcome.error)

    def test_names_that_read_as_other_names_are_refused(self):
        # U+202E shows "invoice\u202egpj.exe" as "invoiceexe.jpg"; U+0085 is a C1 control, a line break to some
        for name in ["invoice\u202egpj.exe", "report\u2066.pdf", "a\u200fb.txt", "line\u0085break.txt"]:
            with self.subTest(name=name):
                outcome = self.run_source(f"def parse():\n    return {{{name!r}: b'x'}}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertRegex(outcome.error, "control character")
                self.assertEqual(self.written(), [])

    @unittest.skipUnless(SEPARATED, "needs a sandbox user of its own (root) or the bwrap backend")
    def test_files_left_in_shared_temporary_directories_are_gone_before_the_next_run(self):
        marker = f"planted-{uuid.uuid4().hex}"
        plant = f"""
            import os

            def parse():
                for directory in ("/tmp", "/var/tmp", "/dev/shm"):
                    try:
                        with open(os.path.join(directory, "{marker}"), "w") as file:
                            file.write("for the next run")
                    except OSError:
                        pass
                return {{}}
        """
        look = f"""
            import os

            def parse():
                found = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.exists(os.path.join(d, "{marker}"))]
                return {{"found.txt": repr(found).encode()}}
        """

        self.assertEqual(self.run_source(plant).status, runner.COMPLETED)
        self.assertEqual(self.run_source(look).status, runner.COMPLETED)

        self.assertEqual(self.read("found.txt"), "[]")
        for directory in ("/tmp", "/var/tmp", "/dev/shm"):
            self.assertFalse(os.path.exists(os.path.join(directory, marker)))

    @unittest.skipUnless(SEPARATED, "needs a sandbox user of its own (root) or the bwrap backend")
    def test_the_database_and_media_cannot_be_read(self):
        outcome = self.run_source(f"""
            import os

            def parse():
                try:
                    names = os.listdir({str(settings.VAR_DIR)!r})
                except OSError as error:
                    names = type(error).__name__
                return {{"var.txt": repr(names).encode()}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertIn(self.read("var.txt"), ("'PermissionError'", "'FileNotFoundError'"))

    @unittest.skipUnless(SEPARATED, "killing the parent would kill this test run without separation")
    def test_killing_its_parent_ends_the_run_and_leaves_the_worker_alive(self):
        marker = f"{uuid.uuid4().int % 10**6}.375"

        outcome = self.run_source(f"""
            import os, signal, subprocess

            def parse():
                subprocess.Popen(["sleep", "{marker}"])
                os.kill(os.getppid(), signal.SIGKILL)
                return {{"ok.txt": b"parent survived"}}
        """)

        self.assertIsNone(os.kill(os.getpid(), 0))  # this process, the worker's stand-in, is alive
        self.assertIn(outcome.status, (runner.COMPLETED, runner.SCRIPT_ERROR, runner.PROTOCOL_ERROR))
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the child to die")

    def test_killing_its_own_process_group_is_an_error_not_a_hang(self):
        outcome = self.run_source("import os, signal\ndef parse():\n    os.killpg(0, signal.SIGKILL)\n", wall_time=10)

        self.assertEqual(outcome.status, runner.PROTOCOL_ERROR)
        self.assertIn(f"killed by signal {int(signal.SIGKILL)}", outcome.error)


BwrapHostileScriptTests = under_bwrap(HostileScriptTests)
DockerHostileScriptTests = under_docker(HostileScriptTests)
WarmHostileScriptTests = warm_start(HostileScriptTests)
WarmBwrapHostileScriptTests = warm_under_bwrap(HostileScriptTests)
