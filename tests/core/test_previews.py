"""Result files read on the run page: tables, pretty JSON and text, from a bounded prefix, never run."""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import SimpleTestCase
from django.urls import reverse

from parseq.core.models import Run
from parseq.core.previews import PREVIEW_BYTES, PREVIEW_ROWS, preview
from tests.core.test_control_room import ControlRoomTestCase


class PreviewTests(SimpleTestCase):
    def test_a_csv_with_a_header_is_a_table_of_its_rows(self):
        shown = preview(name="rates.csv", content_type="text/csv", prefix=b"day,rate\n1,91.5\n2,92.0\n")

        self.assertEqual(
            (shown.kind, shown.header, shown.rows), ("table", ["day", "rate"], [["1", "91.5"], ["2", "92.0"]])
        )
        self.assertFalse(shown.partial)

    def test_a_tsv_without_a_header_shows_every_row_as_data(self):
        shown = preview(name="a.tsv", content_type="text/tab-separated-values", prefix=b"1\t2\n3\t4\n5\t6\n")

        self.assertEqual((shown.header, shown.rows), ([], [["1", "2"], ["3", "4"], ["5", "6"]]))

    def test_a_long_table_shows_its_first_hundred_rows_and_says_so(self):
        text = "n,square\n" + "".join(f"{n},{n * n}\n" for n in range(1000))

        shown = preview(name="squares.csv", content_type="text/csv", prefix=text.encode())

        self.assertEqual(len(shown.rows), PREVIEW_ROWS)
        self.assertEqual(shown.rows[-1], [str(PREVIEW_ROWS - 1), str((PREVIEW_ROWS - 1) ** 2)])
        self.assertTrue(shown.partial)

    def test_json_is_pretty_printed(self):
        shown = preview(name="a.json", content_type="application/json", prefix=b'{"rates": [1, 2], "ok": true}')

        self.assertEqual(shown.kind, "json")
        self.assertEqual(shown.text, '{\n  "rates": [\n    1,\n    2\n  ],\n  "ok": true\n}')

    def test_a_json_file_that_is_not_json_or_too_large_to_parse_is_shown_as_its_beginning(self):
        broken = preview(name="a.json", content_type="application/json", prefix=b'{"cut": ')
        large = preview(name="b.json", content_type="application/json", prefix=b"[" + b"1," * PREVIEW_BYTES)

        self.assertEqual((broken.kind, broken.text), ("text", '{"cut": '))
        self.assertEqual((large.kind, len(large.text), large.partial), ("text", PREVIEW_BYTES, True))

    def test_a_csv_that_is_no_table_or_json_nested_too_deep_is_shown_as_text_not_an_error(self):
        # Both made the run page a 500 (found by an attacker)
        carriage = preview(name="a.csv", content_type="text/csv", prefix=b"name,price\na\rb,1\n")
        deep = preview(name="a.json", content_type="application/json", prefix=b"[" * 20000 + b"]" * 20000)

        self.assertEqual(carriage.kind, "table")  # read as a table: a carriage return inside a field is data
        self.assertEqual(deep.kind, "text")

    def test_text_and_markdown_are_shown_as_text_and_invalid_utf8_does_not_break_the_page(self):
        shown = preview(name="notes.md", content_type="text/markdown", prefix=b"# Rates\n\xff up\n")

        self.assertEqual((shown.kind, shown.text), ("text", "# Rates\n\ufffd up\n"))


class RunPagePreviewTests(ControlRoomTestCase):
    def completed_run_with(self, **files):
        entries = []
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        for name, (content_type, content) in files.items():
            default_storage.save(run.stored_path(name), ContentFile(content))
            entries.append({"name": name, "size": len(content), "content_type": content_type})
        Run.objects.filter(pk=run.pk).update(files=entries)
        return run

    def test_csv_json_and_text_results_are_readable_on_the_run_page_and_nothing_in_them_runs(self):
        run = self.completed_run_with(
            **{
                "rates.csv": ("text/csv", b"day,rate\n1,<script>alert(1)</script>\n"),
                "rates.json": ("application/json", b'{"day": 1}'),
                "notes.txt": ("text/plain", b"<b>not bold</b>\n"),
                "blob.bin": ("application/octet-stream", b"\x00\x01"),
            }
        )

        page = self.client.get(reverse("admin:core_run_change", args=[run.run_id])).content.decode()

        self.assertIn("<th>day</th><th>rate</th>", page)
        self.assertIn("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>", page)
        self.assertIn("{\n  &quot;day&quot;: 1\n}", page)
        self.assertIn("&lt;b&gt;not bold&lt;/b&gt;", page)
        self.assertNotIn("<script>alert(1)", page)
        self.assertEqual(page.count('class="parseq-preview"'), 3)  # the binary file has none

    def test_a_file_missing_from_storage_leaves_the_page_working_without_its_preview(self):
        run = Run.objects.create(
            parser=self.parser,
            status=Run.Status.COMPLETED,
            files=[{"name": "gone.csv", "size": 3, "content_type": "text/csv"}],
        )

        with self.assertLogs("parseq.core.previews", "WARNING"):
            response = self.client.get(reverse("admin:core_run_change", args=[run.run_id]))

        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, 'class="parseq-preview"')
