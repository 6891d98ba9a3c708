"""A base for browser tests: Playwright's sync API driving Debian's Chromium against Django's live server.

Each test class gets one Chromium, each test a fresh context (cookies, downloads) and page. Screenshots go to
test-output/screenshots/<TestClass>/<name>.png at the repo root ($PARSEQ_TEST_OUTPUT replaces test-output), and a
failing test leaves one named after itself there.
"""

import os
import re
import shutil
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from playwright.sync_api import expect, sync_playwright

from tests.helpers import in_process_worker, on_failure, require

# Debian's package, which CI installs with apt-get, rather than a browser Playwright downloads.
DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM = shutil.which("chromium") or (DEBIAN_CHROMIUM if os.access(DEBIAN_CHROMIUM, os.X_OK) else None)
REPO = Path(__file__).resolve().parents[2]
# Short, so a missing element fails in seconds rather than the 30 s Playwright waits by default.
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1280, "height": 900}
RUN_PAGE = re.compile(r"/admin/core/run/[^/]+/change/")
RUN_TIMEOUT_MS = 30_000  # a run starts a sandboxed interpreter: slower than a page

_announced = False  # the screenshot directory is printed once a run, not once a picture


def test_output_dir():
    return Path(os.environ.get("PARSEQ_TEST_OUTPUT") or REPO / "test-output")


# The page usually shows why a test failed: save a screenshot named after the test.
screenshots_on_failure = on_failure(lambda test: test._screenshot_failure())


@require(CHROMIUM, "needs Chromium: apt-get install chromium")
class BrowserTestCase(StaticLiveServerTestCase):
    """A live server and a headless Chromium; `self.page` is a fresh page for each test.

    Subclasses that define setUp call super().setUp() first.
    """

    browser = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # unittest gives tearDown no public way to tell a failed test; wrapping each test method does.
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and callable(value):
                setattr(cls, name, screenshots_on_failure(value))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.screenshots = test_output_dir() / "screenshots" / cls.__name__
        shutil.rmtree(cls.screenshots, ignore_errors=True)  # a stale failure picture would mislead
        if CHROMIUM is None:
            return  # `require` fails or skips each test with the reason
        # Playwright's sync API keeps an asyncio loop running in this thread while the browser is open, and Django
        # refuses ORM calls from a thread with a running loop. The calls are in fact synchronous: allow them.
        cls._async_unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        cls.addClassCleanup(cls._restore_async_unsafe)
        cls.playwright = sync_playwright().start()
        cls.addClassCleanup(cls.playwright.stop)
        cls.browser = cls.playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Playwright's default, said out loud: Chromium's own sandbox refuses to start as root or in most
            # containers, and the pages under test are our own.
            chromium_sandbox=False,
            # Docker's /dev/shm is 64 MB, which crashes tabs; /tmp has room.
            args=["--disable-dev-shm-usage"],
        )
        cls.addClassCleanup(cls.browser.close)
        expect.set_options(timeout=TIMEOUT_MS)

    @classmethod
    def _restore_async_unsafe(cls):
        if cls._async_unsafe is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = cls._async_unsafe

    def setUp(self):
        super().setUp()
        self.context = self.browser.new_context(base_url=self.live_server_url, accept_downloads=True, viewport=VIEWPORT)
        self.addCleanup(self.context.close)
        self.context.set_default_timeout(TIMEOUT_MS)
        # The admin has no icon: answer the browser's request for one, rather than log a 404 warning each run.
        self.context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        self.page = self.context.new_page()

    def visit(self, path):
        """Open a path of the live server, such as /admin/."""
        return self.page.goto(path)

    def login(self, username, password):
        """Log in through the admin's login form, and wait for the admin's index."""
        self.visit("/admin/login/?next=/admin/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_text("Site administration").first).to_be_visible()

    def expect_text(self, text, **options):
        """Wait until the page shows `text` (a string or a compiled regex) anywhere a user can read it."""
        expect(self.page.locator("body")).to_contain_text(text, use_inner_text=True, **options)

    def download(self, locator):
        """Click what starts a download and return the downloaded file's bytes."""
        with self.page.expect_download() as info:
            locator.click()
        return Path(info.value.path()).read_bytes()

    def screenshot(self, name):
        """Save a full-page PNG of the current page as <screenshots>/<TestClass>/<name>.png; return its path."""
        global _announced
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        if not _announced:
            print(f"\nBrowser screenshots: {self.screenshots.parent}", file=sys.stderr)
            _announced = True
        return path

    def _screenshot_failure(self):
        try:
            path = self.screenshot(f"FAILED-{self._testMethodName}")
        except Exception as error:  # the browser may be what broke: keep the test's own error in front
            print(f"\nNo screenshot of the failure: {error}", file=sys.stderr)
        else:
            print(f"\nScreenshot of the failure: {path}", file=sys.stderr)


class AdminPages:
    """What a user does in Parseq's admin, for browser tests: an admin user, a worker, and forms to fill."""

    def setUp(self):
        super().setUp()
        get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        worker = in_process_worker()
        worker.__enter__()
        self.addCleanup(worker.__exit__, None, None, None)

    def upload_parser(self, name, source, **fields):
        """Fill the add form with a script file made from `source`, and press Save and continue editing."""
        self.visit("/admin/core/parser/add/")
        self.page.get_by_label("Name:", exact=True).fill(name)
        # By name: the form may also offer an editor for the script, and only the file input takes an upload.
        script = {"name": f"{name}.py", "mimeType": "text/x-python", "buffer": source.encode()}
        self.page.locator('input[type="file"][name="script"]').set_input_files(script)
        self.fill(**fields)
        self.save_and_continue()

    def fill(self, **fields):
        """Type into form fields by their names: the split date and time of a schedule have no labels of their own."""
        for field, value in fields.items():
            self.page.locator(f'[name="{field}"]').fill(value)

    def save_and_continue(self):
        # The page we leave may show the same message as the one we wait for: wait for the next page itself.
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Save and continue editing").click()

    def run_now_and_wait(self):
        """Press Run now on a parser's page, and return the status the run page shows once the run ends."""
        self.page.get_by_role("button", name="Run now").click()
        expect(self.page).to_have_url(RUN_PAGE)
        finished = self.page.locator('#live-run [data-status="completed"], #live-run [data-status="error"]')
        expect(finished).to_be_visible(timeout=RUN_TIMEOUT_MS)
        return finished.get_attribute("data-status")
