"""`parseq` against a server that lies: it writes nowhere it was not asked to, sends its token nowhere else,
reads no answer without end, prints no control sequence it was sent, and follows a run that starts again.

The server here is a small HTTP server of the test's own that answers what each test scripts: a
Parseq server never answers so (tests/client/test_cli.py talks to a real one), but one reached by
mistake, or through a network someone else controls, might.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.test import SimpleTestCase

PARSEQ = str(Path(sys.executable).parent / "parseq")
RUN_ID = "11111111-2222-3333-4444-555555555555"
TOKEN = "the-token-of-this-test"


class ScriptedServer:
    """An HTTP server on a free loopback port: `answers[path]` is (status, headers, body), or a list of them taken
    in turn (the last one repeats); every request is kept in `requests` as (method, path, Authorization)."""

    def __init__(self):
        self.answers, self.requests = {}, []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                scripted.requests.append(("GET", self.path, self.headers.get("Authorization")))
                status, headers, body = scripted.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if callable(body):
                    self.end_headers()
                    body(self.wfile)
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def answer(self, path):
        answers = self.answers.get(path.split("?")[0], (404, {}, b'{"detail": "No such thing.", "code": "not_found"}'))
        if isinstance(answers, list):
            return answers.pop(0) if len(answers) > 1 else answers[0]
        return answers

    def json(self, path, document, status=200, **headers):
        self.answers[path] = (status, {"Content-Type": "application/json", **headers}, json.dumps(document).encode())

    def stop(self):
        self.http.shutdown()
        self.http.server_close()


def run_with_files(*names, url=None, status="completed"):
    files = [{"name": name, "size": 1, "url": url or f"/api/runs/{RUN_ID}/files/x"} for name in names]
    return {"run_id": RUN_ID, "status": status, "files": files, "error_url": None}


class HostileServerTests(SimpleTestCase):
    def setUp(self):
        self.server = ScriptedServer()
        self.addCleanup(self.server.stop)
        self.elsewhere = ScriptedServer()
        self.addCleanup(self.elsewhere.stop)
        self.work = Path(tempfile.mkdtemp(prefix="parseq-test-hostile-"))
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)

    def parseq(self, *arguments, **variables):
        env = {**os.environ, "PARSEQ_URL": self.server.url, "PARSEQ_TOKEN": TOKEN, "PARSEQ_CONFIG_DIR": str(self.work)}
        env.update(variables)
        return subprocess.run([PARSEQ, *arguments], capture_output=True, text=True, cwd=self.work, env=env, timeout=60)

    def test_file_names_that_are_no_plain_names_are_refused_and_nothing_is_written(self):
        for name in ("../escaped", ".bashrc", "/etc/cron.d/x", "a/b", "a\\b", "a\nb", "é" * 200, ".."):
            with self.subTest(name=name):
                self.server.json(f"/api/runs/{RUN_ID}/", run_with_files("fine.txt", name))

                finished = self.parseq("download", RUN_ID, "-o", "out")

                self.assertEqual(finished.returncode, 3)
                self.assertIn("no plain file name; not writing it", finished.stderr)
                self.assertEqual(sorted(p.name for p in self.work.rglob("*")), [])

    def test_a_file_or_a_redirect_elsewhere_is_not_followed_and_the_token_stays_here(self):
        self.elsewhere.json("/loot", {"ok": True})
        self.server.json(f"/api/runs/{RUN_ID}/", run_with_files("a.txt", url=self.elsewhere.url + "/loot"))
        self.server.answers["/api/runs/"] = (302, {"Location": self.elsewhere.url + "/loot"}, b"")

        downloaded = self.parseq("download", RUN_ID, "-o", "out")
        listed = self.parseq("runs")

        self.assertEqual((downloaded.returncode, listed.returncode), (3, 3))
        self.assertIn("the server linked a file elsewhere", downloaded.stderr)
        self.assertIn("the server redirected elsewhere", listed.stderr)
        self.assertEqual(self.elsewhere.requests, [])

    def test_an_answer_without_end_is_cut_at_64_mib(self):
        def endless(stream):
            chunk = b"[" * 1024 * 1024
            try:
                while True:
                    stream.write(chunk)
            except OSError:
                pass  # the client hung up, as it should

        self.server.answers["/api/runs/"] = (200, {"Content-Type": "application/json"}, endless)

        finished = self.parseq("runs")

        self.assertEqual(finished.returncode, 3)
        self.assertIn("the server's answer is larger than 64 MiB", finished.stderr)

    def test_an_answer_that_trickles_is_given_up_at_the_timeout(self):
        def trickle(stream):
            try:
                for _ in range(60):
                    stream.write(b" ")
                    stream.flush()
                    time.sleep(0.25)
            except OSError:
                pass  # the client hung up, as it should

        self.server.answers["/api/runs/"] = (200, {"Content-Type": "application/json"}, trickle)
        started = time.monotonic()

        finished = self.parseq("runs", PARSEQ_TIMEOUT="2")

        self.assertEqual(finished.returncode, 3)
        self.assertIn("the server sent no whole answer in 2 s (PARSEQ_TIMEOUT)", finished.stderr)
        self.assertLess(time.monotonic() - started, 10)

    def test_control_sequences_in_an_error_are_not_printed_to_the_terminal(self):
        detail = "No.\x1b]0;owned\x07 \x1b[2J"
        self.server.json("/api/runs/", {"detail": detail, "code": "x"}, status=403)

        finished = self.parseq("runs")

        self.assertEqual(finished.returncode, 3)
        self.assertNotIn("\x1b", finished.stderr)
        self.assertIn("permission missing: No.?]0;owned? ?[2J", finished.stderr)

    def test_names_and_statuses_with_control_characters_are_shown_without_them(self):
        run = {**run_with_files(), "parser_name": "p\x1b[31mred\u202e", "status": "completed\x1b[2J"}
        self.server.json("/api/runs/", {"results": [{**run, "trigger": "api\n", "created_time": None}]})

        finished = self.parseq("runs")

        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertNotIn("\x1b", finished.stdout)
        self.assertEqual(finished.stdout.splitlines()[1].split()[:4], [RUN_ID, "p?[31mred?", "completed?[2J", "api?"])

    def test_answers_of_the_wrong_shape_are_named_not_tracebacks(self):
        log = (200, {"X-Log-Size": "0", "X-Run-Status": "completed", "X-Run-Attempt": "1"}, b"")
        self.server.answers[f"/api/runs/{RUN_ID}/log"] = log
        cases = {
            "an error link that is no address": (
                {**run_with_files(), "status": "error", "error_url": 5},
                ["download", RUN_ID, "-o", "out"],
                (3, "the server linked a file elsewhere (5)"),
            ),
            "a duration that is no number": (
                {**run_with_files(), "duration": "x"},
                ["logs", RUN_ID, "--follow"],
                (0, "completed: no files"),
            ),
            "a list for a run": ([1, 2], ["download", RUN_ID], (3, "not what Parseq's API gives")),
        }
        for case, (run, arguments, (status, said)) in cases.items():
            with self.subTest(case):
                self.server.json(f"/api/runs/{RUN_ID}/", run)

                finished = self.parseq(*arguments)

                self.assertEqual(finished.returncode, status, finished.stderr)
                self.assertIn(said, finished.stderr)
                self.assertNotIn("Traceback", finished.stderr)

    def test_a_run_that_starts_again_is_followed_from_the_start_of_its_new_attempt(self):
        log = f"/api/runs/{RUN_ID}/log"

        def page(body, size, status, attempt):
            headers = {"X-Log-Size": str(size), "X-Run-Status": status, "X-Run-Attempt": str(attempt)}
            return (200, {"Content-Type": "text/plain", **headers}, body)

        self.server.answers[log] = [
            page(b"one\ntwo\nthree\n", 14, "running", 1),
            # the worker was lost: attempt 2's log is shorter than what was read of attempt 1's
            page(b"", 4, "running", 2),
            page(b"uno\n", 4, "running", 2),
            page(b"dos\n", 8, "completed", 2),
        ]
        self.server.json(f"/api/runs/{RUN_ID}/", {**run_with_files("a.txt"), "duration": 1.0})

        finished = self.parseq("logs", RUN_ID, "--follow")

        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual(finished.stdout, "one\ntwo\nthree\nuno\ndos\n")
        self.assertIn("the run started again (attempt 2); its log from the start", finished.stderr)
