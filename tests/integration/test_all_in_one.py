"""`make run`'s process (`runparseq`) driven from outside, as a new user would, over HTTP.

Through the admin: a parser saved to run 5 s ahead and every 3 s runs at those times, an
edit moves it at once, and switching automatic runs off stops it (the runs are read from
the SQLite file the process writes). Through the API: upload, run, poll, download.
"""

import math
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import requests
from django.test import SimpleTestCase

from tests.helpers import shows_process_logs_on_failure, wait_until
from tests.live import LiveParseq

SCRIPT = b"def parse():\n    return {'tick.txt': b'tick'}\n"


class AllInOneTestCase(SimpleTestCase):
    """A fresh var directory, migrated, with the dev admin, and `runparseq` serving it on a free port."""

    def setUp(self):
        parseq = LiveParseq()
        self.addCleanup(parseq.stop)
        parseq.start()
        self.base, self.database = parseq.base, parseq.database
        self.process_logs = [parseq.log_path]
        self.session = requests.Session()


class AllInOneSchedulingTests(AllInOneTestCase):
    def csrf(self, path):
        page = self.session.get(self.base + path)
        page.raise_for_status()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    def log_in(self):
        token = self.csrf("/admin/login/")
        data = {"username": "admin", "password": "admin", "csrfmiddlewaretoken": token, "next": "/admin/"}
        self.assertIn("Site administration", self.session.post(self.base + "/admin/login/", data=data).text)

    def save_parser(self, path, *, first_run, enabled=True, upload=True, name="ticker", repeat_after="00:00:03"):
        data = {
            "csrfmiddlewaretoken": self.csrf(path),
            "name": name,
            "description": "",
            "scheduled_time_0": first_run.strftime("%Y-%m-%d"),
            "scheduled_time_1": first_run.strftime("%H:%M:%S"),
            "repeat_after": repeat_after,
            "cron": "",
            "cron_timezone": "",
            "overlap": "skip",
            "webhook_on": "error",
            "timeout": "300",
            "max_attempts": "2",
            "restricted": "on",
            "network": "internet",
            "environment_text": "",
            "_continue": "Save and continue editing",
        }
        if enabled:
            data["enabled"] = "on"
        files = {"script": ("ticker.py", SCRIPT, "text/x-python")} if upload else None
        response = self.session.post(self.base + path, data=data, files=files, allow_redirects=False)
        self.assertEqual(response.status_code, 302, response.text[-3000:])
        return response.headers["Location"]

    def runs(self, parser="ticker"):
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT scheduled_for, created_time, status FROM core_run"
                " WHERE parser_id = (SELECT id FROM core_parser WHERE name = ?) ORDER BY scheduled_for",
                [parser],
            )
            return [(_utc(due), _utc(created), status) for due, created, status in rows]

    @shows_process_logs_on_failure
    def test_a_parser_5_s_ahead_every_3_s_runs_on_time_moves_with_an_edit_and_stops_when_switched_off(self):
        self.log_in()

        # When a parser is saved to run 5 s ahead, every 3 s
        first = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
        page = self.save_parser("/admin/core/parser/add/", first_run=first)

        # Then its page shows that time, and runs come then, within a second, and complete
        self.assertIn(first.strftime("%Y-%m-%d %H:%M:%S UTC"), self.session.get(self.base + page).text)
        wait_until(lambda: len(self.runs()) >= 2, timeout=15, interval=0.1, message="two runs")
        for (due, created, _), expected in zip(self.runs()[:2], [first, first + timedelta(seconds=3)], strict=True):
            self.assertEqual(due, expected)
            self.assertLess((created - due).total_seconds(), 1.0)
        wait_until(lambda: self.runs()[0][2] == "completed", timeout=10, message="the first run to complete")

        # When the first run is moved 6 s ahead in the admin
        moved = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        self.save_parser(page, first_run=moved, upload=False)
        edited = datetime.now(UTC)

        # Then the next runs come at the new times, and none at the old ones
        wait_until(lambda: any(due == moved for due, _, _ in self.runs()), timeout=10, message="the moved run")
        after_edit = [due for due, created, _ in self.runs() if created > edited]
        self.assertEqual(after_edit[0], moved)
        self.assertTrue(all((due - moved).total_seconds() % 3 == 0 for due in after_edit), after_edit)

        # When automatic runs are switched off
        self.save_parser(page, first_run=moved, enabled=False, upload=False)
        count = len(self.runs())

        # Then no run comes at the next time it was due: a one-off parser due then shows the scheduler got there
        # (due together, both would have run in the same round)
        switched_off = datetime.now(UTC) + timedelta(seconds=1)
        next_due = moved + timedelta(seconds=3 * math.ceil(max(0, (switched_off - moved).total_seconds()) / 3))
        self.save_parser("/admin/core/parser/add/", first_run=next_due, name="fence", repeat_after="")
        wait_until(lambda: self.runs("fence"), timeout=10, interval=0.1, message="the one-off parser's run")
        self.assertEqual(len(self.runs()), count)


class AllInOneApiTests(AllInOneTestCase):
    """Upload with curl's form, run, poll, download: only what /api/docs/ describes."""

    @shows_process_logs_on_failure
    def test_a_parser_uploaded_through_the_api_runs_and_its_file_downloads(self):
        auth = ("admin", "admin")
        docs = requests.get(self.base + "/api/docs/", timeout=5)
        self.assertEqual(docs.status_code, 200)
        schema = requests.get(self.base + "/api/schema/", params={"format": "json"}, timeout=5).json()
        self.assertIn("/api/parsers/{id}/run/", schema["paths"])

        files = {"script": ("my.py", b"def parse():\n    return {'hello.txt': b'Hello!'}\n")}
        created = requests.post(self.base + "/api/parsers/", data={"name": "x"}, files=files, auth=auth, timeout=10)
        self.assertEqual(created.status_code, 201, created.text)
        started = requests.post(f"{self.base}/api/parsers/{created.json()['id']}/run/", auth=auth, timeout=10)
        self.assertEqual(started.status_code, 202, started.text)

        def finished():
            run = requests.get(started.headers["Location"], auth=auth, timeout=5).json()
            return run if run["status"] in ("completed", "error") else None

        run = wait_until(finished, timeout=30, interval=0.2, message="the run to finish")
        self.assertEqual(run["status"], "completed", run["error"])
        download = requests.get(run["files"][0]["url"], auth=auth, timeout=5)
        self.assertEqual((download.status_code, download.content), (200, b"Hello!"))
        self.assertEqual(requests.get(run["files"][0]["download_url"], timeout=5).content, b"Hello!")


def _utc(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None
