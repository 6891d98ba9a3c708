"""Script versions and "Run with…" in a real browser: edit, compare, restore, and run once with a variable."""

from playwright.sync_api import expect

from parseq.core.models import Parser, Run
from tests.browser.browser import RUN_PAGE, RUN_TIMEOUT_MS, AdminPages, BrowserTestCase
from tests.helpers import TemporaryMediaMixin


def weather(default_city):
    return (
        "import os\n\ndef parse():\n"
        f"    city = os.environ.get('CITY', '{default_city}')\n"
        "    return {'city.txt': city.encode()}\n"
    )


class ScriptVersionsInBrowserTests(TemporaryMediaMixin, AdminPages, BrowserTestCase):
    def setUp(self):
        super().setUp()
        self.login("admin", "admin")

    def edit_script(self, source, message):
        self.page.locator('textarea[name="script_text"]').fill(source)
        self.fill(script_message=message)
        self.save_and_continue()

    def test_a_user_compares_two_versions_restores_the_first_and_runs_it_once_with_a_variable(self):
        # Given a parser whose script was changed twice in the editor
        self.upload_parser("weather", weather("Oslo"))
        self.edit_script(weather("Bergen"), "west coast")
        self.edit_script(weather("Tromsø"), "further north")
        parser = Parser.objects.get()
        expect(self.page.locator(".parseq-versions")).to_contain_text("further north")

        # When they compare version 1 with version 3
        self.page.get_by_role("link", name="All versions; compare any two").click()
        self.page.locator('select[name="a"]').select_option("1")
        self.page.locator('select[name="b"]').select_option("3")
        self.page.get_by_role("button", name="Compare").click()

        # Then the changed line shows removed in red and added in green
        removed = self.page.locator("#script-diff .parseq-diff-removed .parseq-diff-text")
        added = self.page.locator("#script-diff .parseq-diff-added .parseq-diff-text")
        expect(removed).to_have_text("    city = os.environ.get('CITY', 'Oslo')")
        expect(added).to_have_text("    city = os.environ.get('CITY', 'Tromsø')")
        self.assertEqual(added.evaluate("cell => getComputedStyle(cell).backgroundColor"), "rgb(204, 255, 216)")
        self.assertEqual(removed.evaluate("cell => getComputedStyle(cell).backgroundColor"), "rgb(255, 215, 213)")
        self.screenshot("script-diff")

        # When they restore version 1
        self.page.get_by_role("link", name="1", exact=True).first.click()
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Restore this version").click()

        # Then it is version 4, and the parser page lists it
        self.expect_text("Version 1 restored as version 4.")
        expect(self.page.locator(".parseq-versions tbody tr").first).to_contain_text("restored version 1")

        # When they run it with CITY=Stavanger through "Run with…"
        self.page.locator("#run-with summary").click()
        self.page.locator("#run-with-environment").fill("CITY=Stavanger")
        self.screenshot("parser-run-with")
        self.page.get_by_role("button", name="Run with these").click()
        expect(self.page).to_have_url(RUN_PAGE)
        expect(self.page.locator('#live-run [data-status="completed"]')).to_be_visible(timeout=RUN_TIMEOUT_MS)

        # Then the run wrote Stavanger, ran version 4 and shows the variable masked
        run = Run.objects.get()
        with run.parser.script.storage.open(run.stored_path("city.txt")) as file:
            self.assertEqual(file.read(), b"Stavanger")
        expect(self.page.locator("#run-script-version")).to_have_text("version 4")
        self.expect_text("CITY")
        self.assertNotIn("Stavanger", self.page.locator(".field-parameters_display").inner_text())
        self.assertEqual(Parser.objects.get().environment, {})
        self.assertEqual(parser.script_versions.count(), 4)
