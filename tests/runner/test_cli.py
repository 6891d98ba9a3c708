"""`python -m runner`: trying a script locally, as a user would from a shell."""

import os
import subprocess
import sys
import tempfile
import unittest

from django.conf import settings

import runner
from tests.helpers import write_script


class CommandLineTestCase(unittest.TestCase):
    def setUp(self):
        self.tempdir = tempfile.TemporaryDirectory(prefix="parseq-cli-")
        self.addCleanup(self.tempdir.cleanup)
        self.out = os.path.join(self.tempdir.name, "out")

    def run_cli(self, *arguments):
        return subprocess.run(
            [sys.executable, "-m", "runner", *arguments],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PARSEQ_SANDBOX_PYTHON": settings.SANDBOX_PYTHON},
        )


class CommandLineTests(CommandLineTestCase):
    def test_a_successful_script_writes_its_files_and_exits_0(self):
        script = write_script(self.tempdir.name, "def parse():\n    print('hi')\n    return {'a.csv': b'x,y\\n'}\n")

        result = self.run_cli(script, "--out", self.out)

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(os.listdir(self.out), ["a.csv"])
        with open(os.path.join(self.out, "a.csv"), "rb") as file:
            self.assertEqual(file.read(), b"x,y\n")
        self.assertEqual(result.stdout, "hi\n")
        self.assertIn("a.csv (4 bytes)", result.stderr)

    def test_a_failing_script_writes_error_txt_and_exits_1(self):
        script = write_script(self.tempdir.name, "def parse():\n    raise RuntimeError('site down')\n")

        result = self.run_cli(script, "--out", self.out)

        self.assertEqual(result.returncode, 1)
        self.assertEqual(os.listdir(self.out), ["error.txt"])
        with open(os.path.join(self.out, "error.txt")) as file:
            self.assertIn("RuntimeError: site down", file.read())

    def test_a_rerun_replaces_the_files_and_clears_an_old_error(self):
        failing = write_script(self.tempdir.name, "def parse():\n    raise RuntimeError\n", name="f.py")
        working = write_script(self.tempdir.name, "def parse():\n    return {'a.txt': b'new'}\n", name="w.py")
        self.run_cli(failing, "--out", self.out)

        self.assertEqual(self.run_cli(working, "--out", self.out).returncode, 0)
        self.assertEqual(self.run_cli(working, "--out", self.out).returncode, 0)

        self.assertEqual(os.listdir(self.out), ["a.txt"])

    def test_the_timeout_option_kills_a_slow_script(self):
        script = write_script(self.tempdir.name, "import time\ndef parse():\n    time.sleep(30)\n")

        result = self.run_cli(script, "--out", self.out, "--timeout", "0.5")

        self.assertEqual(result.returncode, 1)
        self.assertIn("timed out after 0.5 s", result.stderr)

    def test_the_backend_can_be_chosen_and_defaults_to_the_strongest(self):
        script = write_script(
            self.tempdir.name, "import os\ndef parse():\n    return {'home.txt': os.environ['HOME'].encode()}\n"
        )

        default = self.run_cli(script, "--out", self.out)
        with open(os.path.join(self.out, "home.txt")) as file:
            default_home = file.read()
        plain = self.run_cli(script, "--out", self.out, "--backend", "subprocess")
        with open(os.path.join(self.out, "home.txt")) as file:
            plain_home = file.read()

        self.assertEqual((default.returncode, plain.returncode), (0, 0))
        self.assertIn("parseq-run-", plain_home)
        self.assertEqual(default_home, "/sandbox/work" if runner.bwrap_works() else plain_home)

    def test_usage_errors_exit_2(self):
        script = write_script(self.tempdir.name, "def parse():\n    return {}\n")
        for arguments in [
            (script,),
            ("missing.py", "--out", self.out),
            (script, "--out", self.out, "--timeout", "-1"),
            (script, "--out", self.out, "--backend", "chroot"),
        ]:
            with self.subTest(arguments=arguments):
                self.assertEqual(self.run_cli(*arguments).returncode, 2)


class ServerLikeRunTests(CommandLineTestCase):
    """By default a local run is a worker's run with the default settings: what passes here passes there."""

    def test_restricted_mode_is_on_and_refuses_str_format_with_its_line_before_running(self):
        source = "def parse():\n    name = 'x'\n    return {'{}.txt'.format(name): b''}\n"
        script = write_script(self.tempdir.name, source)

        result = self.run_cli(script, "--out", self.out)

        self.assertEqual(result.returncode, 1)
        self.assertIn("Line 3: str.format() is not allowed in restricted mode; use an f-string", result.stderr)
        self.assertEqual(os.listdir(self.out), ["error.txt"])

    def test_restricted_mode_refuses_at_run_time_what_it_refuses_on_the_server(self):
        script = write_script(self.tempdir.name, "def parse():\n    return {'a.txt': bytes(len(range(5000)))}\n")

        restricted = self.run_cli(script, "--out", self.out)
        unrestricted = self.run_cli(script, "--out", self.out, "--no-restricted")

        self.assertEqual(restricted.returncode, 1)
        self.assertIn("we only allow 1000 elements in a range", restricted.stderr)
        self.assertEqual(unrestricted.returncode, 0, unrestricted.stderr)

    def test_the_memory_option_sets_the_runs_memory_limit(self):
        source = "def parse():\n    hog = bytearray(300 * 1024 * 1024)\n    return {}\n"
        script = write_script(self.tempdir.name, source)

        small = self.run_cli(script, "--out", self.out, "--memory", "128")
        default = self.run_cli(script, "--out", self.out)

        self.assertEqual(small.returncode, 1)
        self.assertIn("memory limit 128 MiB exceeded", small.stderr)
        self.assertEqual(default.returncode, 0, default.stderr)

    def test_variables_are_passed_with_env(self):
        script = write_script(
            self.tempdir.name, "import os\ndef parse():\n    return {'t.txt': os.environ['TOKEN'].encode()}\n"
        )

        result = self.run_cli(script, "--out", self.out, "--env", "TOKEN=s3cr=t", "--env", "OTHER=1")

        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(self.out, "t.txt")) as file:
            self.assertEqual(file.read(), "s3cr=t")

    @unittest.skipUnless(runner.bwrap_works() or os.geteuid() == 0, "network 'none' needs bwrap or root")
    def test_network_none_has_no_egress_proxy_and_internet_has_one(self):
        source = "import os\ndef parse():\n    return {'proxy.txt': repr(os.environ.get('HTTPS_PROXY')).encode()}\n"
        script = write_script(self.tempdir.name, source)
        proxies = {}
        for network in ("none", "internet"):
            result = self.run_cli(script, "--out", self.out, "--network", network)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(os.path.join(self.out, "proxy.txt")) as file:
                proxies[network] = file.read()

        self.assertEqual(proxies["none"], "None")
        self.assertRegex(proxies["internet"], r"^'http://127\.0\.0\.1:\d+'$")

    def test_bad_option_values_exit_2_naming_the_option(self):
        script = write_script(self.tempdir.name, "def parse():\n    return {}\n")
        for option, value in [
            ("--memory", "12"),
            ("--memory", "lots"),
            ("--env", "NOEQUALS"),
            ("--env", "1X=2"),
            ("--network", "everything"),
            ("--port", "70000"),
            ("--allow-network", "10.0.0.0/33"),
        ]:
            with self.subTest(option=option, value=value):
                result = self.run_cli(script, "--out", self.out, option, value)

                self.assertEqual(result.returncode, 2)
                self.assertIn(f"argument {option}", result.stderr)
