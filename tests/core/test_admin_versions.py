"""The admin's script versions (list, source, diff, Restore), "Run with…", Run now, and a refused upload kept."""

import re
import time

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from parseq.core import services
from parseq.core.environment import MASK
from parseq.core.models import AuditEntry, Parser, Run
from tests.api.helpers import FAST_PASSWORDS, user_in
from tests.core.test_admin import AdminTestCase
from tests.helpers import script

FORM = {
    "name": "weather",
    "description": "Forecast",
    "timeout": "300",
    "max_attempts": "2",
    "network": "internet",
    "overlap": "skip",
    "webhook_on": "error",
}


def source(city):
    return f"import requests\n\ndef parse():\n    city = '{city}'\n    return {{'city.txt': city.encode()}}\n"


@FAST_PASSWORDS
class ScriptVersionPagesTests(AdminTestCase):
    def edit(self, parser, **fields):
        response = self.client.post(reverse("admin:core_parser_change", args=[parser.pk]), {**FORM, **fields})
        self.assertEqual(response.status_code, 302, response.content[:3000])

    def three_versions(self):
        self.assertEqual(self.add_parser(script(source("Oslo")), script_message="first").status_code, 302)
        parser = Parser.objects.get()
        self.edit(parser, script=SimpleUploadedFile("weather.py", script(source("Bergen"))))
        self.edit(parser, script_text=source("Tromsø"), script_message="further north")
        return parser

    def test_uploads_and_edits_in_the_editor_each_append_a_version_with_its_message(self):
        parser = self.three_versions()
        self.edit(parser, script_text=source("Tromsø"))  # the same text again

        versions = parser.script_versions.order_by("number")
        self.assertEqual(
            [(v.number, v.message, v.author_name) for v in versions],
            [(1, "first", "admin"), (2, "", "admin"), (3, "further north", "admin")],
        )
        page = self.client.get(reverse("admin:core_parser_change", args=[parser.pk])).content.decode()
        self.assertIn("further north", page)
        self.assertIn(f'href="/admin/core/parser/{parser.pk}/versions/?a=2&amp;b=3"', page)

    def test_the_diff_of_versions_one_and_three_shows_the_lines_that_changed(self):
        parser = self.three_versions()

        page = self.client.get(reverse("admin:core_parser_versions", args=[parser.pk]), {"a": 1, "b": 3})

        diff = re.search(r'<table class="parseq-diff".*?</table>', page.content.decode(), re.S).group(0)
        self.assertIn("Version 1 → version 3", page.content.decode())
        removed = re.findall(r'parseq-diff-removed">.*?parseq-diff-text">(.*?)</td>', diff, re.S)
        added = re.findall(r'parseq-diff-added">.*?parseq-diff-text">(.*?)</td>', diff, re.S)
        self.assertEqual(removed, ["    city = &#x27;Oslo&#x27;"])
        self.assertEqual(added, ["    city = &#x27;Tromsø&#x27;"])

    def test_comparing_two_large_scripts_of_many_equal_lines_takes_no_time(self):
        # Found by an attacker: a matcher without its junk heuristic took 150 s on this page.
        many = "import requests\n\ndef parse():\n    return {}\n" + "x = 1\n" * 40_000
        self.assertEqual(self.add_parser(script(many)).status_code, 302)
        parser = Parser.objects.get()
        self.edit(parser, script_text=many + "y = 2\n")
        started = time.monotonic()

        page = self.client.get(reverse("admin:core_parser_versions", args=[parser.pk]))

        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(
            re.findall(r'parseq-diff-added">.*?parseq-diff-text">(.*?)</td>', page.content.decode(), re.S), ["y = 2"]
        )

    def test_a_diff_of_versions_that_do_not_exist_says_so(self):
        parser = self.three_versions()

        for query, problem in ({"a": 1, "b": 9}, "There is no version 9."), ({"a": "x"}, "Give version numbers"):
            with self.subTest(query=query):
                page = self.client.get(reverse("admin:core_parser_versions", args=[parser.pk]), query)
                self.assertContains(page, problem)

    def test_restoring_version_one_makes_version_four_which_the_next_run_records(self):
        parser = self.three_versions()

        response = self.client.post(reverse("admin:core_parser_restore_version", args=[parser.pk, 1]))

        self.assertEqual(response.status_code, 302)
        parser.refresh_from_db()
        latest = parser.script_versions.first()
        self.assertEqual((latest.number, latest.message, latest.source), (4, "restored version 1", source("Oslo")))
        with parser.script.open("rb") as stored:
            self.assertEqual(stored.read().decode(), source("Oslo"))
        run = Run.objects.create(parser=parser, status=Run.Status.RUNNING, attempt=1)
        Run.objects.note_what_ran(run_id=run.pk, attempt=1, script_sha256=latest.sha256, parser_settings={})
        run.refresh_from_db()
        self.assertEqual(run.script_version.number, 4)
        page = self.client.get(reverse("admin:core_run_change", args=[run.pk]))
        self.assertContains(page, f'<a href="/admin/core/parser/{parser.pk}/versions/4/" id="run-script-version">')

    def test_a_version_page_shows_its_source_and_restoring_by_get_changes_nothing(self):
        parser = self.three_versions()

        page = self.client.get(reverse("admin:core_parser_version", args=[parser.pk, 2]))
        by_get = self.client.get(reverse("admin:core_parser_restore_version", args=[parser.pk, 2]))

        self.assertContains(page, "city = &#x27;Bergen&#x27;")
        self.assertContains(page, 'id="restore-version"')
        self.assertEqual(by_get.status_code, 302)
        self.assertEqual(parser.script_versions.count(), 3)

    def test_a_version_that_breaks_todays_rules_is_not_restored_and_the_page_says_why(self):
        unrestricted = script("def parse():\n    return {'a.txt': str(().__class__).encode()}\n")
        self.assertEqual(self.add_parser(unrestricted, restricted="").status_code, 302)
        parser = Parser.objects.get()
        self.edit(parser, script_text=source("Oslo"), restricted="on")

        response = self.client.post(reverse("admin:core_parser_restore_version", args=[parser.pk, 1]), follow=True)

        self.assertContains(response, "Version 1 cannot be restored as it is")
        self.assertEqual(parser.script_versions.count(), 2)

    def test_readers_see_when_who_and_why_but_no_source_diff_or_restore(self):
        parser = self.three_versions()
        viewer = user_in("Viewers", "viewer", is_staff=True)
        self.client.force_login(viewer)

        page = self.client.get(reverse("admin:core_parser_change", args=[parser.pk])).content.decode()

        self.assertIn("further north", page)
        self.assertNotIn("/versions/", page)
        for url in (
            reverse("admin:core_parser_versions", args=[parser.pk]),
            reverse("admin:core_parser_version", args=[parser.pk, 1]),
        ):
            self.assertEqual(self.client.get(url).status_code, 403)
        self.assertEqual(
            self.client.post(reverse("admin:core_parser_restore_version", args=[parser.pk, 1])).status_code, 403
        )
        self.assertEqual(parser.script_versions.count(), 3)

    def test_deleting_a_parser_deletes_its_versions_even_those_its_runs_ran(self):
        parser = self.three_versions()
        Run.objects.create(parser=parser, script_version=parser.script_versions.first())

        response = self.client.post(reverse("admin:core_parser_delete", args=[parser.pk]), {"post": "yes"})

        self.assertEqual(response.status_code, 302)
        self.assertFalse(Parser.objects.exists())
        self.assertEqual(parser.script_versions.model.objects.count(), 0)


@FAST_PASSWORDS
class RunWithTests(AdminTestCase):
    def setUp(self):
        super().setUp()
        self.add_parser(script(source("Oslo")))
        self.parser = Parser.objects.get()
        self.parser.environment = {"CITY": "Bergen", "API_KEY": "k-secret-1"}
        self.parser.save()
        self.run_url = reverse("admin:core_parser_run", args=[self.parser.pk])

    def test_run_now_is_a_prominent_button_outside_the_parsers_form_and_run_with_beside_it(self):
        page = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk])).content.decode()

        bar = page.index('class="parseq-run-bar"')
        self.assertLess(bar, page.index('id="parser_form"'))
        self.assertIn('class="parseq-primary" id="run-now"', page)
        self.assertIn('<details id="run-with">', page)

    def test_run_with_gives_this_run_variables_and_a_timeout_shown_masked_on_its_page(self):
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                self.run_url, {"environment_text": "CITY=Trondheim-city\nDEPTH=2", "timeout": "45"}
            )

        run = Run.objects.get()
        self.assertRedirects(response, reverse("admin:core_run_change", args=[run.pk]), fetch_redirect_response=False)
        self.assertEqual(run.parameters, {"environment": {"CITY": "Trondheim-city", "DEPTH": "2"}, "timeout": 45})
        self.assertEqual(run.variables, {"CITY": "Trondheim-city", "API_KEY": "k-secret-1", "DEPTH": "2"})
        self.assertEqual(Parser.objects.get().environment, {"CITY": "Bergen", "API_KEY": "k-secret-1"})
        page = self.client.get(reverse("admin:core_run_change", args=[run.pk])).content.decode()
        self.assertNotIn("Trondheim-city", page)
        self.assertIn(f"<th>CITY</th><td>{MASK}</td>", page)
        self.assertIn("<th>timeout</th><td>45 s</td>", page)
        self.assertEqual(AuditEntry.objects.filter(action="ran").count(), 1)

    def test_bad_parameters_run_nothing_and_say_why(self):
        for form, reason in (
            ({"environment_text": "PATH=/tmp"}, "PATH is set by the sandbox"),
            ({"environment_text": "no equals sign"}, "expected NAME=value"),
            ({"timeout": "0"}, "between 1 and"),
            ({"timeout": "ten"}, "whole number of seconds"),
            ({"timeout": "99999999"}, "between 1 and"),
        ):
            with self.subTest(form=form):
                response = self.client.post(self.run_url, form, follow=True)
                self.assertContains(response, "Not run:")
                self.assertContains(response, reason)
        self.assertFalse(Run.objects.exists())

    def test_an_operator_runs_with_a_timeout_but_gives_no_variables(self):
        self.client.force_login(user_in("Operators", "operator", is_staff=True))

        page = self.client.get(reverse("admin:core_parser_change", args=[self.parser.pk])).content.decode()
        refused = self.client.post(self.run_url, {"environment_text": "API_URL=https://attacker.example/"}, follow=True)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(self.run_url, {"environment_text": "", "timeout": "30"})

        self.assertIn('id="run-with-timeout"', page)
        self.assertNotIn('id="run-with-environment"', page)
        self.assertContains(refused, "giving a run variables needs the permission to change its parser")
        self.assertEqual(Run.objects.get().parameters, {"timeout": 30})

    def test_a_timeout_of_thousands_of_digits_is_refused_not_a_server_error(self):
        response = self.client.post(self.run_url, {"timeout": "9" * 5000}, follow=True)

        self.assertContains(response, "Not run: timeout: the timeout must be a whole number of seconds")
        self.assertFalse(Run.objects.exists())

    def test_no_one_finds_a_runs_variable_by_filtering_the_run_list_on_it(self):
        Run.objects.create(parser=self.parser, parameters={"environment": {"TOKEN": "hunter2-secret"}})

        for lookup in ("parameters__environment__TOKEN__startswith", "parameters__icontains", "parameters"):
            with self.subTest(lookup=lookup):
                response = self.client.get(reverse("admin:core_run_changelist"), {lookup: "hunter"})
                self.assertEqual(response.status_code, 400)

    def test_run_with_needs_the_run_permission(self):
        self.client.force_login(user_in("Viewers", "viewer", is_staff=True))

        response = self.client.post(self.run_url, {"environment_text": "CITY=x"})

        self.assertEqual(response.status_code, 403)
        self.assertFalse(Run.objects.exists())


class RefusedUploadTests(AdminTestCase):
    def test_a_refused_upload_comes_back_in_the_editor_to_be_fixed(self):
        broken = "import requests\n\ndef parse(:\n    return {}\n"

        response = self.add_parser(broken.encode())

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "syntax error")
        self.assertContains(response, "weather.py is here as it was refused")
        editor = re.search(r'<textarea name="script_text"[^>]*>(.*?)</textarea>', response.content.decode(), re.S)
        self.assertEqual(editor.group(1).strip(), "import requests\n\ndef parse(:\n    return {}")
        fixed = self.client.post(
            reverse("admin:core_parser_add"), {**FORM, "script_text": broken.replace("parse(:", "parse():")}
        )
        self.assertEqual(fixed.status_code, 302)
        self.assertEqual(Parser.objects.get().script_versions.get().source, broken.replace("parse(:", "parse():"))

    def test_an_upload_that_is_not_text_is_refused_without_filling_the_editor(self):
        response = self.add_parser(b"\xff\xfe binary")

        self.assertContains(response, "not valid UTF-8")
        self.assertNotContains(response, "is here as it was refused")


class SavedWithoutTheAdminTests(AdminTestCase):
    def test_the_demo_loader_appends_version_one_unsigned(self):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "news.py").write_text(source("Oslo"))
            services.load_demo_parsers(directory=directory)

        version = Parser.objects.get(name="news").script_versions.get()
        self.assertEqual((version.number, version.author_name, version.filename), (1, "", "news.py"))
        self.assertIsNone(get_user_model().objects.filter(pk=version.author_id).first())
