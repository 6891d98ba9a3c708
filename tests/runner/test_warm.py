"""The warm start: runs forked from a zygote are as separate from it and each other as cold ones.

The whole sandbox battery (results, errors, limits, hostile scripts, restricted mode, egress)
also runs warm: see the Warm* classes in test_sandbox, test_hostile, test_restricted, test_egress.
"""

import os
import socket
import tempfile
import threading
import time
import unittest
import uuid
from unittest import mock

from django.conf import settings

import runner
from parseq.core.execution import warm_preload
from runner import warm
from runner.bwrap_jail import BwrapJail, ZygoteJail, host_process_ids
from tests.helpers import live_processes_with, require, wait_until, write_script
from tests.runner.test_sandbox import SandboxTestCase

AS_ROOT = os.geteuid() == 0


def the_zygote():
    [zygote] = [zygote for zygote in warm._zygotes.values() if zygote.usable()]
    return zygote


class WarmStartTests(SandboxTestCase):
    warm = True

    def setUp(self):
        super().setUp()
        warm.stop_all()  # one zygote at a time here, whatever earlier tests preloaded
        self.addCleanup(warm.stop_all)

    def read(self, name):
        with open(os.path.join(self.out_dir, name)) as file:
            return file.read()

    def test_the_sandbox_libraries_are_imported_before_the_script_asks(self):
        outcome = self.run_source("""
            import sys

            def parse():
                loaded = sorted(name for name in ("bs4", "requests", "lxml.html") if name in sys.modules)
                return {"loaded.txt": repr(loaded).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("loaded.txt"), "['bs4', 'lxml.html', 'requests']")

    def test_each_run_starts_from_the_zygote_not_from_what_the_previous_run_changed(self):
        change = "import requests\nrequests.planted = 'by the first run'\ndef parse():\n    return {}\n"
        look = "import requests\ndef parse():\n    return {'seen.txt': repr(hasattr(requests, 'planted')).encode()}\n"

        self.assertEqual(self.run_source(change).status, runner.COMPLETED)
        outcome = self.run_source(look)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("seen.txt"), "False")

    @unittest.skipUnless(AS_ROOT, "reading another process's memory needs root")
    def test_a_runs_variables_never_enter_the_zygote_whose_memory_later_runs_copy(self):
        secret = f"token-{uuid.uuid4().hex}"
        path = write_script(
            self.tempdir.name, "import os\ndef parse():\n    return {'t.txt': os.environ['API_TOKEN'].encode()}\n"
        )

        outcome = runner.run_script(
            path,
            self.out_dir,
            python=settings.SANDBOX_PYTHON,
            variables={"API_TOKEN": secret},
            warm=True,
            preload=["requests"],
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("t.txt"), secret)
        memory = memory_of(the_zygote().process.pid)
        self.assertIn(b"MALLOC_ARENA_MAX", memory)  # its own environment: the memory was read
        self.assertNotIn(secret.encode(), memory)

    @unittest.skipUnless(AS_ROOT, "as another user, a run is a user of its own only when the worker is root")
    def test_a_run_can_neither_read_nor_signal_the_zygote(self):
        outcome = self.run_source("""
            import os, signal

            def parse():
                tried = []
                zygote = os.getppid()
                for attempt in (lambda: open(f"/proc/{zygote}/mem", "rb"), lambda: os.kill(zygote, signal.SIGKILL)):
                    try:
                        attempt()
                        tried.append("allowed")
                    except OSError as error:
                        tried.append(type(error).__name__)
                return {"tried.txt": repr(tried).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("tried.txt"), "['PermissionError', 'PermissionError']")
        self.assertTrue(the_zygote().usable())

    @unittest.skipUnless(AS_ROOT, "a warm run has a network namespace of its own only as root")
    def test_with_network_none_a_warm_run_cannot_reach_the_hosts_loopback(self):
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        path = write_script(
            self.tempdir.name,
            f"""
            import socket

            def parse():
                try:
                    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                    reached = "reached"
                except OSError as error:
                    reached = type(error).__name__
                return {{"reached.txt": reached.encode()}}
            """,
        )

        outcome = runner.run_script(path, self.out_dir, python=settings.SANDBOX_PYTHON, network="none", warm=True)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("reached.txt"), "ConnectionRefusedError")

    def test_a_killed_zygote_is_replaced_and_the_next_run_works(self):
        self.assertEqual(self.run_source("def parse():\n    return {}\n").status, runner.COMPLETED)
        old = the_zygote()
        old.process.kill()
        old.process.wait()

        outcome = self.run_source("def parse():\n    return {'ok.txt': b'ok'}\n")

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertNotEqual(the_zygote().process.pid, old.process.pid)

    def test_when_the_zygote_is_stopped_its_running_sandboxes_die_with_it(self):
        marker = f"{uuid.uuid4().int % 10**6}.625"

        outcome = stop_the_zygote_during_a_run(self, marker)

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertEqual(outcome.error, "the sandbox was lost: the warm start's zygote exited during the run")
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the sandbox to die")

    def test_a_module_that_fails_to_preload_does_not_stop_the_zygote(self):
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(
            path, self.out_dir, python=settings.SANDBOX_PYTHON, warm=True, preload=["no_such_module_anywhere"]
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)

    def test_a_zygote_that_cannot_start_is_a_sandbox_error_with_its_reason(self):
        broken = os.path.join(self.tempdir.name, "python")
        with open(broken, "w") as file:
            file.write("#!/bin/sh\necho 'this interpreter is broken' >&2\nexit 3\n")
        os.chmod(broken, 0o755)
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(path, self.out_dir, python=broken, warm=True)

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn("the zygote did not start: this interpreter is broken", outcome.error)

    def test_a_warm_start_is_refused_with_a_backend_that_cannot_fork_it(self):
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(path, self.out_dir, python=settings.SANDBOX_PYTHON, backend="docker", warm=True)

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertEqual(outcome.error, "a warm start needs the subprocess or bwrap backend, not docker")


def stop_the_zygote_during_a_run(test, marker):
    """Stop this process's zygotes while a run waits on `sleep MARKER`; the run's outcome."""
    outcomes = []
    source = f"import subprocess\ndef parse():\n    subprocess.run(['sleep', '{marker}'])\n    return {{}}\n"
    thread = threading.Thread(target=lambda: outcomes.append(test.run_source(source, wall_time=30)))
    thread.start()
    wait_until(lambda: live_processes_with(f"sleep {marker}"), timeout=10, message="the run to start")
    warm.stop_all()
    thread.join(timeout=10)
    return outcomes[0]


def memory_of(pid):
    """Every readable byte of a process's memory (root only)."""
    contents = bytearray()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in maps:
            addresses, permissions = line.split()[:2]
            if not permissions.startswith("r"):
                continue
            start, end = (int(address, 16) for address in addresses.split("-"))
            try:
                memory.seek(start)
                contents += memory.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
    return bytes(contents)


@require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")
class WarmJailTests(SandboxTestCase):
    """Warm bwrap: each run's jail is made inside the zygote's, and sees neither the zygote nor other runs."""

    backend = "bwrap"
    warm = True

    def setUp(self):
        super().setUp()
        warm.stop_all()
        self.addCleanup(warm.stop_all)

    def read(self, name):
        with open(os.path.join(self.out_dir, name)) as file:
            return file.read()

    @unittest.skipUnless(AS_ROOT and runner.cgroups_availability()[0], "needs root and a cgroup per run")
    def test_when_the_zygote_cannot_fork_only_that_run_fails_and_the_zygote_goes_on(self):
        # A zygote sized for 4 runs at once of 2 processes has a budget of 30 (5 runs of 2 + 4 for their jails);
        # each run fills its cgroup's 6 and waits, so the 6th finds none left.
        filler = """
            import os, time, uuid

            def parse():
                while True:
                    try:
                        if os.fork() == 0:
                            time.sleep(4)
                            os._exit(0)
                    except OSError:
                        break
                time.sleep(3)
                return {f"{uuid.uuid4()}.txt": b"x"}
        """
        path = write_script(self.tempdir.name, filler, name="filler.py")
        outcomes = []

        def run():
            outcome = runner.run_script(
                path,
                self.out_dir,
                python=settings.SANDBOX_PYTHON,
                backend="bwrap",
                warm=True,
                limits=runner.Limits(processes=2, wall_time=30),
                network="none",
                preload=warm_preload(),
                runs_at_once=4,
            )
            outcomes.append((outcome.status, outcome.error))

        self.run_source("def parse():\n    return {}\n", processes=2, runs_at_once=4)  # the zygote is up
        zygote = the_zygote()
        threads = [threading.Thread(target=run) for _ in range(9)]
        for thread in threads:
            thread.start()
            time.sleep(0.3)
        for thread in threads:
            thread.join()
        after = self.run_source("def parse():\n    return {'after.txt': b'ok'}\n", processes=2, runs_at_once=4)

        no_fork = "could not start the sandbox: the zygote could not fork the run's sandbox: fork failed:"
        self.assertIn((runner.COMPLETED, ""), outcomes)
        self.assertTrue(any(error.startswith(no_fork) for _, error in outcomes), outcomes)
        for status, error in outcomes:
            self.assertTrue(status == runner.COMPLETED or error.startswith(no_fork), (status, error))
        self.assertEqual(after.status, runner.COMPLETED, after.error)
        self.assertIs(the_zygote(), zygote)
        self.assertTrue(zygote.usable())

    def sleepers_at_once(self, count, *, runs_at_once):
        """`count` runs of a script that sleeps 3 s, all at once, from a zygote sized for `runs_at_once`."""
        path = write_script(self.tempdir.name, "import time\n\ndef parse():\n    time.sleep(3)\n    return {}\n")
        outcomes = []

        def run():
            outcome = runner.run_script(
                path,
                tempfile.mkdtemp(dir=self.tempdir.name),
                python=settings.SANDBOX_PYTHON,
                backend="bwrap",
                warm=True,
                runs_at_once=runs_at_once,
                limits=runner.Limits(processes=4, wall_time=60),
                network="none",
                preload=warm_preload(),
            )
            outcomes.append((outcome.status, outcome.error))

        threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    @unittest.skipUnless(AS_ROOT, "needs root: only a zygote with a user id of its own has a process budget")
    def test_a_zygote_sized_for_the_runs_its_worker_takes_at_once_forks_them_all(self):
        # Given a worker process that takes 24 runs at once, of at most 4 processes each
        # When 24 runs start at the same moment
        outcomes = self.sleepers_at_once(24, runs_at_once=24)

        # Then all of them run and complete: their shared budget is 24 runs' worth
        self.assertEqual([outcome for outcome in outcomes if outcome != (runner.COMPLETED, "")], [])

    @unittest.skipUnless(AS_ROOT, "needs root: only a zygote with a user id of its own has a process budget")
    def test_a_zygote_sized_for_fewer_runs_than_come_at_once_cannot_fork_them_all(self):
        # Given a zygote whose budget is 4 runs' worth (and its own: 40 processes and threads in all)
        # When 24 runs start at the same moment
        outcomes = self.sleepers_at_once(24, runs_at_once=4)

        # Then some cannot start, and say why: the budget is what the sizing above is about
        no_fork = "could not start the sandbox: the zygote could not fork the run's sandbox: fork failed:"
        self.assertTrue(any(error.startswith(no_fork) for _, error in outcomes), outcomes)

    @unittest.skipUnless(AS_ROOT, "needs root: only a zygote with a user id of its own has a process budget")
    def test_a_zygote_budget_never_takes_most_of_the_hosts_process_ids(self):
        # Without cgroups the budget is a fork bomb's only bound: a thousand runs' worth must leave the host some.
        jail = ZygoteJail(BwrapJail(settings.SANDBOX_PYTHON), processes=64, runs_at_once=1000)

        self.assertLessEqual(jail.process_budget, host_process_ids() // 4)
        self.assertEqual(ZygoteJail(BwrapJail(settings.SANDBOX_PYTHON), processes=2, runs_at_once=4).process_budget, 30)

    def test_a_run_sees_nothing_of_a_run_going_on_beside_it(self):
        marker = f"beside-{uuid.uuid4().hex}"
        beside = f"""
            import os, time

            def parse():
                for directory in (os.environ["HOME"], "/tmp", "/dev/shm"):
                    with open(os.path.join(directory, "{marker}"), "w") as file:
                        file.write("mine")
                time.sleep(3)
                return {{}}
        """
        outcomes = []
        # Each run its own script file: a shared one could be rewritten before the first run reads it.
        thread = threading.Thread(target=lambda: outcomes.append(self.run_source(beside, name="beside.py")))
        thread.start()
        self.addCleanup(thread.join)
        wait_until(lambda: the_zygote_runs(), timeout=10, message="the first run to start")

        outcome = self.run_source(
            f"""
            import glob, os

            def parse():
                seen = {{
                    "pids": sorted(filter(str.isdigit, os.listdir("/proc"))),
                    "runs": os.listdir("/sandbox/runs"),
                    "marker": [
                        path
                        for directory in ("/tmp", "/dev/shm", "/sandbox")
                        for path in glob.glob(f"{{directory}}/**/{marker}", recursive=True)
                    ],
                }}
                return {{"seen.txt": repr(seen).encode()}}
        """,
            wall_time=30,
        )
        thread.join()

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("seen.txt"), repr({"pids": ["1", "2"], "runs": [], "marker": []}))
        self.assertEqual(outcomes[0].status, runner.COMPLETED, outcomes[0].error)

    def test_the_script_has_no_capability_left_and_cannot_gain_one(self):
        outcome = self.run_source("""
            def parse():
                with open("/proc/self/status") as status:
                    lines = [line for line in status if line.startswith(("Cap", "NoNewPrivs"))]
                return {"status.txt": "".join(lines).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        fields = dict(line.split(":\t") for line in self.read("status.txt").splitlines())
        self.assertEqual(
            fields,
            {
                "CapInh": "0000000000000000",
                "CapPrm": "0000000000000000",
                "CapEff": "0000000000000000",
                "CapBnd": "0000000000000000",
                "CapAmb": "0000000000000000",
                "NoNewPrivs": "1",
            },
        )

    @unittest.skipUnless(AS_ROOT, "the zygote's jail has a user id of its own only when the worker is root")
    def test_a_fork_bomb_is_stopped_by_a_process_limit_and_the_next_run_works(self):
        bomb = """
            import os, time

            def parse():
                while True:
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
        """

        outcome = self.run_source(bomb, processes=8, wall_time=20)
        after = self.run_source("def parse():\n    return {'ok.txt': b'ok'}\n", processes=8)

        # The run's own cgroup stops it at its own limit; without one, the zygote's runs share a budget.
        expected = (
            "process limit 8 (processes and threads) exceeded"
            if runner.cgroups_availability()[0]
            else "process limit 128 (processes and threads of one worker's runs together) exceeded"
        )
        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith(expected), outcome.error)
        self.assertEqual(after.status, runner.COMPLETED, after.error)

    def test_when_the_zygote_is_stopped_its_runs_die_with_its_jail(self):
        marker = f"{uuid.uuid4().int % 10**6}.125"

        outcome = stop_the_zygote_during_a_run(self, marker)

        self.assertNotEqual(outcome.status, runner.COMPLETED)
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the run to die")
        self.assertEqual(os.listdir(tempfile.gettempdir()).count(marker), 0)


def the_zygote_runs():
    """Whether the zygote's jail holds a run now (a directory in the runs' directory)."""
    return any(zygote.jail and os.listdir(zygote.jail.runs_dir) for zygote in warm._zygotes.values())


@require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")
class WarmJailFallbackTests(SandboxTestCase):
    """Where a run's jail cannot be made inside the zygote's, runs start cold instead of failing."""

    backend = "bwrap"
    warm = True

    def setUp(self):
        super().setUp()
        warm.stop_all()
        self.addCleanup(warm.stop_all)

    def test_here_the_zygote_finds_that_a_runs_jail_can_be_made(self):
        self.assertEqual(self.run_source("def parse():\n    return {}\n").status, runner.COMPLETED)

        self.assertTrue(the_zygote().jails_work)

    def test_where_nested_user_namespaces_are_forbidden_runs_start_cold_with_a_warning(self):
        # Given a zygote whose jail forbids user namespaces inside it, as some hosts and containers do
        command = ZygoteJail.command

        def forbidding(jail, python, arguments):
            bwrap, *rest = command(jail, python, arguments)
            return [bwrap, "--unshare-user", "--disable-userns", *rest]

        source = "def parse():\n    return {'cmdline.txt': open('/proc/self/cmdline', 'rb').read()}\n"
        # When runs come
        with mock.patch.object(ZygoteJail, "command", forbidding), self.assertLogs("runner.warm") as logs:
            outcome = self.run_source(source)
            again = self.run_source("def parse():\n    return {}\n")

        # Then the zygote said so, and the runs ran cold (a new interpreter with the bootstrap), warned about once
        self.assertFalse(the_zygote().jails_work)
        self.assertEqual((outcome.status, again.status), (runner.COMPLETED, runner.COMPLETED), outcome.error)
        with open(os.path.join(self.out_dir, "cmdline.txt"), "rb") as file:
            self.assertIn(b"/sandbox/bootstrap.py", file.read())
        self.assertEqual(len(logs.output), 1)
        self.assertIn("runs start cold", logs.output[0])
