"""The runner, through real sandbox processes: what a script gets back for what it does."""

import glob
import json
import os
import tempfile
import time
import unittest
import uuid
from unittest import mock

from django.conf import settings

import runner
from parseq.core.execution import warm_preload
from parseq.core.validation import allowed_modules, sandbox_modules
from runner.subprocess_jail import SubprocessJail
from runner.supervisor import LogCollector, secret_holdback
from tests.helpers import docker_sandbox_availability, live_processes_with, require, wait_until, write_script

# As root (with util-linux and iproute2), the subprocess backend isolates the network like the jail.
ISOLATING_SUBPROCESS = SubprocessJail("python").isolates_network()


class SandboxTestCase(unittest.TestCase):
    """Runs scripts through a backend; each test class also runs under bwrap (see the end of the module)."""

    backend = "subprocess"
    warm = False

    def setUp(self):
        self.tempdir = tempfile.TemporaryDirectory(prefix="parseq-test-")
        self.addCleanup(self.tempdir.cleanup)
        self.out_dir = os.path.join(self.tempdir.name, "out")
        os.mkdir(self.out_dir)

    def run_source(
        self,
        source,
        name="parser.py",
        restricted=False,
        allowed_networks=(),
        refused_networks=(),
        extra_ports=(),
        runs_at_once=16,
        **limits,
    ):
        path = write_script(self.tempdir.name, source, name=name)
        return runner.run_script(
            path,
            self.out_dir,
            python=settings.SANDBOX_PYTHON,
            backend=self.backend,
            limits=runner.Limits(**limits),
            allowed_networks=allowed_networks,
            refused_networks=refused_networks,
            extra_ports=extra_ports,
            restricted_modules=allowed_modules() if restricted else None,
            warm=self.warm,
            preload=warm_preload() if self.warm else (),
            runs_at_once=runs_at_once,
        )

    def written(self):
        return sorted(os.listdir(self.out_dir))


class ResultsTests(SandboxTestCase):
    def test_several_files_with_binary_content_round_trip_exactly(self):
        outcome = self.run_source("""
            def parse():
                return {
                    "report.txt": "héllo wörld".encode(),
                    "all-bytes.bin": bytes(range(256)) * 1000,
                    "empty.dat": b"",
                    "buffer.bin": bytearray(b"\\x00\\xff\\n"),
                }
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(self.written(), ["all-bytes.bin", "buffer.bin", "empty.dat", "report.txt"])
        with open(os.path.join(self.out_dir, "all-bytes.bin"), "rb") as file:
            self.assertEqual(file.read(), bytes(range(256)) * 1000)
        with open(os.path.join(self.out_dir, "report.txt"), "rb") as file:
            self.assertEqual(file.read(), "héllo wörld".encode())
        sizes = {result.name: result.size for result in outcome.files}
        self.assertEqual(sizes, {"report.txt": 13, "all-bytes.bin": 256000, "empty.dat": 0, "buffer.bin": 3})

    def test_an_empty_dict_is_a_successful_run_with_no_files(self):
        outcome = self.run_source("def parse():\n    return {}\n")

        self.assertEqual(outcome.status, runner.COMPLETED)
        self.assertEqual(outcome.files, [])

    def test_the_allowed_libraries_are_importable_in_the_sandbox(self):
        outcome = self.run_source("""
            import bs4
            import requests

            def parse():
                title = bs4.BeautifulSoup("<title>ok</title>", "html.parser").title.string
                return {"title.txt": title.encode(), "requests.txt": requests.__version__.encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertIn("title.txt", self.written())

    def test_every_module_the_validation_allows_from_the_sandbox_requirements_imports(self):
        modules = sorted(sandbox_modules())

        outcome = self.run_source(
            f"import importlib\ndef parse():\n    [importlib.import_module(m) for m in {modules!r}]\n    return {{}}\n"
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)

    def test_the_apps_own_packages_are_not_importable_in_the_sandbox(self):
        outcome = self.run_source("""
            def parse():
                import django
                return {}
        """)

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("No module named 'django'", outcome.error)


class ScriptErrorTests(SandboxTestCase):
    def test_an_exception_in_parse_is_an_error_with_the_scripts_traceback(self):
        outcome = self.run_source(
            """
            def helper():
                raise ValueError("the page changed")

            def parse():
                return helper()
            """,
            name="weather.py",
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("Traceback (most recent call last)", outcome.error)
        self.assertIn('File "weather.py", line 2, in helper', outcome.error)
        self.assertIn('raise ValueError("the page changed")', outcome.error)
        self.assertIn("ValueError: the page changed", outcome.error)
        self.assertNotIn("bootstrap", outcome.error)

    def test_an_error_at_import_time_is_reported_with_its_line(self):
        outcome = self.run_source("x = 1\nundefined_name\ndef parse():\n    return {}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("line 2", outcome.error)
        self.assertIn("NameError", outcome.error)

    def test_a_script_without_parse_is_an_error(self):
        outcome = self.run_source("def main():\n    return {}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("defines no function parse()", outcome.error)

    def test_sys_exit_and_keyboard_interrupt_are_errors_not_crashes(self):
        for body, expected in [
            ("import sys; sys.exit(0)", "sys.exit(0)"),
            ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ]:
            with self.subTest(body=body):
                outcome = self.run_source(f"def parse():\n    {body}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertIn(expected, outcome.error)

    def test_a_process_that_exits_without_a_result_is_an_error(self):
        outcome = self.run_source("import os\ndef parse():\n    os._exit(0)\n")

        self.assertEqual(outcome.status, runner.PROTOCOL_ERROR)
        self.assertIn("exited with code 0 before parse() returned a result", outcome.error)


class ContractTests(SandboxTestCase):
    def test_a_return_value_that_is_not_a_dict_is_an_error(self):
        outcome = self.run_source("def parse():\n    return [b'x']\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("must return a dict", outcome.error)
        self.assertIn("not list", outcome.error)

    def test_a_str_value_is_an_error_that_says_to_encode_it(self):
        outcome = self.run_source("def parse():\n    return {'a.txt': b'ok', 'b.txt': 'text'}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("str for 'b.txt'", outcome.error)
        self.assertIn("encode", outcome.error)
        self.assertEqual(self.written(), [])

    def test_a_non_str_file_name_is_an_error(self):
        outcome = self.run_source("def parse():\n    return {1: b'x'}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("names must be str", outcome.error)

    def test_bad_file_names_are_errors_and_nothing_is_written_anywhere(self):
        canary = os.path.join(self.tempdir.name, "x")
        for bad_name in ["../x", "a/b", "", "error.txt", "ERROR.TXT", ".hidden", "a\\b", "nul\x00", "line\nbreak"]:
            with self.subTest(name=bad_name):
                outcome = self.run_source(f"def parse():\n    return {{'good.txt': b'1', {bad_name!r}: b'2'}}\n")

                self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
                self.assertIn("bad file name", outcome.error)
                self.assertEqual(self.written(), [])
                self.assertFalse(os.path.exists(canary))

    def test_a_name_over_255_bytes_is_an_error(self):
        outcome = self.run_source("def parse():\n    return {'é' * 128: b'x'}\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("longer than 255 bytes", outcome.error)

    def test_more_files_than_the_limit_is_an_error(self):
        outcome = self.run_source("def parse():\n    return {f'{i}.txt': b'x' for i in range(11)}\n", result_files=10)

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED)
        self.assertIn("more than 10 result files", outcome.error)
        self.assertEqual(self.written(), [])

    def test_a_result_bigger_than_the_limit_is_an_error(self):
        outcome = self.run_source("def parse():\n    return {'big.bin': b'x' * 200_000}\n", result_bytes=100_000)

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED)
        self.assertIn("result larger than 97.6562 KiB", outcome.error)
        self.assertEqual(self.written(), [])


class LogTests(SandboxTestCase):
    def test_print_output_and_stderr_land_in_the_log_in_order(self):
        outcome = self.run_source("""
            import sys

            def parse():
                print("fetching page 1")
                print("warning: slow", file=sys.stderr)
                print("fetching page 2")
                return {}
        """)

        self.assertEqual(outcome.log, "fetching page 1\nwarning: slow\nfetching page 2\n")

    def test_the_log_is_capped_with_a_marker(self):
        outcome = self.run_source("def parse():\n    print('x' * 5000)\n    return {}\n", log_bytes=1024)

        self.assertEqual(outcome.status, runner.COMPLETED)
        self.assertTrue(outcome.log.startswith("x" * 1024))
        self.assertIn("[log truncated: 3977 more bytes dropped, the limit is 1 KiB]", outcome.log)

    def test_a_variables_value_cut_by_the_log_limit_is_not_kept_in_part(self):
        # Parseq masks a value by its whole, later: a part of one kept at the cut would escape (found by an attacker)
        log = LogCollector(42, holdback=secret_holdback({"API_KEY": "SUPERSECRET"}))  # 3 x 11 bytes may go
        log.feed(b"fetched 3 rows\n" + b"key=SUPERSECRET\n" * 5)  # the limit falls in "key=SUPERS|ECRET"

        kept, marker = log.text().split("\n[log truncated: ")
        self.assertEqual(kept, "fetched 3")
        self.assertEqual(marker, "86 more bytes dropped, the limit is 42 bytes]\n")

    def test_without_variables_the_log_keeps_all_it_may(self):
        log = LogCollector(4)
        log.feed(b"abcdef")

        self.assertTrue(log.text().startswith("abcd\n[log truncated: 2 more bytes dropped"))

    def test_the_log_of_a_failed_run_is_kept(self):
        outcome = self.run_source("def parse():\n    print('step one done')\n    raise RuntimeError('boom')\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertEqual(outcome.log, "step one done\n")

    def test_a_fake_result_printed_on_stdout_does_not_forge_the_result(self):
        outcome = self.run_source("""
            import base64, json, sys

            def parse():
                fake = {"kind": "file", "name": "forged.txt", "data": base64.b64encode(b"forged").decode()}
                print(json.dumps(fake))
                print(json.dumps({"kind": "done"}))
                sys.stderr.write(json.dumps(fake) + "\\n")
                return {"real.txt": b"real"}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED)
        self.assertEqual(self.written(), ["real.txt"])
        self.assertIn("forged.txt", outcome.log)


class EnvironmentTests(SandboxTestCase):
    def test_a_secret_in_the_parents_environment_is_not_visible_to_the_script(self):
        os.environ["PARSEQ_TEST_SECRET"] = "hunter2"
        self.addCleanup(os.environ.pop, "PARSEQ_TEST_SECRET")

        outcome = self.run_source("""
            import json, os

            def parse():
                return {"env.json": json.dumps(dict(os.environ)).encode()}
        """)

        with open(os.path.join(self.out_dir, "env.json")) as file:
            environment = json.load(file)
        self.assertNotIn("hunter2", repr(environment))
        proxy_variables = {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}  # the jail's way out
        self.assertEqual(
            set(environment) - {"LC_CTYPE", "PWD"} - proxy_variables,
            {"PATH", "LANG", "TZ", "HOME", "TMPDIR", "MALLOC_ARENA_MAX"},
        )
        self.assertEqual(outcome.status, runner.COMPLETED)

    def test_home_is_the_working_directory_and_nothing_left_in_home_or_tmpdir_outlives_the_run(self):
        marker = f"left-behind-{uuid.uuid4().hex}"

        outcome = self.run_source(f"""
            import os

            def parse():
                for directory in (os.environ["HOME"], os.environ["TMPDIR"]):
                    with open(os.path.join(directory, "{marker}"), "w") as file:
                        file.write("x")
                return {{"home.txt": os.environ["HOME"].encode(), "cwd.txt": os.getcwd().encode()}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "home.txt")) as file:
            home = file.read()
        with open(os.path.join(self.out_dir, "cwd.txt")) as file:
            self.assertEqual(file.read(), home)
        temp = tempfile.gettempdir()
        self.assertEqual(glob.glob(f"{temp}/{marker}") + glob.glob(f"{temp}/*/{marker}"), [])


class TimeoutTests(SandboxTestCase):
    def test_a_script_that_sleeps_past_its_timeout_is_killed(self):
        started = time.monotonic()

        outcome = self.run_source("import time\ndef parse():\n    time.sleep(60)\n", wall_time=1)

        self.assertEqual(outcome.status, runner.TIMEOUT)
        self.assertEqual(outcome.error, "timed out after 1 s")
        self.assertLess(time.monotonic() - started, 10)

    def test_a_child_process_started_by_the_script_does_not_survive_the_timeout(self):
        marker = f"{uuid.uuid4().int % 10**6}.5"

        outcome = self.run_source(
            f"""
            import subprocess, time

            def parse():
                subprocess.Popen(["sleep", "{marker}"])
                time.sleep(60)
            """,
            wall_time=1,
        )

        self.assertEqual(outcome.status, runner.TIMEOUT)
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the child to die")

    def test_a_child_process_does_not_survive_a_successful_run_either(self):
        marker = f"{uuid.uuid4().int % 10**6}.25"

        outcome = self.run_source(f"""
            import subprocess

            def parse():
                subprocess.Popen(["sleep", "{marker}"])
                return {{"ok.txt": b"ok"}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED)
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the child to die")

    def test_endless_output_is_capped_and_the_run_times_out(self):
        outcome = self.run_source(
            "def parse():\n    while True:\n        print('spam' * 100)\n", wall_time=1, cpu_time=30, log_bytes=4096
        )

        self.assertEqual(outcome.status, runner.TIMEOUT)
        self.assertLessEqual(len(outcome.log.encode()), 4096 + 200)
        self.assertIn("[log truncated:", outcome.log)


class MissingInterpreterTests(SandboxTestCase):
    def test_a_missing_sandbox_interpreter_is_a_sandbox_error(self):
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(path, self.out_dir, python="/nonexistent/python")

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn("make sandbox", outcome.error)


class LimitTests(SandboxTestCase):
    def test_a_memory_hog_ends_in_error_naming_the_memory_limit(self):
        outcome = self.run_source("def parse():\n    hog = bytearray(512 * 1024 * 1024)\n", memory_bytes=256 * 1024**2)

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("memory limit 256 MiB exceeded"), outcome.error)
        self.assertIn("MemoryError", outcome.error)

    def test_a_slow_memory_climb_ends_in_error_naming_the_memory_limit(self):
        outcome = self.run_source(
            "def parse():\n    chunks = []\n    while True:\n        chunks.append(b'x' * 1024 * 1024)\n",
            memory_bytes=200 * 1024**2,
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("memory limit 200 MiB exceeded"), outcome.error)

    def test_a_busy_loop_ends_in_error_naming_the_cpu_limit(self):
        started = time.monotonic()

        outcome = self.run_source("def parse():\n    while True:\n        pass\n", wall_time=20, cpu_time=1)

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED)
        self.assertEqual(outcome.error, "CPU time limit 1 s exceeded")
        self.assertLess(time.monotonic() - started, 10)

    def test_a_script_that_ignores_sigxcpu_is_still_stopped_at_the_cpu_limit(self):
        outcome = self.run_source(
            """
            import signal

            def parse():
                signal.signal(signal.SIGXCPU, signal.SIG_IGN)
                while True:
                    pass
            """,
            wall_time=20,
            cpu_time=1,
        )

        self.assertNotEqual(outcome.status, runner.COMPLETED)
        self.assertIn("CPU time limit", outcome.error)
        self.assertIn("1 s", outcome.error)

    def test_writing_a_file_over_the_size_limit_names_the_limit(self):
        outcome = self.run_source(
            "def parse():\n    with open('big', 'wb') as f:\n        f.write(b'x' * 3 * 1024 * 1024)\n",
            file_bytes=1024 * 1024,
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("file size limit 1 MiB exceeded"), outcome.error)

    def test_opening_too_many_files_names_the_limit(self):
        outcome = self.run_source(
            "def parse():\n    handles = [open('f%d' % i, 'w') for i in range(100)]\n", open_files=50
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("open files limit 50 exceeded"), outcome.error)

    def test_ordinary_scripts_run_within_the_default_limits(self):
        outcome = self.run_source("""
            import concurrent.futures, bs4, requests

            def parse():
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    squares = list(pool.map(lambda n: n * n, range(100)))
                soup = bs4.BeautifulSoup("<p>" * 1000, "lxml")
                return {"sum.txt": str(sum(squares)).encode(), "tags.txt": str(len(soup.find_all("p"))).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)


@unittest.skipUnless(os.geteuid() == 0, "a sandbox gets a user id of its own only when the worker runs as root")
class OwnUserTests(SandboxTestCase):
    def test_the_script_runs_as_an_unprivileged_user_of_its_own(self):
        outcome = self.run_source("import os\ndef parse():\n    return {'id.txt': str(os.getuid()).encode()}\n")

        with open(os.path.join(self.out_dir, "id.txt")) as file:
            uid = int(file.read())
        self.assertGreaterEqual(uid, 200_000)
        self.assertEqual(outcome.status, runner.COMPLETED)

    def test_the_parents_environment_cannot_be_read_through_proc(self):
        os.environ["PARSEQ_TEST_SECRET"] = "hunter2"
        self.addCleanup(os.environ.pop, "PARSEQ_TEST_SECRET")

        outcome = self.run_source("""
            import os

            def parse():
                found = []
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        with open(f"/proc/{pid}/environ", "rb") as environ:
                            found.append(environ.read())
                    except OSError:
                        pass
                return {"found.bin": b"\\n".join(found)}
        """)

        with open(os.path.join(self.out_dir, "found.bin"), "rb") as file:
            self.assertNotIn(b"hunter2", file.read())
        self.assertEqual(outcome.status, runner.COMPLETED)

    def test_a_fork_bomb_is_stopped_by_the_process_limit(self):
        outcome = self.run_source(
            """
            import os, time

            def parse():
                children = []
                while True:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(30)
                        os._exit(0)
                    children.append(pid)
            """,
            processes=20,
            wall_time=20,
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("process limit 20 (processes and threads) exceeded"), outcome.error)

    def test_a_thread_bomb_is_stopped_by_the_process_limit(self):
        outcome = self.run_source(
            """
            import threading, time

            def parse():
                while True:
                    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            """,
            processes=20,
            wall_time=20,
        )

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertTrue(outcome.error.startswith("process limit 20 (processes and threads) exceeded"), outcome.error)

    def test_a_working_directory_the_sandbox_user_cannot_reach_is_a_clear_sandbox_error(self):
        closed = tempfile.mkdtemp(prefix="parseq-closed-")
        self.addCleanup(os.rmdir, closed)
        os.chmod(closed, 0o700)
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        with mock.patch.object(tempfile, "tempdir", closed):
            outcome = runner.run_script(path, self.out_dir, python=settings.SANDBOX_PYTHON)

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn(f"cannot enter {closed}", outcome.error)


class DaemonTests(SandboxTestCase):
    def setUp(self):
        super().setUp()
        if self.backend == "subprocess" and os.geteuid() != 0:
            self.skipTest("without a jail, daemons are found by their user id, which needs a root worker")

    def test_a_setsid_daemon_does_not_outlive_its_run(self):
        marker = f"{uuid.uuid4().int % 10**6}.75"

        outcome = self.run_source(f"""
            import os, subprocess

            def parse():
                if os.fork() == 0:
                    os.setsid()
                    subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
                    os._exit(0)
                return {{"ok.txt": b"ok"}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the daemon to die")


@require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")
class JailTests(SandboxTestCase):
    backend = "bwrap"

    def test_the_script_sees_none_of_parseqs_files_nor_other_runs(self):
        private = [str(settings.BASE_DIR / "parseq"), str(settings.VAR_DIR), str(settings.BASE_DIR / "runner")]

        outcome = self.run_source(f"""
            import glob, os

            def parse():
                visible = [path for path in {private!r} if os.path.exists(path)]
                # The sandbox's own interpreter shows where it lives, which may be below /tmp/parseq-…
                found = glob.glob("/tmp/parseq-*") + glob.glob("/sandbox/*")
                others = sorted(path for path in found if not {settings.SANDBOX_PYTHON!r}.startswith(path + "/"))
                return {{"visible.txt": repr(visible).encode(), "others.txt": repr(others).encode()}}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "visible.txt")) as file:
            self.assertEqual(file.read(), "[]")
        # A warm jail also sees the zygote's code and, empty, where the zygote keeps its runs' directories.
        warm = ["/sandbox/runs", "/sandbox/self_jail.py", "/sandbox/zygote.py"] if self.warm else []
        expected = sorted(["/sandbox/bootstrap.py", "/sandbox/restricted.py", "/sandbox/work", *warm])
        with open(os.path.join(self.out_dir, "others.txt")) as file:
            self.assertEqual(file.read(), repr(expected))

    def test_the_jails_root_and_dev_are_read_only_and_dev_shm_holds_the_disk_limit(self):
        filled = self.run_source(
            """
            def parse():
                with open("/dev/shm/fill", "wb") as file:
                    for _ in range(64):
                        file.write(b"x" * 1024 * 1024)
            """,
            disk_bytes=16 * 1024 * 1024,
        )
        outcome = self.run_source("""
            import os

            def parse():
                tried = {}
                for directory in ("/", "/sandbox", "/dev", "/usr"):
                    try:
                        open(os.path.join(directory, "planted"), "wb").close()
                        tried[directory] = "written"
                    except OSError as error:
                        tried[directory] = error.strerror
                return {"tried.txt": repr(sorted(set(tried.values()))).encode()}
        """)
        self.assertIn(filled.status, (runner.SCRIPT_ERROR, runner.LIMIT_EXCEEDED), filled.error)
        self.assertTrue(filled.error.startswith("disk limit 16 MiB exceeded"), filled.error)
        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "tried.txt")) as file:
            self.assertEqual(file.read(), "['Read-only file system']")

    def test_the_script_sees_no_process_outside_its_jail(self):
        outcome = self.run_source("""
            import os

            def parse():
                return {"pids.txt": " ".join(sorted(filter(str.isdigit, os.listdir("/proc")))).encode()}
        """)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "pids.txt")) as file:
            pids = file.read().split()
        self.assertLessEqual(len(pids), 3, pids)
        self.assertNotIn(str(os.getpid()), pids)

    def test_with_network_none_nothing_outside_the_jail_answers(self):
        path = write_script(
            self.tempdir.name,
            """
            import socket

            def parse():
                results = []
                for port in (5432, 5672):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=2).close()
                        results.append(f"{port} open")
                    except OSError as error:
                        results.append(f"{port} {type(error).__name__}")
                return {"ports.txt": "\\n".join(results).encode()}
        """,
        )

        outcome = runner.run_script(
            path, self.out_dir, python=settings.SANDBOX_PYTHON, backend="bwrap", network="none", warm=self.warm
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "ports.txt")) as file:
            self.assertEqual(file.read().split("\n"), ["5432 ConnectionRefusedError", "5672 ConnectionRefusedError"])

    def test_parser_variables_cannot_replace_the_sandboxs_own(self):
        path = write_script(
            self.tempdir.name, "import os\ndef parse():\n    return {'p.txt': os.environ['PATH'].encode()}\n"
        )

        outcome = runner.run_script(
            path,
            self.out_dir,
            python=settings.SANDBOX_PYTHON,
            backend="bwrap",
            variables={"PATH": "/evil", "K": "v"},
            warm=self.warm,
        )

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "p.txt")) as file:
            self.assertNotIn("/evil", file.read())

    def test_the_system_is_read_only_for_the_script(self):
        outcome = self.run_source("""
            def parse():
                with open("/usr/lib/evil", "w") as file:
                    file.write("x")
        """)

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("Read-only file system", outcome.error)


class DiskLimitTests(SandboxTestCase):
    def test_filling_the_disk_ends_in_error_at_the_disk_limit_for_home_and_tmp_alike(self):
        for directory in ("HOME", "TMPDIR", "/tmp"):
            with self.subTest(directory=directory):
                target = f'os.environ["{directory}"]' if directory.isupper() else repr(directory)
                outcome = self.run_source(
                    f"""
                    import os, uuid

                    def parse():
                        prefix = uuid.uuid4().hex
                        for i in range(1000):
                            with open(os.path.join({target}, f"{{prefix}}-fill{{i}}"), "wb") as file:
                                file.write(b"x" * 4 * 1024 * 1024)
                    """,
                    disk_bytes=32 * 1024 * 1024,
                    wall_time=30,
                )

                self.assertIn(outcome.status, (runner.SCRIPT_ERROR, runner.LIMIT_EXCEEDED), outcome.error)
                self.assertTrue(outcome.error.startswith("disk limit 32 MiB exceeded"), outcome.error)


class NetworkPolicyTests(SandboxTestCase):
    @unittest.skipIf(ISOLATING_SUBPROCESS, "as root, the subprocess backend can cut the network")
    def test_network_none_is_refused_by_a_backend_that_cannot_cut_the_network(self):
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(path, self.out_dir, python=settings.SANDBOX_PYTHON, network="none")

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn("network 'none' needs the bwrap backend or a worker running as root", outcome.error)

    def test_an_unknown_network_policy_is_a_sandbox_error(self):
        path = write_script(self.tempdir.name, "def parse():\n    return {}\n")

        outcome = runner.run_script(path, self.out_dir, python=settings.SANDBOX_PYTHON, network="lan")

        self.assertEqual((outcome.status, outcome.error), (runner.SANDBOX_ERROR, "unknown network policy 'lan'"))


def under_bwrap(test_class):
    """The same tests, run through the bubblewrap jail."""
    jailed = type(f"Bwrap{test_class.__name__}", (test_class,), {"backend": "bwrap", "__module__": __name__})
    return require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")(jailed)


def under_docker(test_class):
    """The same tests, each run in a container of the sandbox image on a real Docker engine."""
    contained = type(f"Docker{test_class.__name__}", (test_class,), {"backend": "docker", "__module__": __name__})
    return require(*docker_sandbox_availability())(contained)


def warm_start(test_class):
    """The same tests, each run forked from a zygote that has imported the libraries already."""
    return type(f"Warm{test_class.__name__}", (test_class,), {"warm": True, "__module__": test_class.__module__})


def warm_under_bwrap(test_class):
    """The same tests, each run forked from a zygote in a bubblewrap jail, into a jail of its own."""
    warm = type(
        f"WarmBwrap{test_class.__name__}",
        (test_class,),
        {"warm": True, "backend": "bwrap", "__module__": test_class.__module__},
    )
    return require(runner.bwrap_works(), "needs bubblewrap with user namespaces: apt-get install bubblewrap")(warm)


for _test_class in (
    ResultsTests,
    ScriptErrorTests,
    ContractTests,
    LogTests,
    EnvironmentTests,
    TimeoutTests,
    LimitTests,
    OwnUserTests,
    DaemonTests,
    DiskLimitTests,
):
    globals()[f"Bwrap{_test_class.__name__}"] = under_bwrap(_test_class)
    globals()[f"Docker{_test_class.__name__}"] = under_docker(_test_class)
    globals()[f"Warm{_test_class.__name__}"] = warm_start(_test_class)
    if _test_class is not OwnUserTests:  # warm jails share a user id: see WarmJailTests
        globals()[f"WarmBwrap{_test_class.__name__}"] = warm_under_bwrap(_test_class)
WarmBwrapJailTests = warm_under_bwrap(JailTests)
