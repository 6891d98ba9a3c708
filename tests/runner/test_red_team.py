"""The red-team battery: what a hostile script tried (issue 16), each under every backend that runs here.

Items 1, 2 and 10 (egress to the host and special addresses, the proxy's leaks, errors that say why)
are tests/runner/test_egress.py; item 7 (restricted mode through sys) is tests/runner/test_restricted.py;
item 9 (result names) is tests/runner/test_hostile.py; item 3's lost zygote, which must not be blamed on
the run, is tests/runner/test_warm.py. Here: 3 (one run cannot end another), 4 (a
cgroup per run), 5 (seccomp, no nested user namespaces) and 6 (the subprocess backend hides the host's
sockets).
"""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from django.conf import settings

import runner
from runner.sandbox.self_jail import FILES_PER_TMPFS
from tests.runner.test_sandbox import SandboxTestCase, under_bwrap, under_docker, warm_start, warm_under_bwrap

CGROUPS = runner.cgroups_availability()
ROOT = os.geteuid() == 0
MiB = 1024 * 1024

# x86_64 system call numbers: the script calls them raw, as an exploit would, past any libc wrapper.
REFUSED_CALLS = {
    "mount": (165, 0, "/tmp", "tmpfs", 0, 0),
    "setns": (308, 0, 0),
    "keyctl": (250, 0, 0),
    "add_key": (248, 0, 0),
    "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "userfaultfd": (323, 0),
    "io_uring_setup": (425, 1, 0),
    "ptrace": (101, 16, 1, 0, 0),  # PTRACE_ATTACH to pid 1
    "kexec_load": (246, 0, 0, 0, 0),
    "init_module": (175, 0, 0, 0),
    "unshare(CLONE_NEWUSER)": (272, 0x10000000),
    "unshare(CLONE_NEWNET)": (272, 0x40000000),
    "clone(CLONE_NEWUSER)": (56, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0),
}
RAW_CALLS = """
import ctypes, errno, json, os, socket

libc = ctypes.CDLL(None, use_errno=True)

def outcome(number, *arguments):
    converted = [ctypes.c_char_p(a.encode()) if isinstance(a, str) else ctypes.c_long(a) for a in arguments]
    result = libc.syscall(ctypes.c_long(number), *converted)
    if result == 0 and number == 56:
        os._exit(0)  # a child came out of clone: it must not run on
    return errno.errorcode.get(ctypes.get_errno(), "?") if result < 0 else f"succeeded: {result}"

def parse():
    seen = {name: outcome(*call) for name, call in CALLS.items()}
    raw = (("AF_PACKET", socket.AF_PACKET, socket.SOCK_RAW), ("raw IP", socket.AF_INET, socket.SOCK_RAW))
    for name, family, kind in raw:
        try:
            socket.socket(family, kind).close()
            seen[name] = "succeeded"
        except OSError as error:
            seen[name] = errno.errorcode.get(error.errno, "?")
    return {"seen.json": json.dumps(seen).encode()}
"""


class RedTeamTests(SandboxTestCase):
    def read(self, name):
        with open(os.path.join(self.out_dir, name)) as file:
            return file.read()

    # 3. One run can kill another.
    def test_a_fork_bomb_next_to_a_benign_run_leaves_the_benign_run_and_later_runs_alone(self):
        bomb = """
            import os, time

            def parse():
                while True:
                    try:
                        os.fork()
                    except OSError:
                        time.sleep(0.01)
        """
        benign = "import time, uuid\ndef parse():\n    time.sleep(1)\n    return {f'{uuid.uuid4()}.txt': b'done'}\n"
        outcomes = {}
        bomber = threading.Thread(target=lambda: outcomes.update(bomb=self.run_source(bomb, wall_time=4)))
        bomber.start()

        benign_outcome = self.run_source(benign, wall_time=20, name="benign.py")
        bomber.join()

        self.assertEqual(benign_outcome.status, runner.COMPLETED, benign_outcome.error)
        self.assertNotEqual(outcomes["bomb"].status, runner.COMPLETED)
        after = self.run_source(benign, wall_time=20, name="after.py")
        self.assertEqual(after.status, runner.COMPLETED, after.error)

    # 4. Memory is per process; kernel memory is not limited.
    @unittest.skipUnless(CGROUPS[0], f"needs a cgroup per run: {CGROUPS[1]}")
    def test_children_that_each_fit_but_together_do_not_break_the_runs_memory_limit(self):
        source = """
            import os, time

            def parse():
                children = []
                for _ in range(3):
                    pid = os.fork()
                    if pid == 0:
                        block = bytearray(90 * 1024 * 1024)
                        for page in range(0, len(block), 4096):
                            block[page] = 1
                        time.sleep(3)
                        os._exit(0)
                    children.append(pid)
                statuses = [os.waitpid(pid, 0)[1] for pid in children]
                if any(statuses):
                    raise RuntimeError(f"a child died: {statuses}")
                return {"ok.txt": b"all three fit"}
        """

        outcome = self.run_source(source, memory_bytes=200 * MiB, wall_time=30)

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED, outcome.error)
        self.assertTrue(
            outcome.error.startswith("memory limit 200 MiB exceeded (all of the run's processes together)"),
            outcome.error,
        )

    @unittest.skipUnless(CGROUPS[0], f"needs a cgroup per run: {CGROUPS[1]}")
    def test_a_process_limit_holds_for_the_run_and_names_itself(self):
        source = """
            import os, time

            def parse():
                while True:
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
        """

        outcome = self.run_source(source, processes=20, wall_time=20)

        self.assertIn(outcome.status, (runner.SCRIPT_ERROR, runner.LIMIT_EXCEEDED))
        self.assertTrue(outcome.error.startswith("process limit 20 (processes and threads) exceeded"), outcome.error)

    def test_a_hundred_thousand_empty_files_in_tmp_stop_at_the_tmpfs_file_limit(self):
        if self.backend == "subprocess" and not ROOT:
            self.skipTest("without root the subprocess backend's /tmp is the host's")
        source = """
            import os

            def parse():
                for number in range(100_000):
                    try:
                        open(f"/tmp/{number}", "w").close()
                    except OSError as error:
                        return {"stopped.txt": f"{number} {error.strerror}".encode()}
                return {"stopped.txt": b"never"}
        """

        outcome = self.run_source(source, wall_time=60)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        number, reason = self.read("stopped.txt").split(" ", 1)
        self.assertLessEqual(int(number), FILES_PER_TMPFS)
        self.assertEqual(reason, "No space left on device")

    # 5. No seccomp; nested user namespaces allowed.
    @unittest.skipUnless(os.uname().machine == "x86_64", "the battery calls x86_64 system call numbers")
    def test_namespaces_mounts_keyrings_bpf_io_uring_ptrace_and_raw_sockets_are_refused(self):
        outcome = self.run_source(f"CALLS = {REFUSED_CALLS!r}\n{RAW_CALLS}")

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        seen = json.loads(self.read("seen.json"))
        self.assertEqual(set(seen), {*REFUSED_CALLS, "AF_PACKET", "raw IP"})
        self.assertEqual({name: result for name, result in seen.items() if result != "EPERM"}, {})

    def test_unshare_gives_no_user_namespace_and_no_capabilities(self):
        source = """
            import subprocess

            def parse():
                done = subprocess.run(["unshare", "-Ur", "cat", "/proc/self/status"], capture_output=True, text=True)
                return {"unshare.txt": f"{done.returncode} {done.stdout}{done.stderr}".encode()}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertRegex(self.read("unshare.txt"), r"^1 unshare: unshare failed: Operation not permitted")

    def test_threads_and_subprocesses_still_work_under_the_filter(self):
        source = """
            import subprocess, threading

            def parse():
                results = []
                threads = [threading.Thread(target=lambda: results.append(1)) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                echoed = subprocess.run(["echo", "hi"], capture_output=True, check=True).stdout
                return {"ok.txt": f"{len(results)} {echoed.decode().strip()}".encode()}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.read("ok.txt"), "8 hi")

    @unittest.skipUnless(os.uname().machine == "x86_64", "x32 is an x86_64 ABI")
    def test_a_system_call_of_another_abi_kills_the_run_at_once_not_at_its_deadline(self):
        source = """
            import ctypes, threading, time

            def parse():
                threading.Thread(target=time.sleep, args=(60,)).start()
                ctypes.CDLL(None).syscall(ctypes.c_long(0x40000000 | 39))  # x32's getpid
                return {}
        """
        started = time.monotonic()

        outcome = self.run_source(source, wall_time=30)

        self.assertEqual(outcome.status, runner.PROTOCOL_ERROR, outcome.error)
        self.assertIn(f"killed by signal {int(signal.SIGSYS)}", outcome.error)
        self.assertLess(time.monotonic() - started, 15)

    def test_shared_memory_a_run_leaves_is_not_on_the_host_after_it(self):
        if self.backend == "subprocess" and not ROOT:
            self.skipTest("without root the subprocess backend shares the host's IPC namespace")
        key = uuid.uuid4().int % 2**30 + 1
        source = f"""
            import ctypes

            def parse():
                libc = ctypes.CDLL(None, use_errno=True)
                segment = libc.shmget({key}, 1024 * 1024, 0o1000 | 0o666)  # IPC_CREAT
                return {{"shm.txt": str(segment).encode()}}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertGreaterEqual(int(self.read("shm.txt")), 0)
        with open("/proc/sysvipc/shm") as segments:
            keys = [int(line.split()[0]) for line in list(segments)[1:]]
        self.assertNotIn(key, keys)

    # 6. The subprocess fallback reaches host Unix sockets.
    @unittest.skipUnless(ROOT, "the subprocess backend hides the host's sockets only as root")
    def test_the_hosts_socket_places_are_empty_and_its_database_socket_unreachable(self):
        source = """
            import os, socket

            def parse():
                seen = {p: sorted(os.listdir(p)) if os.path.isdir(p) else [] for p in ("/run", "/var/tmp", "/dev/shm")}
                seen["/tmp"] = [name for name in os.listdir("/tmp") if not name.startswith("parseq-")]
                with socket.socket(socket.AF_UNIX) as client:
                    try:
                        client.connect("/run/postgresql/.s.PGSQL.5432")
                        seen["postgresql"] = "connected"
                    except OSError as error:
                        seen["postgresql"] = error.strerror
                return {"seen.txt": repr(seen).encode()}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        seen = ast.literal_eval(self.read("seen.txt"))
        self.assertEqual(seen.pop("postgresql"), "No such file or directory")
        # Only what the sandbox needs shows in /tmp: the run's own directory, and a checkout that lives there.
        places = (settings.BASE_DIR, settings.SANDBOX_PYTHON)
        needed = {os.path.relpath(str(path), "/tmp").split("/")[0] for path in places}
        self.assertLessEqual(set(seen.pop("/tmp")), needed)
        self.assertEqual(seen, {"/run": [], "/var/tmp": [], "/dev/shm": []})


BwrapRedTeamTests = under_bwrap(RedTeamTests)
DockerRedTeamTests = under_docker(RedTeamTests)
WarmRedTeamTests = warm_start(RedTeamTests)
WarmBwrapRedTeamTests = warm_under_bwrap(RedTeamTests)


@unittest.skipUnless(ROOT, "needs root to run as a user without it")
class NoSafeBackendTests(unittest.TestCase):
    """6, where the subprocess backend cannot hide the host: no backend is chosen for the user, and runs say why."""

    def test_without_bubblewrap_or_root_no_backend_is_chosen_and_a_run_says_why(self):
        probe = (
            f"import sys\nsys.path.insert(0, {str(settings.BASE_DIR)!r})\n"
            "import runner\n"
            "backend = runner.best_backend()\n"
            "outcome = runner.run_script('/nonexistent.py', '/nonexistent', python='python', backend=backend)\n"
            "print(repr((backend, outcome.status, outcome.error)))\n"
        )
        # Debian's bwrap is in /usr/bin: a PATH without it is a machine without bubblewrap.
        done = subprocess.run(
            [
                settings.SANDBOX_PYTHON,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(settings.BASE_DIR)!r})\n{probe}",
            ],
            env={"PATH": "/nonexistent"},
            user=65534,
            capture_output=True,
            text=True,
            check=True,
        )

        backend, status, error = ast.literal_eval(done.stdout)
        self.assertEqual((backend, status), (None, runner.SANDBOX_ERROR))
        self.assertEqual(error, runner.NO_BACKEND)
        self.assertIn("PARSEQ_SANDBOX=subprocess", error)


@unittest.skipUnless(ROOT, "the subprocess backend hides /tmp only as root")
class CheckoutUnderTmpTests(unittest.TestCase):
    """6, its other side: hiding the host's /tmp must not hide Parseq's own runner when a checkout lives there."""

    def test_a_runner_under_tmp_runs_scripts_cold_and_warm_under_the_subprocess_backend(self):
        with tempfile.TemporaryDirectory(prefix="parseq-checkout-", dir="/tmp") as checkout:
            shutil.copytree(os.path.join(settings.BASE_DIR, "runner"), os.path.join(checkout, "runner"))
            os.chmod(checkout, 0o755)
            probe = (
                f"import sys, tempfile\nsys.path.insert(0, {checkout!r})\nimport runner\n"
                "with open(tempfile.mktemp(suffix='.py', dir=sys.argv[1]), 'w') as script:\n"
                "    script.write(\"def parse():\\n    return {'a.txt': b'x'}\\n\")\n"
                "for warm in (False, True):\n"
                "    outcome = runner.run_script(script.name, tempfile.mkdtemp(dir=sys.argv[1]), python=sys.argv[2],\n"
                "                                backend='subprocess', warm=warm, restricted_modules=['json'])\n"
                "    print(outcome.status, outcome.error.replace(chr(10), ' | '))\n"
            )
            done = subprocess.run(
                [sys.executable, "-c", probe, checkout, settings.SANDBOX_PYTHON],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )

        self.assertEqual(done.stdout, "completed \ncompleted \n", done.stderr)
