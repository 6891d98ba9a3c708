"""The whole loop in a real browser: log in, upload a parser, Run now, watch it finish, download."""

import os
import shutil
import tempfile

from django.contrib.auth import get_user_model
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.helpers import TemporaryMediaMixin, in_process_worker, require, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


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

    def upload_parser(self, name, source):
        path = os.path.join(self.scratch, f"{name}.py")
        with open(path, "w") as file:
            file.write(source)
        self.open("/admin/core/parser/add/")
        self.browser.find_element(By.NAME, "name").send_keys(name)
        self.browser.find_element(By.NAME, "script").send_keys(path)
        self.browser.find_element(By.NAME, "_continue").click()

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
