"""/api/runs/: pages and filters, a run's details, and its files, zip and log."""

import io
import tracemalloc
import zipfile
from datetime import timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings
from django.utils import timezone
from django.utils.text import slugify
from rest_framework.test import APITestCase

from parseq.core.models import Run
from tests.api.helpers import FAST_PASSWORDS, basic, completed_run, make_users
from tests.helpers import TemporaryMediaMixin, make_parser

LIST = "/api/runs/"
DATA = bytes(range(256)) * 40  # 10240 bytes


@FAST_PASSWORDS
class RunApiTestCase(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.client.force_authenticate(self.viewer)
        self.parser = make_parser("def parse():\n    return {}\n", name="rates")
        self.other = make_parser("def parse():\n    return {}\n", name="weather", filename="weather.py")


class CancelTests(RunApiTestCase):
    def test_an_editor_cancels_a_queued_run_and_it_says_who_did(self):
        run = Run.objects.create(parser=self.parser)
        self.client.force_authenticate(self.editor)

        response = self.client.post(f"{LIST}{run.run_id}/cancel/")

        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(
            (body["status"], body["cancelled_by"], body["error"]), ("cancelled", "editor", "cancelled by editor")
        )
        self.assertIsNotNone(body["finished_time"])

    def test_a_run_that_has_ended_is_409_and_stays_as_it_was(self):
        run = Run.objects.create(parser=self.parser, status="completed")
        self.client.force_authenticate(self.editor)

        response = self.client.post(f"{LIST}{run.run_id}/cancel/")

        self.assertEqual(response.status_code, 409)
        self.assertEqual(
            response.json(), {"detail": "The run has already ended: it is completed.", "code": "run_ended"}
        )
        run.refresh_from_db()
        self.assertEqual(run.status, "completed")

    def test_viewers_cannot_cancel_and_anonymous_users_must_sign_in(self):
        run = Run.objects.create(parser=self.parser)

        self.assertEqual(self.client.post(f"{LIST}{run.run_id}/cancel/").status_code, 403)
        self.client.force_authenticate(None)
        self.assertEqual(self.client.post(f"{LIST}{run.run_id}/cancel/").status_code, 401)
        run.refresh_from_db()
        self.assertEqual(run.status, "enqueued")


class ListTests(RunApiTestCase):
    def test_runs_come_newest_first_in_pages(self):
        runs = [Run.objects.create(parser=self.parser) for _ in range(3)]

        first = self.client.get(LIST, {"page_size": 2}).json()
        second = self.client.get(first["next"]).json()

        self.assertEqual(first["count"], 3)
        ids = [r["run_id"] for r in first["results"] + second["results"]]
        self.assertEqual(ids, [str(run.run_id) for run in reversed(runs)])

    def test_filters_by_parser_status_trigger_and_creation_time(self):
        old = Run.objects.create(parser=self.parser, status="completed", trigger="schedule")
        Run.objects.filter(pk=old.pk).update(created_time=timezone.now() - timedelta(days=2))
        failed = Run.objects.create(parser=self.parser, status="error", trigger="api")
        other = Run.objects.create(parser=self.other, status="completed", trigger="manual")
        yesterday = (timezone.now() - timedelta(days=1)).isoformat()

        def ids(**query):
            return {r["run_id"] for r in self.client.get(LIST, query).json()["results"]}

        self.assertEqual(ids(parser=self.other.pk), {str(other.run_id)})
        self.assertEqual(ids(status="error"), {str(failed.run_id)})
        self.assertEqual(ids(trigger="schedule"), {str(old.run_id)})
        self.assertEqual(ids(created_after=yesterday), {str(failed.run_id), str(other.run_id)})
        self.assertEqual(ids(created_before=yesterday), {str(old.run_id)})
        self.assertEqual(ids(parser=999), set())
        oldest_first = self.client.get(LIST, {"ordering": "created_time"}).json()["results"]
        self.assertEqual(oldest_first[0]["run_id"], str(old.run_id))

    def test_bad_filters_are_400_naming_each(self):
        response = self.client.get(
            LIST, {"status": "bogus", "ordering": "password", "created_after": "yesterday", "page_size": "x"}
        )

        self.assertEqual(response.status_code, 400)
        self.assertEqual(set(response.json()["errors"]), {"status", "ordering", "created_after"})
        self.assertEqual(
            self.client.get(LIST, {"page_size": "x"}).json()["errors"]["page_size"][0][:12], "A whole numb"
        )
        self.assertEqual(self.client.get(LIST, {"parser": str(2**70)}).status_code, 400)

    def test_any_iso_8601_offset_filters_and_a_moment_before_the_year_1_in_utc_is_400(self):
        # PostgreSQL itself refuses offsets past 15:59, which ISO 8601 allows (found by the fuzzer).
        far_offset = self.client.get(LIST, {"created_after": "0655-06-22T20:37:56-17:52"})
        too_early = self.client.get(LIST, {"created_before": "0001-01-01T00:00:00+05:00"})

        self.assertEqual(far_offset.status_code, 200)
        self.assertEqual(too_early.status_code, 400)
        self.assertIn("years 1 to 9999", too_early.json()["errors"]["created_before"][0])

    def test_anonymous_users_cannot_list_runs(self):
        self.client.force_authenticate(None)

        self.assertEqual(self.client.get(LIST).status_code, 401)


class DetailTests(RunApiTestCase):
    def test_a_completed_run_shows_its_times_duration_and_files_with_their_links(self):
        run = completed_run(self.parser, {"report.txt": b"hello"})
        Run.objects.filter(pk=run.pk).update(started_time=run.finished_time - timedelta(seconds=1.5))

        body = self.client.get(f"{LIST}{run.run_id}/").json()

        self.assertEqual((body["status"], body["parser"], body["parser_name"]), ("completed", self.parser.pk, "rates"))
        self.assertEqual(body["duration"], 1.5)
        self.assertEqual(
            body["files"],
            [
                {
                    "name": "report.txt",
                    "size": 5,
                    "content_type": "application/octet-stream",
                    "url": f"http://testserver/api/runs/{run.run_id}/files/report.txt",
                    "download_url": f"http://testserver/{run.run_id}/report.txt",
                }
            ],
        )
        self.assertEqual(body["archive_url"], f"http://testserver/api/runs/{run.run_id}/archive.zip")
        self.assertEqual(body["log_url"], f"http://testserver/api/runs/{run.run_id}/log")
        self.assertIsNone(body["error_url"])

    def test_a_failed_run_shows_its_error_and_where_error_txt_is(self):
        run = Run.objects.create(parser=self.parser, status="error", error="ValueError: boom")

        body = self.client.get(f"{LIST}{run.run_id}/").json()

        self.assertEqual((body["error"], body["files"]), ("ValueError: boom", []))
        self.assertEqual(body["error_url"], f"http://testserver/{run.run_id}/error.txt")

    def test_the_log_is_plain_text_that_no_browser_runs(self):
        run = Run.objects.create(parser=self.parser, status="completed", log="<script>alert(1)</script>\n")

        response = self.client.get(f"{LIST}{run.run_id}/log")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "text/plain; charset=utf-8")
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response.content, b"<script>alert(1)</script>\n")

    def test_the_log_from_an_offset_sends_the_bytes_after_it_and_the_whole_size_so_a_client_can_follow(self):
        run = Run.objects.create(parser=self.parser, status="running", log="first line\nsecond ü line\n")
        size = len("first line\nsecond ü line\n".encode())

        whole = self.client.get(f"{LIST}{run.run_id}/log")
        rest = self.client.get(f"{LIST}{run.run_id}/log?offset=11")
        beyond = self.client.get(f"{LIST}{run.run_id}/log?offset=1000")

        self.assertEqual((whole.content, whole["X-Log-Size"]), ("first line\nsecond ü line\n".encode(), str(size)))
        self.assertEqual((rest.content, rest["X-Log-Size"]), ("second ü line\n".encode(), str(size)))
        self.assertEqual((beyond.status_code, beyond.content, beyond["X-Log-Size"]), (200, b"", str(size)))
        self.assertEqual(whole["Cache-Control"], "no-store")

    def test_an_offset_that_is_not_a_number_of_bytes_is_a_400_naming_it(self):
        run = Run.objects.create(parser=self.parser, status="running", log="a\n")

        for offset in ("-1", "x", "1.5", "", "²", "\u0661", "1" * 5000):  # "²".isdigit() is true (found by an attacker)
            with self.subTest(offset=offset):
                response = self.client.get(f"{LIST}{run.run_id}/log?offset={offset}", HTTP_ACCEPT="application/json")

                self.assertEqual(response.status_code, 400)
                self.assertIn("offset", response.json()["errors"])

    def test_a_run_shows_the_script_hash_and_settings_it_went_by(self):
        run = Run.objects.create(
            parser=self.parser, status="completed", script_sha256="ab" * 32, parser_settings={"timeout": 5}
        )

        body = self.client.get(f"{LIST}{run.run_id}/").json()

        self.assertEqual((body["script_sha256"], body["parser_settings"]), ("ab" * 32, {"timeout": 5}))
        self.assertIsNone(body["cancelled_by"])

    def test_unknown_runs_are_404(self):
        for path in (f"{LIST}00000000-0000-0000-0000-000000000000/", f"{LIST}not-a-uuid/", f"{LIST}x/log"):
            with self.subTest(path=path):
                self.assertEqual(self.client.get(path).status_code, 404)


class FileTests(RunApiTestCase):
    def setUp(self):
        super().setUp()
        self.run = completed_run(self.parser, {"data.bin": DATA})
        self.url = f"{LIST}{self.run.run_id}/files/data.bin"

    def test_a_file_downloads_whole_with_validators_and_safe_headers(self):
        response = self.client.get(self.url)

        self.assertEqual(response.status_code, 200)
        self.assertEqual(b"".join(response.streaming_content), DATA)
        self.assertEqual(response["Accept-Ranges"], "bytes")
        self.assertEqual(response["Content-Disposition"], 'attachment; filename="data.bin"')
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")
        self.assertTrue(response["ETag"].startswith('"'))
        self.assertIn("GMT", response["Last-Modified"])

    def test_ranges_are_served_as_206_with_content_range(self):
        cases = {
            "bytes=0-9": (0, 9),
            "bytes=10000-": (10000, 10239),
            "bytes=-40": (10200, 10239),
            "bytes=10230-99999": (10230, 10239),
        }
        for header, (first, last) in cases.items():
            with self.subTest(range=header):
                response = self.client.get(self.url, HTTP_RANGE=header)
                self.assertEqual(response.status_code, 206)
                self.assertEqual(response["Content-Range"], f"bytes {first}-{last}/10240")
                self.assertEqual(response["Content-Length"], str(last - first + 1))
                self.assertEqual(b"".join(response.streaming_content), DATA[first : last + 1])

    def test_a_range_outside_the_file_is_416_and_several_ranges_get_the_whole_file(self):
        outside = self.client.get(self.url, HTTP_RANGE="bytes=20000-")
        several = self.client.get(self.url, HTTP_RANGE="bytes=0-1,5-6")

        self.assertEqual((outside.status_code, outside["Content-Range"]), (416, "bytes */10240"))
        self.assertEqual(several.status_code, 200)
        self.assertEqual(b"".join(several.streaming_content), DATA)

    def test_an_unchanged_file_is_304_and_a_stale_if_range_gets_the_whole_file(self):
        etag = self.client.get(self.url)["ETag"]

        self.assertEqual(self.client.get(self.url, HTTP_IF_NONE_MATCH=etag).status_code, 304)
        resumed = self.client.get(self.url, HTTP_RANGE="bytes=5-", HTTP_IF_RANGE=etag)
        stale = self.client.get(self.url, HTTP_RANGE="bytes=5-", HTTP_IF_RANGE='"other"')
        self.assertEqual((resumed.status_code, stale.status_code), (206, 200))

    def test_the_public_link_serves_ranges_too(self):
        self.client.force_authenticate(None)

        response = self.client.get(f"/{self.run.run_id}/data.bin", HTTP_RANGE="bytes=1-2")

        self.assertEqual((response.status_code, b"".join(response.streaming_content)), (206, DATA[1:3]))

    def test_a_client_that_accepts_only_the_files_type_gets_it(self):
        response = self.client.get(self.url, HTTP_ACCEPT="application/octet-stream")

        self.assertEqual(response.status_code, 200)

    def test_files_through_the_api_need_a_signed_in_user(self):
        self.client.force_authenticate(None)

        self.assertEqual(self.client.get(self.url).status_code, 401)
        missing = self.client.get(f"{LIST}{self.run.run_id}/files/nope.txt", **basic("viewer", "viewer-pass"))
        self.assertEqual((missing.status_code, missing["Content-Type"]), (404, "application/json"))

    @override_settings(PUBLIC_DOWNLOADS=False)
    def test_public_links_can_be_made_to_need_a_signed_in_user(self):
        self.client.force_authenticate(None)
        link = f"/{self.run.run_id}/data.bin"

        self.assertEqual(self.client.get(link).status_code, 401)
        self.assertEqual(self.client.get(link, **basic("viewer", "viewer-pass")).status_code, 200)


class ArchiveTests(RunApiTestCase):
    def test_all_files_of_a_run_stream_as_one_zip(self):
        run = completed_run(self.parser, {"a.txt": b"alpha", "b.bin": DATA})

        response = self.client.get(f"{LIST}{run.run_id}/archive.zip")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/zip")
        name = f"{slugify(self.parser.name)}-{str(run.run_id)[:8]}.zip"  # named after what it holds
        self.assertEqual(response["Content-Disposition"], f'attachment; filename="{name}"')
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        self.assertEqual(archive.namelist(), ["a.txt", "b.bin"])
        self.assertEqual((archive.read("a.txt"), archive.read("b.bin")), (b"alpha", DATA))

    def test_a_failed_runs_zip_holds_its_error_and_an_unfinished_run_has_none(self):
        failed = Run.objects.create(parser=self.parser, status="error", error="ValueError: boom")
        running = Run.objects.create(parser=self.parser, status="running")

        response = self.client.get(f"{LIST}{failed.run_id}/archive.zip")

        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        self.assertEqual(archive.read("error.txt"), b"ValueError: boom\n")
        self.assertEqual(self.client.get(f"{LIST}{running.run_id}/archive.zip").status_code, 404)

    def test_a_large_zip_streams_in_little_memory(self):
        run = Run.objects.create(parser=self.parser, status="completed", finished_time=timezone.now())
        size = 24 * 1024 * 1024
        default_storage.save(f"{run.run_id}/big.bin", ContentFile(bytes(range(256)) * (size // 256)))
        run.files = [{"name": "big.bin", "size": size, "content_type": "application/octet-stream"}]
        run.save()

        response = self.client.get(f"{LIST}{run.run_id}/archive.zip")
        tracemalloc.start()
        streamed = sum(len(chunk) for chunk in response.streaming_content)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        self.assertGreater(streamed, 0)
        self.assertLess(peak, 4 * 1024 * 1024, f"peak {peak} bytes while streaming a {size}-byte file")
