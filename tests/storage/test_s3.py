"""Scripts and result files in an S3 bucket: a real S3 server (moto's) on loopback, never a mocked client.

Each class starts its own server and configures Parseq's default storage the way
parseq/settings.py does from PARSEQ_S3_* variables, so that what is tested is the
configuration a deployment gets.
"""

import calendar
import contextlib
import hashlib
import io
import os
import runpy
import time
import tracemalloc
import zipfile
from datetime import timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import requests
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import SimpleTestCase, override_settings, tag
from django.utils import timezone
from rest_framework.test import APITestCase, APITransactionTestCase
from storages.backends.s3 import S3Storage

from parseq.core import services
from parseq.core.models import Parser, Run, result_path
from parseq.core.retention import prune_runs
from parseq.env import ConfigurationError
from tests.api.helpers import FAST_PASSWORDS, make_users
from tests.helpers import in_process_worker, make_parser, require, script, wait_until
from tests.storage.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, moto_server_missing

SETTINGS_FILE = os.path.join(settings.BASE_DIR, "parseq", "settings.py")
BUCKET = "parseq-results"
PREFIX = "parseq-test"
needs_moto_server = require(moto_server_missing() is None, moto_server_missing())

WORKING_SCRIPT = """
    def parse():
        print("two files")
        return {"rows.csv": b"a,b\\n1,2\\n", "отчёт.bin": bytes(range(256)) * 64}
"""
LATE_SCRIPT = """
    def parse():
        return {"late.txt": b"stored nowhere"}
"""


def settings_from(**environ):
    """parseq/settings.py as it reads `environ`: S3 and download variables from it alone, the rest as they are."""
    ours = ("PARSEQ_S3_", "PARSEQ_DOWNLOAD")
    base = {name: value for name, value in os.environ.items() if not name.startswith(ours)}
    with mock.patch.dict(os.environ, {"SECRET_KEY": "x", **base, **environ}, clear=True):
        return runpy.run_path(SETTINGS_FILE)


def finished(run):
    def check():
        run.refresh_from_db()
        return run.is_finished

    return check


class BucketMixin:
    """A moto S3 server and a bucket for the class; Parseq's default storage in it, as settings.py makes it.

    Credentials reach boto3 the standard way, as AWS_* variables; AWS_MAX_ATTEMPTS=1 (a standard
    variable too) makes a test of an outage fail at once instead of after botocore's retries.
    """

    @classmethod
    def setUpClass(cls):
        cls.server = None
        if moto_server_missing() is None:  # else `require` skips the class, or fails it in CI
            cls.server = S3Server()
            cls.addClassCleanup(cls.server.close)
            cls.server.start()
            cls.server.client().create_bucket(Bucket=BUCKET)
            credentials = {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_MAX_ATTEMPTS": "1",
            }
            environment = mock.patch.dict(os.environ, credentials)
            environment.start()
            cls.addClassCleanup(environment.stop)
            configured = settings_from(
                PARSEQ_S3_BUCKET=BUCKET,
                PARSEQ_S3_ENDPOINT_URL=cls.server.endpoint_url,
                PARSEQ_S3_REGION=REGION,
                PARSEQ_S3_PREFIX=PREFIX,
            )
            storages = {**settings.STORAGES, "default": configured["STORAGES"]["default"]}
            bucket_settings = override_settings(STORAGES=storages)
            bucket_settings.enable()
            cls.addClassCleanup(bucket_settings.disable)
        super().setUpClass()

    def tearDown(self):
        if self.server is not None and self.server.process is not None:
            self.server.empty(BUCKET)
        super().tearDown()

    def keys(self):
        return self.server.keys(BUCKET)

    def object_bytes(self, key):
        return self.server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def completed_run(self, parser, files):
        """A completed run whose files (name: (bytes, content type)) are stored the way the worker stores them."""
        run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED, finished_time=timezone.now())
        for name, (content, content_type) in files.items():
            default_storage.save(result_path(run_id=run.run_id, filename=name), ContentFile(content))
            run.files.append({"name": name, "size": len(content), "content_type": content_type})
        run.save()
        return run


@tag("slow")  # a real S3 server process and real sandboxes: not in `make test-fast`
@FAST_PASSWORDS
@needs_moto_server
class BucketStorageTests(BucketMixin, APITransactionTestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()

    def test_a_parser_uploaded_through_the_api_runs_from_the_bucket_and_its_files_land_there(self):
        # Given a parser uploaded through the API by an editor
        self.client.force_authenticate(self.editor)
        upload = SimpleUploadedFile("weather.py", script(WORKING_SCRIPT))
        response = self.client.post("/api/parsers/", {"name": "weather", "script": upload}, format="multipart")
        self.assertEqual(response.status_code, 201, response.content)
        parser = Parser.objects.get(name="weather")
        script_key = f"{PREFIX}/{parser.script.name}"
        self.assertEqual(self.keys(), [script_key])
        self.assertEqual(self.object_bytes(script_key), script(WORKING_SCRIPT))

        # When it runs through the in-process worker and the real sandbox
        with in_process_worker():
            started = self.client.post(f"/api/parsers/{parser.pk}/run/")
            run = Run.objects.get(run_id=started.json()["run_id"])
            wait_until(finished(run), message="the run to finish")

        # Then its files are objects in the bucket, and its link streams them back
        self.assertEqual(run.status, Run.Status.COMPLETED, run.error)
        self.assertEqual(run.script_sha256, hashlib.sha256(script(WORKING_SCRIPT)).hexdigest())
        self.assertEqual(
            self.keys(), sorted([script_key, f"{PREFIX}/{run.run_id}/rows.csv", f"{PREFIX}/{run.run_id}/отчёт.bin"])
        )
        self.assertEqual(self.object_bytes(f"{PREFIX}/{run.run_id}/отчёт.bin"), bytes(range(256)) * 64)
        self.client.force_authenticate(None)
        response = self.client.get(f"/{run.run_id}/rows.csv")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(b"".join(response.streaming_content), b"a,b\n1,2\n")
        self.assertEqual(response["Content-Type"], "text/csv")

    def test_a_result_streams_back_with_parseqs_headers_ranges_and_validators(self):
        data = bytes(range(256)) * 40
        run = self.completed_run(make_parser("def parse():\n    return {}\n"), {"data.bin": (data, "text/plain")})
        link = f"/{run.run_id}/data.bin"

        whole = self.client.get(link)
        self.assertEqual(whole.status_code, 200)
        self.assertTrue(whole.streaming)
        self.assertEqual(b"".join(whole.streaming_content), data)
        self.assertEqual(whole["Content-Length"], "10240")
        self.assertEqual(whole["Content-Type"], "text/plain")
        self.assertEqual(whole["Content-Disposition"], 'attachment; filename="data.bin"')
        self.assertEqual(whole["X-Content-Type-Options"], "nosniff")
        self.assertEqual(whole["Content-Security-Policy"], "default-src 'none'; sandbox")
        self.assertEqual((whole["Accept-Ranges"], whole["Cache-Control"]), ("bytes", "private, max-age=0"))

        for header, (first, last) in {
            "bytes=0-9": (0, 9),
            "bytes=10000-": (10000, 10239),
            "bytes=-40": (10200, 10239),
        }.items():
            with self.subTest(range=header):
                part = self.client.get(link, HTTP_RANGE=header)
                self.assertEqual(part.status_code, 206)
                self.assertEqual(part["Content-Range"], f"bytes {first}-{last}/10240")
                self.assertEqual(part["Content-Length"], str(last - first + 1))
                self.assertEqual(b"".join(part.streaming_content), data[first : last + 1])

        etag = whole["ETag"]
        self.assertEqual(self.client.get(link, HTTP_IF_NONE_MATCH=etag).status_code, 304)
        self.assertEqual(self.client.get(link, HTTP_RANGE="bytes=5-", HTTP_IF_RANGE=etag).status_code, 206)
        self.assertEqual(self.client.get(link, HTTP_RANGE="bytes=5-", HTTP_IF_RANGE='"stale"').status_code, 200)
        self.assertEqual(self.client.get(link, HTTP_RANGE="bytes=20000-").status_code, 416)
        self.client.force_authenticate(self.viewer)
        through_api = self.client.get(f"/api/runs/{run.run_id}/files/data.bin", HTTP_RANGE="bytes=1-2")
        self.assertEqual((through_api.status_code, b"".join(through_api.streaming_content)), (206, data[1:3]))

    def test_a_file_missing_from_the_bucket_is_404(self):
        run = self.completed_run(make_parser("def parse():\n    return {}\n"), {"a.txt": (b"a", "text/plain")})
        self.server.empty(BUCKET)

        self.assertEqual(self.client.get(f"/{run.run_id}/a.txt").status_code, 404)
        self.assertEqual(self.client.get(f"/{run.run_id}/a.txt", HTTP_RANGE="bytes=0-0").status_code, 404)

    def test_a_runs_zip_streams_from_the_bucket(self):
        files = {"a.txt": (b"alpha", "text/plain"), "b.bin": (bytes(range(256)) * 40, "application/octet-stream")}
        run = self.completed_run(make_parser("def parse():\n    return {}\n"), files)
        self.client.force_authenticate(self.viewer)

        response = self.client.get(f"/api/runs/{run.run_id}/archive.zip")

        self.assertEqual(response.status_code, 200)
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        self.assertEqual(archive.namelist(), ["a.txt", "b.bin"])
        self.assertEqual((archive.read("a.txt"), archive.read("b.bin")), (b"alpha", bytes(range(256)) * 40))

    def test_a_large_result_streams_in_little_memory_and_a_range_fetches_only_its_bytes(self):
        size = 16 * 1024 * 1024
        block = bytes(range(256)) * 4096
        run = self.completed_run(
            make_parser("def parse():\n    return {}\n"),
            {"big.bin": (block * (size // len(block)), "application/octet-stream")},
        )
        requested_ranges = self.record_object_gets()

        tracemalloc.start()
        response = self.client.get(f"/{run.run_id}/big.bin")
        digest, largest_chunk = hashlib.sha256(), 0
        for chunk in response.streaming_content:
            digest.update(chunk)
            largest_chunk = max(largest_chunk, len(chunk))
        whole_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tail = self.client.get(f"/{run.run_id}/big.bin", HTTP_RANGE="bytes=-10")
        tail_bytes = b"".join(tail.streaming_content)
        tail_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        self.assertEqual(digest.hexdigest(), hashlib.sha256(block * (size // len(block))).hexdigest())
        self.assertLessEqual(largest_chunk, 1024 * 1024)
        self.assertLess(whole_peak, 4 * 1024 * 1024, f"peak {whole_peak} bytes while streaming {size} bytes")
        self.assertEqual(tail_bytes, block[-10:])
        self.assertLess(tail_peak, 1024 * 1024, f"peak {tail_peak} bytes for a 10-byte range")
        # One GET each: the whole object, then only the ten bytes asked for.
        self.assertEqual(requested_ranges, [None, f"bytes={size - 10}-{size - 1}"])

    def test_deleting_runs_and_parsers_and_pruning_old_runs_delete_their_objects(self):
        parser = make_parser("def parse():\n    return {}\n", keep_last_runs=1)
        deleted, pruned, kept = (self.completed_run(parser, {"a.txt": (b"a", "text/plain")}) for _ in range(3))
        Run.objects.filter(pk=pruned.pk).update(created_time=timezone.now() - timedelta(days=1))
        Run.objects.filter(pk=deleted.pk).update(created_time=timezone.now() - timedelta(days=2))

        Run.objects.get(pk=deleted.pk).delete()
        self.assertNotIn(f"{PREFIX}/{deleted.run_id}/a.txt", self.keys())

        report = prune_runs()
        self.assertEqual(report.deleted, {"demo": 1})
        self.assertEqual(self.keys(), sorted([f"{PREFIX}/{parser.script.name}", f"{PREFIX}/{kept.run_id}/a.txt"]))

        parser.delete()
        self.assertEqual(self.keys(), [])

    def record_object_gets(self):
        """The Range header (or None) of every GetObject this thread's storage client sends from now on."""
        ranges = []

        def record(request, **kwargs):
            value = request.headers.get("Range")
            ranges.append(value.decode() if isinstance(value, bytes) else value)

        events = default_storage.connection.meta.client.meta.events
        events.register("before-send.s3.GetObject", record)
        self.addCleanup(events.unregister, "before-send.s3.GetObject", record)
        return ranges


@tag("slow")  # a real S3 server process: not in `make test-fast`
@FAST_PASSWORDS
@needs_moto_server
@override_settings(DOWNLOADS="redirect", DOWNLOAD_URL_EXPIRY=300)
class RedirectTests(BucketMixin, APITestCase):
    def setUp(self):
        self.editor, self.viewer = make_users()
        self.parser = make_parser("def parse():\n    return {}\n")

    def test_a_result_redirects_to_a_presigned_url_that_serves_it_as_a_download(self):
        run = self.completed_run(self.parser, {"отчёт 1.csv": (b"a,b\n", "text/csv")})

        response = self.client.get(f"/{run.run_id}/отчёт 1.csv")

        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith(f"{self.server.endpoint_url}/{BUCKET}/{PREFIX}/{run.run_id}/"))
        self.assertEqual(response["Cache-Control"], "private, max-age=0")
        fetched = requests.get(response["Location"], timeout=10)
        self.assertEqual(fetched.status_code, 200)
        self.assertEqual(fetched.content, b"a,b\n")
        self.assertEqual(fetched.headers["Content-Type"], "text/csv")
        self.assertEqual(
            fetched.headers["Content-Disposition"],
            "attachment; filename*=utf-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%201.csv",
        )
        self.assertEqual(fetched.headers["Cache-Control"], "private, max-age=0")
        # The bucket is private: the object without the URL's signature is refused.
        unsigned = response["Location"].split("?", 1)[0]
        self.assertEqual(requests.get(unsigned, timeout=10).status_code, 403)

    def test_a_range_request_is_redirected_too_and_the_bucket_serves_the_range(self):
        run = self.completed_run(self.parser, {"data.bin": (bytes(range(256)), "application/octet-stream")})

        response = self.client.get(f"/{run.run_id}/data.bin", HTTP_RANGE="bytes=10-19")

        self.assertEqual(response.status_code, 302)
        fetched = requests.get(response["Location"], headers={"Range": "bytes=10-19"}, timeout=10)
        self.assertEqual((fetched.status_code, fetched.content), (206, bytes(range(10, 20))))

    @override_settings(DOWNLOAD_URL_EXPIRY=1)
    def test_the_presigned_url_is_signed_with_sigv4_for_download_url_expiry_seconds(self):
        run = self.completed_run(self.parser, {"a.txt": (b"a", "text/plain")})

        signed_at = time.time()
        query = parse_qs(urlsplit(self.client.get(f"/{run.run_id}/a.txt")["Location"]).query)

        self.assertEqual(query["X-Amz-Algorithm"], ["AWS4-HMAC-SHA256"])
        self.assertEqual(query["X-Amz-Expires"], ["1"])
        self.assertTrue(query["X-Amz-Credential"][0].endswith(f"/{REGION}/s3/aws4_request"))
        stamp = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
        self.assertLess(abs(stamp - signed_at), 5)
        # moto's server does not enforce the expiry of presigned URLs (S3 answers 403 after it): not fetched here.

    def test_error_txt_and_the_zip_are_still_served_by_parseq(self):
        failed = Run.objects.create(parser=self.parser, status=Run.Status.ERROR, error="ValueError: boom")
        completed = self.completed_run(self.parser, {"a.txt": (b"alpha", "text/plain")})
        self.client.force_authenticate(self.viewer)

        error = self.client.get(f"/{failed.run_id}/error.txt")
        archive = self.client.get(f"/api/runs/{completed.run_id}/archive.zip")

        self.assertEqual((error.status_code, error.content), (200, b"ValueError: boom\n"))
        self.assertEqual(error["X-Content-Type-Options"], "nosniff")
        self.assertEqual(archive.status_code, 200)
        self.assertEqual(zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).read("a.txt"), b"alpha")

    @override_settings(PUBLIC_DOWNLOADS=False)
    def test_who_may_download_is_checked_before_any_redirect(self):
        run = self.completed_run(self.parser, {"a.txt": (b"a", "text/plain")})

        anonymous = self.client.get(f"/{run.run_id}/a.txt")
        self.client.force_authenticate(self.viewer)
        signed_in = self.client.get(f"/{run.run_id}/a.txt")
        unknown = self.client.get(f"/{run.run_id}/b.txt")

        self.assertEqual(anonymous.status_code, 401)
        self.assertNotIn("Location", anonymous)
        self.assertEqual(signed_in.status_code, 302)
        self.assertEqual(unknown.status_code, 404)


@tag("slow")  # a real S3 server process and real sandboxes: not in `make test-fast`
@needs_moto_server
class StorageOutageTests(BucketMixin, APITransactionTestCase):
    @contextlib.contextmanager
    def storage_going_away_before_saving(self, marker):
        """Stop the S3 server the moment a file whose name holds `marker` is to be saved: an outage at that point."""
        save = S3Storage.save

        def save_in_an_outage(storage, name, *args, **kwargs):
            if marker in name:
                self.server.stop()
            return save(storage, name, *args, **kwargs)

        with mock.patch.object(S3Storage, "save", save_in_an_outage):
            yield

    def test_an_outage_while_storing_results_ends_the_run_in_error_and_the_worker_goes_on(self):
        # Given a run whose script the worker reads from the bucket
        late = make_parser(LATE_SCRIPT, name="late")
        with in_process_worker(threads=1):
            # When the storage goes away just as the run comes to store its file
            outage = self.storage_going_away_before_saving("late.txt")
            with outage, self.assertLogs("parseq.core.execution", "ERROR") as logs:
                run = services.enqueue_run(parser=late, trigger=Run.Trigger.MANUAL)
                wait_until(finished(run), message="the run to end")

            # Then the run ends in error saying why, and once the storage is back the same worker runs the next one
            self.assertEqual(run.status, Run.Status.ERROR)
            self.assertIn("could not store the result files", run.error)
            self.assertIn(self.server.endpoint_url, run.error)
            self.assertEqual(run.files, [])
            self.assertIn(f"could not store the files of run {run.run_id}", logs.output[0])
            self.server.start()
            self.server.client().create_bucket(Bucket=BUCKET)
            working = make_parser(WORKING_SCRIPT, name="working")
            next_run = services.enqueue_run(parser=working, trigger=Run.Trigger.MANUAL)
            wait_until(finished(next_run), message="the next run")
        self.assertEqual(next_run.status, Run.Status.COMPLETED, next_run.error)
        self.assertIn(f"{PREFIX}/{next_run.run_id}/rows.csv", self.keys())


class S3SettingsTests(SimpleTestCase):
    def test_yandex_object_storage_is_an_endpoint_a_region_and_static_keys(self):
        environ = {
            "PARSEQ_S3_BUCKET": "parseq",
            "PARSEQ_S3_ENDPOINT_URL": "https://storage.yandexcloud.net",
            "PARSEQ_S3_REGION": "ru-central1",
            "AWS_ACCESS_KEY_ID": "YCAJE-example",
            "AWS_SECRET_ACCESS_KEY": "YCN-example",
        }
        configured = settings_from(**environ)
        options = configured["STORAGES"]["default"]["OPTIONS"]

        self.assertEqual(configured["STORAGES"]["default"]["BACKEND"], "storages.backends.s3.S3Storage")
        self.assertNotIn("access_key", options)  # boto3 reads the keys from the environment itself
        self.assertEqual((configured["DOWNLOADS"], configured["DOWNLOAD_URL_EXPIRY"]), ("stream", 300))
        with mock.patch.dict(os.environ, environ):
            from storages.backends.s3 import S3Storage

            client = S3Storage(**options).connection.meta.client
            url = client.generate_presigned_url("get_object", Params={"Bucket": "parseq", "Key": "k"}, ExpiresIn=60)
        self.assertEqual(client.meta.region_name, "ru-central1")
        # `auto` addressing is path-style on a custom endpoint; Yandex answers both styles.
        self.assertTrue(url.startswith("https://storage.yandexcloud.net/parseq/k?"), url)
        self.assertIn("X-Amz-Credential=YCAJE-example%2F", url)
        self.assertIn("%2Fru-central1%2Fs3%2Faws4_request", url)

    def test_the_prefix_and_addressing_style_reach_the_storage(self):
        options = settings_from(
            PARSEQ_S3_BUCKET="b", PARSEQ_S3_PREFIX="/parseq/prod/", PARSEQ_S3_ADDRESSING_STYLE="path"
        )["STORAGES"]["default"]["OPTIONS"]

        self.assertEqual((options["location"], options["addressing_style"]), ("parseq/prod", "path"))
        self.assertFalse(options["querystring_auth"])

    def test_bad_s3_and_download_settings_fail_naming_the_variable(self):
        cases = [
            ({"PARSEQ_DOWNLOADS": "redirect"}, "PARSEQ_DOWNLOADS=redirect needs PARSEQ_S3_BUCKET"),
            ({"PARSEQ_DOWNLOADS": "proxy"}, "PARSEQ_DOWNLOADS must be one of stream, redirect"),
            ({"PARSEQ_S3_BUCKET": "b", "PARSEQ_S3_ADDRESSING_STYLE": "dns"}, "PARSEQ_S3_ADDRESSING_STYLE must be"),
            ({"PARSEQ_S3_BUCKET": "b", "PARSEQ_S3_ENDPOINT_URL": "storage.yandexcloud.net"}, "PARSEQ_S3_ENDPOINT_URL"),
            ({"PARSEQ_S3_BUCKET": "b", "PARSEQ_DOWNLOAD_URL_EXPIRY": "0"}, "PARSEQ_DOWNLOAD_URL_EXPIRY must be"),
            ({"PARSEQ_S3_BUCKET": "b", "PARSEQ_DOWNLOAD_URL_EXPIRY": "604801"}, "PARSEQ_DOWNLOAD_URL_EXPIRY must be"),
        ]
        for environ, message in cases:
            with self.subTest(**environ), self.assertRaisesMessage(ConfigurationError, message):
                settings_from(**environ)
        redirect = settings_from(PARSEQ_S3_BUCKET="b", PARSEQ_DOWNLOADS="redirect", PARSEQ_DOWNLOAD_URL_EXPIRY="60")
        self.assertEqual((redirect["DOWNLOADS"], redirect["DOWNLOAD_URL_EXPIRY"]), ("redirect", 60))
