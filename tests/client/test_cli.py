"""The `parseq` command, as installed in .venv, against a live all-in-one Parseq: what a new user types.

Log in, push a directory of parsers (and again after changing one), see a refused file, run with
--follow and see lines as the script prints them, download, check, diff, list, and the errors
that name their cause. Each test uses parsers of its own names; they share the server.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import requests
from django.test import tag

from tests import processes
from tests.helpers import shows_process_logs_on_failure
from tests.live import LiveParseqTestCase

PARSEQ = str(Path(sys.executable).parent / "parseq")
FOLLOWED = (
    "import time\n\n"
    "def parse():\n"
    "    print('first line', flush=True)\n"
    "    time.sleep(4)\n"
    "    print('last line', flush=True)\n"
    "    return {'done.txt': b'done'}\n"
)
FAILING = "def parse():\n    raise RuntimeError('the site is down')\n"
MAKE_VIEWER = (
    "from django.contrib.auth.models import Group, User\n"
    "user = User.objects.create_user('viewer', password='viewer-pass')\n"
    "user.groups.add(Group.objects.get(name='Viewers'))\n"
)


def script(name, text="done"):
    return f"def parse():\n    print('making {name}')\n    return {{'{name}.txt': b'{text}'}}\n"


def environment(*, config, **env):
    """The environment for `parseq`: its login in `config`; PARSEQ_URL and PARSEQ_TOKEN only as given."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("PARSEQ_URL", "PARSEQ_TOKEN")}
    return {**inherited, "PARSEQ_CONFIG_DIR": str(config), **env}


def parseq(*arguments, config, cwd=None, stdin=None, **env):
    """`parseq ARGUMENTS…`, run to its end."""
    return subprocess.run(
        [PARSEQ, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=environment(config=config, **env),
    )


@tag("slow")
class CommandLineTests(LiveParseqTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.parseq.manage("shell", "-c", MAKE_VIEWER)
        cls.config = tempfile.mkdtemp(prefix="parseq-test-cli-config-")
        cls.addClassCleanup(shutil.rmtree, cls.config, ignore_errors=True)
        logged_in = parseq("login", cls.base, "-u", "admin", "--password-stdin", stdin="admin\n", config=cls.config)
        assert logged_in.returncode == 0, logged_in.stderr
        cls.token = json.loads(Path(cls.config, "login.json").read_text())["token"]

    def setUp(self):
        super().setUp()
        self.work = Path(tempfile.mkdtemp(prefix="parseq-test-cli-"))
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)

    def run_parseq(self, *arguments, stdin=None, config=None, **env):
        """`parseq ARGUMENTS…` in the test's directory, logged in as admin unless `config` holds another login."""
        return parseq(*arguments, stdin=stdin, config=config or self.config, cwd=self.work, **env)

    def write(self, relative, text):
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def api(self, path):
        response = requests.get(self.base + path, headers={"Authorization": f"Token {self.token}"}, timeout=10)
        response.raise_for_status()
        return response.json()

    def parser(self, name):
        found = self.api(f"/api/parsers/?name={name}")["results"]
        return found[0] if found else None

    def versions(self, name):
        return [
            version["number"] for version in self.api(f"/api/parsers/{self.parser(name)['id']}/versions/")["results"]
        ]

    def finished_run(self, name, *more):
        """Run the parser `name` with --follow; its run id (from --json) and the finished command."""
        finished = self.run_parseq("run", name, "--follow", "--json", *more)
        return json.loads(finished.stdout)["run_id"], finished

    # Logging in

    def test_logging_in_stores_the_token_for_the_user_alone_and_the_other_commands_use_it(self):
        config = str(self.work / "config")

        finished = self.run_parseq(
            "login", self.base + "/", "-u", "admin", "--password-stdin", stdin="admin\n", config=config
        )

        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertIn(f"logged in to {self.base} as admin", finished.stdout)
        stored = Path(config, "login.json")
        self.assertEqual(stat.S_IMODE(stored.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(Path(config).stat().st_mode), 0o700)
        self.assertNotIn("admin\n", stored.read_text().split('"token"')[0])  # no password, only the token
        self.assertEqual(self.run_parseq("runs", config=config).returncode, 0)

    def test_a_wrong_password_is_refused_by_name_and_nothing_is_stored(self):
        config = str(self.work / "config")

        finished = self.run_parseq(
            "login", self.base, "-u", "admin", "--password-stdin", stdin="wrong\n", config=config
        )

        self.assertEqual(finished.returncode, 3)
        self.assertIn("the server refused the user name or password", finished.stderr)
        self.assertFalse(Path(config, "login.json").exists())

    def test_parseq_url_and_parseq_token_override_the_stored_login(self):
        nowhere = f"http://127.0.0.1:{processes.free_port()}"

        elsewhere = self.run_parseq("runs", PARSEQ_URL=nowhere, PARSEQ_TOKEN=self.token)
        by_variables = self.run_parseq(
            "runs", config=str(self.work / "none"), PARSEQ_URL=self.base, PARSEQ_TOKEN=self.token
        )

        self.assertEqual(elsewhere.returncode, 3)
        self.assertIn(f"cannot reach the Parseq server at {nowhere}: connection refused", elsewhere.stderr)
        self.assertEqual(by_variables.returncode, 0, by_variables.stderr)

    def test_without_a_login_a_command_says_how_to_log_in(self):
        finished = self.run_parseq("runs", config=str(self.work / "none"))

        self.assertEqual(finished.returncode, 2)
        self.assertIn("not logged in: run `parseq login URL`", finished.stderr)

    def test_a_refused_token_and_a_missing_permission_are_named(self):
        viewer = self.run_parseq(
            "login",
            self.base,
            "-u",
            "viewer",
            "--password-stdin",
            stdin="viewer-pass\n",
            config=str(self.work / "viewer"),
        )
        self.assertEqual(viewer.returncode, 0, viewer.stderr)
        self.write("parsers/viewer_made.py", script("viewer_made"))

        refused = self.run_parseq("runs", PARSEQ_URL=self.base, PARSEQ_TOKEN="0" * 40)
        pushed = self.run_parseq("push", "parsers", config=str(self.work / "viewer"))

        self.assertEqual((refused.returncode, pushed.returncode), (3, 3))
        self.assertIn(f"the server refused the token: log in again (parseq login {self.base})", refused.stderr)
        self.assertIn("permission missing: This needs the permission core.add_parser", pushed.stderr)
        self.assertIsNone(self.parser("viewer_made"))

    # Pushing

    def test_pushing_three_parsers_then_one_changed_makes_one_new_version(self):
        for name in ("push_a", "push_b", "push_c"):
            self.write(f"parsers/{name}.py", script(name))
        self.write("parsers/_helpers.py", "x = 1\n")  # not a parser: a helper's name

        first = self.run_parseq("push", "parsers", "-m", "first")
        self.write("parsers/push_b.py", script("push_b", text="changed"))
        planned = self.run_parseq("push", "parsers", "--dry-run")
        second = self.run_parseq("push", "parsers")

        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(
            first.stdout.splitlines(),
            ["created push_a (version 1)", "created push_b (version 1)", "created push_c (version 1)"],
        )
        self.assertIn("would update push_b", planned.stdout.splitlines())
        self.assertEqual(
            second.stdout.splitlines(),
            ["unchanged push_a (version 1)", "updated push_b (version 2)", "unchanged push_c (version 1)"],
        )
        self.assertEqual((self.versions("push_a"), self.versions("push_b")), ([1], [2, 1]))
        self.assertIsNone(self.parser("_helpers"))

    def test_a_refused_file_is_printed_as_file_line_reason_and_nothing_is_pushed(self):
        self.write("parsers/refused_good.py", script("refused_good"))
        self.write("parsers/refused_bad.py", "import os\n\ndef parse(when):\n    return eval('{}')\n")

        finished = self.run_parseq("push", "parsers")

        self.assertEqual(finished.returncode, 1)
        self.assertEqual(
            finished.stdout.splitlines(),
            [
                "parsers/refused_bad.py:3: parse() must take no required arguments, but requires when",
                "parsers/refused_bad.py:4: restricted mode: Eval calls are not allowed.",
            ],
        )
        self.assertIn("nothing was pushed", finished.stderr)
        self.assertIsNone(self.parser("refused_good"))

    def test_what_is_no_script_is_refused_before_the_server_is_asked(self):
        self.write("notes.txt", "hello")
        (self.work / "latin1.py").write_bytes(b"def parse():\n    return {'\xe9.txt': b''}\n")

        finished = self.run_parseq("push", "notes.txt", "latin1.py", "missing.py")

        self.assertEqual(finished.returncode, 1)
        self.assertEqual(
            finished.stdout.splitlines(),
            [
                "notes.txt: not a .py file: a parser script is a .py file named after its parser",
                "latin1.py:2: the script is not valid UTF-8 text",
                "missing.py: cannot be read: No such file or directory",
            ],
        )

    def test_files_no_save_would_take_are_each_named_with_the_reason(self):
        self.write("odd/nul.py", "def parse():\n    return {}\n\x00")
        self.write("odd/deep.py", "def parse():\n    return {}\n\nx = " + "1+" * 300 + "1\n")
        self.write("odd/huge.py", "def parse():\n    return {}\n" + "#" * 300_000)
        os.symlink("/etc/hostname", self.work / "odd" / "linked.py")

        finished = self.run_parseq("push", "odd")

        self.assertEqual(finished.returncode, 1)
        self.assertEqual(
            sorted(finished.stdout.splitlines()),
            [
                "odd/deep.py: restricted mode: the script nests too deeply to be checked (a very long expression, "
                "or blocks deep in blocks): split it up",
                "odd/huge.py: the script is larger than the server's limit of 262144 bytes (256 KiB)",
                "odd/linked.py: a symbolic link, not followed in a directory: name it to push it",
                "odd/nul.py: script_text: Null characters are not allowed.",
            ],
        )

    def test_a_name_no_terminal_shows_as_written_is_refused_and_dash_dash_ends_the_options(self):
        self.write("names/esc\x1b]0;owned\x07.py", script("esc"))
        self.write("-dash.py", script("dash"))

        refused = self.run_parseq("push", "names")
        dashed = self.run_parseq("push", "--", "-dash.py")

        self.assertEqual(refused.returncode, 1)
        self.assertNotIn("\x1b", refused.stdout)
        self.assertIn(
            "no parser can be named 'esc\\x1b]0;owned\\x07': 1 to 200 characters, no control characters", refused.stdout
        )
        self.assertEqual((dashed.returncode, dashed.stdout), (0, "created -dash (version 1)\n"))

    # Running and following

    @shows_process_logs_on_failure
    def test_run_follow_prints_each_line_while_the_script_still_runs_and_exits_0_when_it_completes(self):
        self.write("followed.py", FOLLOWED)
        self.assertEqual(self.run_parseq("push", "followed.py").returncode, 0)
        follower = subprocess.Popen(
            [PARSEQ, "run", "followed", "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(config=self.config),
        )
        self.addCleanup(follower.kill)
        watchdog = threading.Timer(60, follower.kill)  # a hung follower fails the test, not the suite
        watchdog.start()
        self.addCleanup(watchdog.cancel)

        # When the first line of the script's log reaches parseq's output
        run_id = re.match(r"run ([0-9a-f-]{36}) of followed", follower.stderr.readline()).group(1)
        first = follower.stdout.readline()

        # Then the run is still running: the line came as it was printed, not at the end
        self.assertEqual(first, "first line\n")
        self.assertEqual(self.api(f"/api/runs/{run_id}/")["status"], "running")

        # And at the end the rest comes, the run's outcome on stderr, and the exit status 0
        self.assertEqual(follower.wait(timeout=60), 0)
        self.assertEqual(follower.stdout.read(), "last line\n")
        self.assertIn("completed in", follower.stderr.read())

    def test_a_run_that_fails_exits_1_saying_why_and_its_error_downloads(self):
        self.write("failing.py", FAILING)
        self.run_parseq("push", "failing.py")

        run_id, finished = self.finished_run("failing")
        downloaded = self.run_parseq("download", run_id, "-o", "out")

        self.assertEqual(finished.returncode, 1)
        self.assertRegex(finished.stderr, r"error in [0-9.]+ s: RuntimeError: the site is down")
        self.assertEqual(downloaded.returncode, 0, downloaded.stderr)
        self.assertIn("RuntimeError: the site is down", (self.work / "out" / "error.txt").read_text())

    def test_a_run_with_variables_and_a_timeout_downloads_its_files(self):
        self.write("greeter.py", "import os\n\ndef parse():\n    return {'hi.txt': os.environ['WHO'].encode()}\n")
        self.run_parseq("push", "greeter.py")

        run_id, finished = self.finished_run("greeter", "--env", "WHO=Ada", "--timeout", "30")
        downloaded = self.run_parseq("download", run_id, "-o", "out")
        again = self.run_parseq("download", run_id, "-o", "out")

        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual(json.loads(finished.stdout)["parameters"], {"environment": {"WHO": "********"}, "timeout": 30})
        self.assertEqual(downloaded.stdout, "out/hi.txt (3 bytes)\n")
        self.assertEqual((self.work / "out" / "hi.txt").read_bytes(), b"Ada")
        self.assertEqual(again.returncode, 2)
        self.assertIn("out/hi.txt exists: --force replaces it", again.stderr)

    def test_runs_and_logs_list_and_print_what_the_server_has(self):
        self.write("listed.py", script("listed"))
        self.run_parseq("push", "listed.py")
        run_id, _ = self.finished_run("listed")

        listed = self.run_parseq("runs", "listed", "--status", "completed")
        logged = self.run_parseq("logs", run_id)
        not_a_run = self.run_parseq("logs", "12345")
        no_parser = self.run_parseq("runs", "no_such_parser")

        self.assertEqual(
            listed.stdout.splitlines()[0].split(), ["RUN", "PARSER", "STATUS", "TRIGGER", "CREATED", "(UTC)", "TOOK"]
        )
        self.assertEqual(listed.stdout.splitlines()[1].split()[:4], [run_id, "listed", "completed", "api"])
        self.assertEqual(logged.stdout, "making listed\n")
        self.assertEqual((not_a_run.returncode, no_parser.returncode), (2, 3))
        self.assertIn("not a run id: '12345'", not_a_run.stderr)
        self.assertIn(f"no parser named no_such_parser on {self.base}", no_parser.stderr)

    # Checking, comparing, trying

    def test_check_judges_without_saving_and_diff_compares_with_the_servers_version(self):
        self.write("compared.py", script("compared"))
        self.run_parseq("push", "compared.py")
        self.write("compared.py", script("compared", text="new"))
        self.write("unsaved.py", "def parse():\n    return []\n")

        checked = self.run_parseq("check", "compared.py", "unsaved.py")
        compared = self.run_parseq("diff", "compared")
        same = self.run_parseq("diff", "compared", "--json")

        self.assertEqual((checked.returncode, checked.stdout), (0, "compared.py: ok\nunsaved.py: ok\n"))
        self.assertIsNone(self.parser("unsaved"))
        self.assertEqual(compared.returncode, 1)
        self.assertIn("-    return {'compared.txt': b'done'}\n+    return {'compared.txt': b'new'}\n", compared.stdout)
        self.assertEqual(json.loads(same.stdout)["same"], False)
        self.run_parseq("push", "compared.py")
        self.assertEqual(self.run_parseq("diff", "compared").returncode, 0)

    def test_test_runs_the_script_here_as_a_worker_would(self):
        self.write(
            "local.py",
            "import os\n\ndef parse():\n    print('making local')\n"
            "    return {'local.txt': os.environ['WHAT'].encode()}\n",
        )

        finished = self.run_parseq("test", "local.py", "--out", "out", "-e", "WHAT=made here", "--", "--cold")

        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual((self.work / "out" / "local.txt").read_bytes(), b"made here")
        self.assertIn("making local", finished.stdout)

    def test_json_output_is_one_document_for_scripts(self):
        self.write("parsers/json_one.py", script("json_one"))

        pushed = json.loads(self.run_parseq("push", "parsers", "--json").stdout)

        self.assertEqual(pushed["refused"], [])
        self.assertEqual(
            [(change["name"], change["action"], change["version"]) for change in pushed["changes"]],
            [("json_one", "created", 1)],
        )
