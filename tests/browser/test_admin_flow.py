"""The whole loop in a real browser: log in, upload a parser, Run now, watch it finish, download."""

import math
import shutil
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from parseq.core.models import Parser
from parseq.scheduling.coordination import FileCoordinator
from parseq.scheduling.keeper import ScheduleKeeper
from tests.browser.browser import AdminPages, BrowserTestCase
from tests.helpers import TemporaryMediaMixin, make_parser, wait_until

SCHEDULED = "def parse():\n    return {'tick.txt': b'tick'}\n"


class AdminInBrowserTests(TemporaryMediaMixin, AdminPages, BrowserTestCase):
    def start_scheduler(self):
        """The scheduler thread `make run` starts, with a lock of this test's own."""
        if connection.vendor == "postgresql":
            keeper = ScheduleKeeper()  # the test database's own advisory lock, and NOTIFY
        else:
            lock_dir = tempfile.mkdtemp(prefix="parseq-browser-")
            self.addCleanup(shutil.rmtree, lock_dir, True)
            keeper = ScheduleKeeper(coordinator=FileCoordinator(str(Path(lock_dir) / "scheduler.lock")))
        stopping = threading.Event()
        thread = threading.Thread(target=keeper.run, args=(stopping,), daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(stopping.set)
        wait_until(keeper.active.is_set, timeout=10, message="the scheduler to become active")

    def wait_until_fired_at(self, moment):
        """Wait until the scheduler has fired what was due at `moment`: a one-off parser due then has run.

        Parsers due together fire in one round: once this one has run, so would have any other due then.
        """
        fence = make_parser(SCHEDULED, name="due at the old time", filename="fence.py", scheduled_time=moment)
        wait_until(fence.runs.exists, timeout=10, message=f"the run due at {moment}")

    def test_a_user_schedules_a_parser_five_seconds_ahead_every_three_moves_it_and_switches_it_off(self):
        self.start_scheduler()
        self.login("admin", "admin")

        # When a parser is saved to run 5 s from now and every 3 s after
        first = (timezone.now() + timedelta(seconds=5)).replace(microsecond=0)
        every_3_s = {"scheduled_time_0": first.strftime("%Y-%m-%d"), "repeat_after": "00:00:03"}
        self.upload_parser("ticker", SCHEDULED, scheduled_time_1=first.strftime("%H:%M:%S"), **every_3_s)
        self.expect_text("was added successfully")
        parser = Parser.objects.get(name="ticker")

        # Then its page shows the next run, and it runs at those times, within a second
        self.visit(f"/admin/core/parser/{parser.pk}/change/")
        self.expect_text(first.strftime("%Y-%m-%d %H:%M:%S UTC"))
        self.screenshot("scheduled-parser-page")
        wait_until(lambda: parser.runs.count() >= 2, timeout=15, message="two scheduled runs")
        runs = list(parser.runs.order_by("scheduled_for"))[:2]
        self.assertEqual([run.scheduled_for for run in runs], [first, first + timedelta(seconds=3)])
        for run in runs:
            self.assertLess((run.created_time - run.scheduled_for).total_seconds(), 1.0)

        # When the first run is moved 30 s ahead in the admin
        moved = (timezone.now() + timedelta(seconds=30)).replace(microsecond=0)
        self.visit(f"/admin/core/parser/{parser.pk}/change/")
        self.fill(scheduled_time_0=moved.strftime("%Y-%m-%d"), scheduled_time_1=moved.strftime("%H:%M:%S"))
        self.save_and_continue()
        self.expect_text("was changed successfully")
        edited_at = timezone.now()

        # Then the old times are dropped at once: no run at the old next time, and the page shows the new one
        self.expect_text(moved.strftime("%Y-%m-%d %H:%M:%S UTC"))
        old_next = first + timedelta(seconds=3 * math.ceil((edited_at - first).total_seconds() / 3 + 0.5 / 3))
        self.wait_until_fired_at(old_next)
        self.assertFalse(parser.runs.filter(created_time__gt=edited_at + timedelta(milliseconds=500)).exists())

        # When automatic runs are switched off, the next run is gone
        self.page.get_by_label("Enabled", exact=True).uncheck()
        self.save_and_continue()
        self.expect_text("was changed successfully")
        expect(self.page.locator(".field-next_run .readonly")).to_have_text("-")
        self.screenshot("automatic-runs-off")

    def test_a_user_uploads_a_parser_runs_it_and_downloads_its_file(self):
        self.visit("/admin/login/")
        self.screenshot("login-page")
        self.login("admin", "admin")
        self.upload_parser("greeting", "def parse():\n    print('saying hello')\n    return {'hello.txt': b'Hello!'}\n")
        self.expect_text("was added successfully")
        self.screenshot("parser-page")

        # The parser is listed, and its name leads back to its page
        self.visit("/admin/core/parser/")
        greeting = self.page.get_by_role("link", name="greeting", exact=True)
        expect(greeting).to_be_visible()
        self.screenshot("parser-list")
        greeting.click()

        self.assertEqual(self.run_now_and_wait(), "completed")
        self.expect_text("saying hello")
        self.screenshot("run-finished")
        self.assertEqual(self.download(self.page.get_by_role("link", name="hello.txt", exact=True)), b"Hello!")

    def test_a_broken_upload_shows_line_and_reason_and_a_failing_run_serves_error_txt(self):
        self.login("admin", "admin")
        self.upload_parser("broken", "import numpy\n\ndef parse():\n    return {}\n")
        self.expect_text("line 1: module 'numpy' is not allowed")
        self.screenshot("upload-refused")

        self.upload_parser("failing", "def parse():\n    raise ValueError('the site changed')\n")
        self.expect_text("was added successfully")
        self.assertEqual(self.run_now_and_wait(), "error")
        self.screenshot("run-error")
        error_txt = self.download(self.page.get_by_role("link", name="error.txt", exact=True))
        self.assertIn("ValueError: the site changed", error_txt.decode())
