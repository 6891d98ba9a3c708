"""The whole loop in a real browser: log in, upload a parser, Run now, watch it finish, download."""

import os
import shutil
import tempfile
import threading
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.db import connection
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from parseq.core.models import Parser
from parseq.scheduling.coordination import FileCoordinator
from parseq.scheduling.keeper import ScheduleKeeper
from tests.helpers import TemporaryMediaMixin, in_process_worker, require, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCHEDULED = "def parse():\n    return {'tick.txt': b'tick'}\n"


def headless_chromium(download_dir, profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    prefs = {
        "download.default_directory": download_dir,
        "download.prompt_for_download": False,
        # Otherwise a second download from the same origin waits for a permission nobody gives.
        "profile.default_content_setting_values.automatic_downloads": 1,
    }
    options.add_experimental_option("prefs", prefs)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@require(CHROMIUM and CHROMEDRIVER, "needs Chromium and ChromeDriver: apt-get install chromium chromium-driver")
class AdminInBrowserTests(TemporaryMediaMixin, StaticLiveServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.scratch = tempfile.mkdtemp(prefix="parseq-browser-")
        cls.downloads = os.path.join(cls.scratch, "downloads")
        os.mkdir(cls.downloads)
        cls.browser = headless_chromium(cls.downloads, os.path.join(cls.scratch, "profile"))
        cls.browser.implicitly_wait(5)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        shutil.rmtree(cls.scratch, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        self.worker = in_process_worker()
        self.worker.__enter__()
        self.addCleanup(self.worker.__exit__, None, None, None)

    def open(self, path):
        self.browser.get(self.live_server_url + path)

    def log_in(self):
        self.open("/admin/login/")
        self.browser.find_element(By.NAME, "username").send_keys("admin")
        self.browser.find_element(By.NAME, "password").send_keys("admin")
        self.browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        self.wait_for_text("Site administration")

    def wait_for_text(self, text):
        wait_until(lambda: text in self.browser.page_source, timeout=10, message=repr(text))

    def upload_parser(self, name, source, **fields):
        path = os.path.join(self.scratch, f"{name}.py")
        with open(path, "w") as file:
            file.write(source)
        self.open("/admin/core/parser/add/")
        self.browser.find_element(By.NAME, "name").send_keys(name)
        self.browser.find_element(By.NAME, "script").send_keys(path)
        self.fill(**fields)
        self.browser.find_element(By.NAME, "_continue").click()

    def fill(self, **fields):
        for field, value in fields.items():
            element = self.browser.find_element(By.NAME, field)
            element.clear()
            element.send_keys(value)

    def run_now_and_wait(self):
        self.browser.find_element(By.XPATH, "//button[normalize-space()='Run now']").click()
        run_page = wait_until(
            lambda: "/admin/core/run/" in self.browser.current_url and self.browser.current_url, message="the run page"
        )

        def finished_status():
            self.browser.get(run_page)
            status = self.browser.find_element(By.CSS_SELECTOR, ".field-status .readonly").text
            return status if status in ("completed", "error") else None

        return wait_until(finished_status, timeout=30, interval=0.3, message="the run to finish")

    def download(self, link_text):
        self.browser.find_element(By.LINK_TEXT, link_text).click()
        path = os.path.join(self.downloads, link_text)
        wait_until(lambda: os.path.exists(path), timeout=15, message=f"{link_text} to download")
        with open(path, "rb") as file:
            return file.read()

    def start_scheduler(self):
        """The scheduler thread `make run` starts, with a lock file of this test's own."""
        keeper = ScheduleKeeper(coordinator=FileCoordinator(os.path.join(self.scratch, "scheduler.lock")))
        if connection.vendor == "postgresql":
            keeper = ScheduleKeeper()  # the test database's own advisory lock, and NOTIFY
        stopping = threading.Event()
        thread = threading.Thread(target=keeper.run, args=(stopping,), daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(stopping.set)
        wait_until(keeper.active.is_set, timeout=10, message="the scheduler to become active")

    def test_a_user_schedules_a_parser_five_seconds_ahead_every_three_moves_it_and_switches_it_off(self):
        self.start_scheduler()
        self.log_in()

        # When a parser is saved to run 5 s from now and every 3 s after
        first = (timezone.now() + timedelta(seconds=5)).replace(microsecond=0)
        every_3_s = {"scheduled_time_0": first.strftime("%Y-%m-%d"), "repeat_after": "00:00:03"}
        self.upload_parser("ticker", SCHEDULED, scheduled_time_1=first.strftime("%H:%M:%S"), **every_3_s)
        self.wait_for_text("was added successfully")
        parser = Parser.objects.get(name="ticker")

        # Then its page shows the next run, and it runs at those times, within a second
        self.open(f"/admin/core/parser/{parser.pk}/change/")
        self.wait_for_text(first.strftime("%Y-%m-%d %H:%M:%S UTC"))
        wait_until(lambda: parser.runs.count() >= 2, timeout=15, message="two scheduled runs")
        runs = list(parser.runs.order_by("scheduled_for"))[:2]
        self.assertEqual([run.scheduled_for for run in runs], [first, first + timedelta(seconds=3)])
        for run in runs:
            self.assertLess((run.created_time - run.scheduled_for).total_seconds(), 1.0)

        # When the first run is moved 30 s ahead in the admin
        moved = (timezone.now() + timedelta(seconds=30)).replace(microsecond=0)
        self.open(f"/admin/core/parser/{parser.pk}/change/")
        self.fill(scheduled_time_0=moved.strftime("%Y-%m-%d"), scheduled_time_1=moved.strftime("%H:%M:%S"))
        self.browser.find_element(By.NAME, "_continue").click()
        self.wait_for_text("was changed successfully")
        edited_at = timezone.now()

        # Then the old times are dropped at once: no run before the new time, and the page shows it
        self.wait_for_text(moved.strftime("%Y-%m-%d %H:%M:%S UTC"))
        time.sleep(3.5)
        self.assertFalse(parser.runs.filter(created_time__gt=edited_at + timedelta(milliseconds=500)).exists())

        # When automatic runs are switched off, the next run is gone
        self.browser.find_element(By.NAME, "enabled").click()
        self.browser.find_element(By.NAME, "_continue").click()
        self.wait_for_text("was changed successfully")
        wait_until(lambda: "Next run:" in self.browser.page_source, message="the next run field")
        next_run = self.browser.find_element(By.CSS_SELECTOR, ".field-next_run .readonly").text
        self.assertEqual(next_run, "-")

    def test_a_user_uploads_a_parser_runs_it_and_downloads_its_file(self):
        self.log_in()
        self.upload_parser("greeting", "def parse():\n    print('saying hello')\n    return {'hello.txt': b'Hello!'}\n")
        self.wait_for_text("was added successfully")

        self.assertEqual(self.run_now_and_wait(), "completed")
        self.assertIn("saying hello", self.browser.page_source)
        self.assertEqual(self.download("hello.txt"), b"Hello!")

    def test_a_broken_upload_shows_line_and_reason_and_a_failing_run_serves_error_txt(self):
        self.log_in()
        self.upload_parser("broken", "import numpy\n\ndef parse():\n    return {}\n")
        self.wait_for_text("line 1: module 'numpy' is not allowed")

        self.upload_parser("failing", "def parse():\n    raise ValueError('the site changed')\n")
        self.wait_for_text("was added successfully")
        self.assertEqual(self.run_now_and_wait(), "error")
        self.assertIn("ValueError: the site changed", self.download("error.txt").decode())
