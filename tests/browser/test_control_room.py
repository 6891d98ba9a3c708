"""The control room in a real browser: a new user creates, runs, watches, cancels and diagnoses parsers."""

import base64
import io
import os
import time

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image
from playwright.sync_api import expect

from parseq.core.models import Parser, Run
from tests.browser.browser import RUN_PAGE, RUN_TIMEOUT_MS, AdminPages, BrowserTestCase
from tests.helpers import TemporaryMediaMixin, live_processes_with, wait_until


def tiny_png():
    picture = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(picture, format="PNG")
    return picture.getvalue()


PNG = tiny_png()
# Slow enough that the page is seen enqueued or running before it completes.
CHARTING = f"""
import base64
import time

def parse():
    print("fetching the rates")
    time.sleep(2)
    return {{"rates.csv": b"day,rate\\n1,91.5\\n", "chart.png": base64.b64decode({base64.b64encode(PNG)!r})}}
"""
FAILING = "def parse():\n    rows = []\n    return {'first.txt': rows[0]}\n"
# Prints a line every half second: the run page shows them while it runs.
TICKING = (
    "import time\n\ndef parse():\n    for n in range(1, 31):\n        print(f'tick {n}', flush=True)\n"
    "        time.sleep(0.5)\n    return {}\n"
)
HANGING = (
    "import time\n\ndef parse():\n    print('waiting for a site that never answers', flush=True)\n    time.sleep(600)\n"
)


class ControlRoomInBrowserTests(TemporaryMediaMixin, AdminPages, BrowserTestCase):
    def setUp(self):
        super().setUp()
        self.login("admin", "admin")

    def run_page_of_a_new_run(self):
        self.page.get_by_role("button", name="Run now").click()
        expect(self.page).to_have_url(RUN_PAGE)
        # A mark that only survives if the page is never reloaded.
        self.page.evaluate("window.parseqNotReloaded = true")
        return Run.objects.latest("created_time")

    def badge(self, status):
        return self.page.locator(f'#live-run [data-status="{status}"]')

    def test_a_running_runs_page_shows_its_lines_as_they_are_printed(self):
        # Given a parser whose script prints a line every half second
        self.upload_parser("ticker", TICKING)
        self.expect_text("was added successfully")

        # When the user runs it and stays on its page
        self.run_page_of_a_new_run()

        # Then the lines show up while it is still running, the log's end in view, without a reload
        expect(self.page.locator("#live-run")).to_contain_text("tick 3", timeout=RUN_TIMEOUT_MS)
        expect(self.badge("running")).to_be_visible()
        expect(self.page.locator("#live-run")).to_contain_text("tick 6")
        expect(self.badge("running")).to_be_visible()
        self.assertTrue(self.page.evaluate("window.parseqNotReloaded === true"), "the page was reloaded")
        self.screenshot("run-live-log")

    def test_a_user_creates_a_parser_runs_it_and_watches_it_complete_without_reloading(self):
        # Given a parser created by uploading a script
        self.upload_parser("rates", CHARTING)
        self.expect_text("was added successfully")

        # When the user presses Run now
        run = self.run_page_of_a_new_run()

        # Then the status turns from enqueued or running to completed on the page it is on
        expect(
            self.page.locator('#live-run [data-status="enqueued"], #live-run [data-status="running"]')
        ).to_be_visible()
        expect(self.badge("completed")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        self.assertTrue(self.page.evaluate("window.parseqNotReloaded === true"), "the page was reloaded")
        # And the finished page shows the log, the files with sizes, and the picture as a thumbnail
        self.expect_text("fetching the rates")
        self.expect_text("16 bytes")
        thumbnail = self.page.locator("img.parseq-thumbnail")
        expect(thumbnail).to_be_visible()
        wait_until(lambda: thumbnail.evaluate("image => image.naturalWidth") == 40, message="the thumbnail to load")
        self.expect_text("the parser's current script")
        self.screenshot("run-completed")
        # And a file downloads as it was made
        csv = self.download(self.page.get_by_role("link", name="rates.csv", exact=True))
        self.assertEqual(csv, b"day,rate\n1,91.5\n")
        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.COMPLETED)

        # And the parser's page shows the run and the success rate; the dashboard counts it
        self.page.get_by_role("link", name="rates", exact=True).click()
        self.expect_text("100% of the last 1 finished runs succeeded (1 of 1).")
        self.screenshot("parser-page")
        self.visit("/admin/")
        expect(self.page.locator("#live-dashboard")).to_contain_text("completed 1")
        self.screenshot("dashboard")

    def test_a_user_writes_a_failing_parser_as_text_and_reads_why_it_failed(self):
        # Given a parser written in the browser's script editor, with line numbers beside the code
        self.visit("/admin/core/parser/add/")
        self.page.get_by_label("Name:", exact=True).fill("listing")
        editor = self.page.locator("textarea.parseq-editor")
        editor.fill("def parse(:\n    return {}\n")
        expect(self.page.locator(".parseq-gutter")).to_have_text("1\n2\n3")
        self.save_and_continue()
        # A broken script is refused with its line
        self.expect_text("line 1")
        self.screenshot("script-refused")
        self.page.locator("textarea.parseq-editor").fill(FAILING)
        self.save_and_continue()
        self.expect_text("was added successfully")

        # When it runs and fails
        self.run_page_of_a_new_run()
        expect(self.badge("error")).to_be_visible(timeout=RUN_TIMEOUT_MS)

        # Then its run page says why, with the line, without a reload; and the dashboard names the parser
        self.expect_text("IndexError: list index out of range")
        self.expect_text("line 3, in parse")
        self.assertTrue(self.page.evaluate("window.parseqNotReloaded === true"), "the page was reloaded")
        self.screenshot("run-error")
        error_txt = self.download(self.page.get_by_role("link", name="error.txt", exact=True))
        self.assertIn("IndexError", error_txt.decode())
        self.visit("/admin/")
        expect(self.page.locator("#live-dashboard")).to_contain_text("listing")

    def test_a_user_cancels_a_run_that_hangs_and_its_sandbox_is_killed(self):
        # Given a parser whose run hangs (its file name marks its sandbox's processes)
        marker = f"hangs{os.getpid()}{time.monotonic_ns()}"
        self.upload_parser(marker, HANGING)
        self.expect_text("was added successfully")
        run = self.run_page_of_a_new_run()
        expect(self.badge("running")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        wait_until(lambda: live_processes_with(marker), message="the sandbox to start")
        self.expect_text("running for")
        self.screenshot("run-running")

        # When the user presses Cancel run
        self.page.get_by_role("button", name="Cancel run").click()

        # Then the run is cancelled, by them, and its sandbox is gone within 2 s
        expect(self.badge("cancelled")).to_be_visible()
        cancelled_at = timezone.now()
        wait_until(lambda: not live_processes_with(marker), timeout=2, message="the sandbox to be killed")
        self.expect_text("cancelled by admin")
        self.screenshot("run-cancelled")
        run.refresh_from_db()
        self.assertEqual((run.status, run.cancelled_by.username), (Run.Status.CANCELLED, "admin"))
        self.assertLess((cancelled_at - run.finished_time).total_seconds(), 2)
        # And what it printed before is kept, and shows up on the page as it arrives
        self.expect_text("waiting for a site that never answers")
        self.assertEqual(Parser.objects.get(name=marker).runs.count(), 1)

    def test_a_user_finds_a_failed_run_by_a_word_of_its_error_and_reads_a_completed_runs_results_on_its_page(self):
        # Given a failed run among others, and a completed one whose results are a table, JSON and text
        parser = Parser.objects.create(name="prices", script=ContentFile(b"def parse():\n    return {}\n", "p.py"))
        Run.objects.create(parser=parser, status=Run.Status.ERROR, error="Traceback ...\nKeyError: 'price'")
        long_error = "ProxyError: 403 Forbidden from the egress proxy: " + "the address is not allowed " * 8
        for _ in range(3):
            Run.objects.create(parser=parser, status=Run.Status.ERROR, error=long_error)
        done = Run.objects.create(parser=parser, status=Run.Status.COMPLETED)
        results = {
            "prices.csv": ("text/csv", b"item,price\ntea,3.20\ncoffee,4.10\n"),
            "prices.json": ("application/json", b'{"tea": 3.2, "coffee": 4.1}'),
            "notes.md": ("text/markdown", b"# Notes\n\nPrices in euros.\n"),
        }
        for name, (_, content) in results.items():
            default_storage.save(done.stored_path(name), ContentFile(content))
        entries = [{"name": n, "size": len(c), "content_type": t} for n, (t, c) in results.items()]
        Run.objects.filter(pk=done.pk).update(files=entries)

        # When the user opens the run list in a 1280 px window, its long errors and all fit
        self.visit("/admin/core/run/")
        results = self.page.locator("#changelist .results")
        self.assertLessEqual(*results.evaluate("box => [box.scrollWidth, box.clientWidth]"))
        self.screenshot("run-list-long-errors")
        # And searches it for a word of the error
        self.page.locator("#searchbar").fill("KeyError")
        self.page.locator("#searchbar").press("Enter")

        # Then only that run is listed, with its error's last line
        expect(self.page.locator("#result_list tbody tr")).to_have_count(1)
        expect(self.page.locator("#result_list")).to_contain_text("KeyError: 'price'")
        self.screenshot("run-list-search")

        # And the completed run's page shows its results readably
        self.visit(f"/admin/core/run/{done.run_id}/change/")
        expect(self.page.locator(".parseq-preview-table th").first).to_have_text("item")
        expect(self.page.locator(".parseq-preview-table")).to_contain_text("coffee")
        expect(self.page.locator(".parseq-preview-text").first).to_contain_text('"tea": 3.2')
        expect(self.page.locator(".parseq-preview-text").nth(1)).to_contain_text("Prices in euros.")
        self.screenshot("run-previews")

    def test_the_run_list_follows_its_runs_in_place_and_keeps_what_the_user_ticked(self):
        # Given two running runs in the run list, one of them ticked for an action
        parser = Parser.objects.create(name="listed", script=ContentFile(b"def parse():\n    return {}\n", "l.py"))
        first, second = (Run.objects.create(parser=parser, status=Run.Status.RUNNING) for _ in range(2))
        self.visit("/admin/core/run/")
        self.page.evaluate("window.parseqNotReloaded = true")
        self.page.locator(f'input.action-select[value="{first.run_id}"]').check()
        expect(self.page.locator(".action-counter")).to_contain_text("1 of 2 selected")

        # When one of them completes
        Run.objects.filter(pk=second.pk).update(status=Run.Status.COMPLETED, updated_time=timezone.now())

        # Then its badge turns, on the same page, and the selection and the admin's own script still work
        expect(self.page.locator(f'[data-run-id="{second.run_id}"]')).to_have_attribute("data-status", "completed")
        self.assertTrue(self.page.evaluate("window.parseqNotReloaded === true"), "the page was reloaded")
        expect(self.page.locator(f'input.action-select[value="{first.run_id}"]')).to_be_checked()
        self.page.locator(f'input.action-select[value="{second.run_id}"]').check()
        expect(self.page.locator(".action-counter")).to_contain_text("2 of 2 selected")
        self.screenshot("run-list")

        # And a new run shows up once nothing is ticked
        self.page.locator("#action-toggle").uncheck()
        third = Run.objects.create(parser=parser)
        expect(self.page.locator(f'[data-run-id="{third.run_id}"]')).to_be_visible()
