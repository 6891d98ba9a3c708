"""`/<run_id>/<filename>` and `/<run_id>/error.txt`: streamed downloads, never pages of our origin."""

import hashlib
import tracemalloc
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import TestCase

from parseq.core.models import Run
from tests.helpers import TemporaryMediaMixin, make_parser


class DownloadTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        self.parser = make_parser("def parse():\n    return {}\n")

    def completed_run(self, files):
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        for name, (content, content_type) in files.items():
            default_storage.save(f"{run.run_id}/{name}", ContentFile(content))
            run.files.append({"name": name, "size": len(content), "content_type": content_type})
        run.save()
        return run

    def test_a_result_file_is_an_attachment_with_safe_headers_and_its_exact_bytes(self):
        run = self.completed_run({"page.html": (b"<script>alert(1)</script>", "text/html")})

        response = self.client.get(f"/{run.run_id}/page.html")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(b"".join(response.streaming_content), b"<script>alert(1)</script>")
        self.assertEqual(response["Content-Disposition"], 'attachment; filename="page.html"')
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response["Content-Type"], "text/html")
        self.assertIn("sandbox", response["Content-Security-Policy"])
        self.assertEqual(response["Content-Length"], "25")

    def test_a_non_ascii_file_name_downloads_under_its_name(self):
        run = self.completed_run({"отчёт 1.csv": (b"a,b\n", "text/csv")})

        response = self.client.get(f"/{run.run_id}/отчёт 1.csv")

        self.assertEqual(response.status_code, 200)
        self.assertIn("filename*=utf-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%201.csv", response["Content-Disposition"])

    def test_a_failed_runs_error_is_served_as_error_txt(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.ERROR, error="Traceback...\nValueError: x")

        response = self.client.get(f"/{run.run_id}/error.txt")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"Traceback...\nValueError: x\n")
        self.assertEqual(response["Content-Type"], "text/plain; charset=utf-8")
        self.assertEqual(response["Content-Disposition"], 'attachment; filename="error.txt"')
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")

    def test_a_cancelled_or_skipped_runs_reason_is_served_as_error_txt_too(self):
        for status, reason in [
            (Run.Status.CANCELLED, "cancelled by alice"),
            (Run.Status.SKIPPED, "Skipped: due at ..."),
        ]:
            with self.subTest(status=status):
                run = Run.objects.create(parser=self.parser, status=status, error=reason)

                response = self.client.get(f"/{run.run_id}/error.txt")

                self.assertEqual((response.status_code, response.content), (200, f"{reason}\n".encode()))

    def test_a_running_run_has_no_error_txt_yet_even_with_a_note(self):
        run = Run.objects.create(parser=self.parser, status=Run.Status.ENQUEUED, error="not sent yet: ...")

        self.assertEqual(self.client.get(f"/{run.run_id}/error.txt").status_code, 404)

    def test_unknown_runs_files_and_ids_are_404(self):
        run = self.completed_run({"a.txt": (b"a", "text/plain")})
        for url in [f"/{uuid.uuid4()}/a.txt", f"/{run.run_id}/b.txt", f"/{run.run_id}/error.txt", "/not-a-uuid/a.txt"]:
            with self.subTest(url=url):
                self.assertEqual(self.client.get(url).status_code, 404)

    def test_files_of_a_run_that_has_not_completed_are_404(self):
        run = self.completed_run({"a.txt": (b"a", "text/plain")})
        Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)

        self.assertEqual(self.client.get(f"/{run.run_id}/a.txt").status_code, 404)

    def test_a_file_missing_from_storage_is_404_not_500(self):
        run = self.completed_run({"a.txt": (b"a", "text/plain")})
        default_storage.delete(f"{run.run_id}/a.txt")

        self.assertEqual(self.client.get(f"/{run.run_id}/a.txt").status_code, 404)

    def test_only_get_and_head_are_allowed(self):
        run = self.completed_run({"a.txt": (b"a", "text/plain")})

        self.assertEqual(self.client.head(f"/{run.run_id}/a.txt").status_code, 200)
        self.assertEqual(self.client.post(f"/{run.run_id}/a.txt").status_code, 405)

    def test_a_large_file_is_streamed_in_small_chunks_without_loading_it_whole(self):
        size = 48 * 1024 * 1024
        block = bytes(range(256)) * 4096
        run = Run.objects.create(parser=self.parser, status=Run.Status.COMPLETED)
        path = default_storage.path(f"{run.run_id}/big.bin")
        default_storage.save(f"{run.run_id}/big.bin", ContentFile(b""))
        with open(path, "wb") as file:
            for _ in range(size // len(block)):
                file.write(block)
        run.files = [{"name": "big.bin", "size": size, "content_type": "application/octet-stream"}]
        run.save()

        tracemalloc.start()
        response = self.client.get(f"/{run.run_id}/big.bin")
        digest, largest_chunk, received = hashlib.sha256(), 0, 0
        for chunk in response.streaming_content:
            digest.update(chunk)
            largest_chunk = max(largest_chunk, len(chunk))
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        self.assertTrue(response.streaming)
        self.assertEqual(received, size)
        self.assertEqual(digest.hexdigest(), hashlib.sha256(block * (size // len(block))).hexdigest())
        self.assertLessEqual(largest_chunk, 1024 * 1024)
        self.assertLess(peak, 8 * 1024 * 1024, "the download held too much of the file in memory")
