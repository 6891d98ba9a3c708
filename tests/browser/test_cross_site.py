"""A page on another origin cannot make a signed-in browser create or run parsers (README: Permissions).

Parseq is served at http://localhost:<port>; the attacker's page is served by a server of the test's
own at http://127.0.0.1:<other> (another site) and http://localhost:<other> (the same site, another
origin). The page submits a form to Parseq as soon as it loads, as a hostile page would.
"""

import base64
import http.server
import socketserver
import threading

from playwright.sync_api import expect

from parseq.core.models import Parser, Run
from tests.api.helpers import VALID, user_in
from tests.browser.browser import BrowserTestCase
from tests.helpers import TemporaryMediaMixin, make_parser

ATTACK = """<!doctype html>
<title>cute cats</title>
<form method="post" action="{action}" enctype="multipart/form-data">
  <input name="name" value="planted">
  <textarea name="script_text">{script}</textarea>
  <input name="restricted" value="false">
</form>
<script>document.forms[0].submit()</script>
"""


class AttackerSite:
    """Serves one page, at both http://127.0.0.1:<port>/ and http://localhost:<port>/."""

    def __init__(self, page):
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class CrossSiteWriteTests(TemporaryMediaMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        self.editor = user_in("Editors", "editor", is_staff=True)
        self.parser = make_parser("def parse():\n    return {}\n", name="weather")

    def attack(self, *, action, origin_host, context=None):
        """Open the attacker's page (on `origin_host`) in `context`; return the status of what Parseq answered."""
        site = AttackerSite(ATTACK.format(action=self.live_server_url + action, script=VALID.decode()))
        self.addCleanup(site.close)
        page = (context or self.context).new_page()
        with page.expect_response(lambda response: response.url == self.live_server_url + action) as answer:
            page.goto(f"http://{origin_host}:{site.port}/")
        return answer.value.status

    def assert_nothing_created_nor_run(self):
        self.assertEqual(list(Parser.objects.values_list("name", flat=True)), ["weather"])
        self.assertFalse(Run.objects.exists())

    def test_a_browser_that_attaches_basic_credentials_cannot_create_or_run_from_another_site(self):
        # Given a browser that sends an Editor's Basic credentials with every request, as one that cached them
        credentials = base64.b64encode(b"editor:editor-pass").decode()
        context = self.browser.new_context(extra_http_headers={"Authorization": f"Basic {credentials}"})
        self.addCleanup(context.close)
        check = context.new_page()
        check.goto(self.live_server_url + "/api/parsers/")
        expect(check.locator("body")).to_contain_text("weather")  # the credentials work

        # When pages on another site and on another origin of the same site submit forms to Parseq
        statuses = [
            self.attack(action="/api/parsers/", origin_host="127.0.0.1", context=context),
            self.attack(action=f"/api/parsers/{self.parser.pk}/run/", origin_host="127.0.0.1", context=context),
            self.attack(action="/api/parsers/", origin_host="localhost", context=context),
            self.attack(action=f"/api/parsers/{self.parser.pk}/run/", origin_host="localhost", context=context),
        ]

        # Then every one is refused, and nothing was created or run
        self.assertEqual(statuses, [403, 403, 403, 403])
        self.assert_nothing_created_nor_run()

    def test_a_signed_in_admin_session_cannot_create_or_run_from_another_origin(self):
        # Given an Editor signed in to the admin
        self.login("editor", "editor-pass")

        # When a page on another origin submits forms to Parseq
        statuses = [
            self.attack(action="/api/parsers/", origin_host="localhost"),
            self.attack(action=f"/api/parsers/{self.parser.pk}/run/", origin_host="localhost"),
            self.attack(action="/api/parsers/", origin_host="127.0.0.1"),
            self.attack(action=f"/admin/core/parser/{self.parser.pk}/run/", origin_host="localhost"),
        ]

        # Then nothing is created or run
        self.assertEqual(statuses, [403, 403, 403, 403])
        self.assert_nothing_created_nor_run()

    def test_the_admins_own_pages_still_run_a_parser(self):
        self.login("editor", "editor-pass")
        self.visit(f"/admin/core/parser/{self.parser.pk}/change/")

        self.page.get_by_role("button", name="Run now").click()

        self.expect_text("enqueued")
        self.assertEqual(Run.objects.count(), 1)
