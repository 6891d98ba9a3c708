"""Responses that hand out a run's files: streamed, ranged, cacheable, and never a page of ours."""

import contextlib
import hashlib
import re
import sys
import zipfile

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe
from django.utils.text import slugify

from parseq.core.models import ERROR_FILENAME, Run

CHUNK_BYTES = 64 * 1024
# Up to 18 digits: larger offsets cannot exist, and a longer header is not a range we serve.
SINGLE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})\Z")
CACHE_CONTROL = "private, max-age=0"


def run_file_response(request, *, run, filename):
    """A result file (or a failed run's error.txt), honouring If-None-Match, If-Modified-Since and Range."""
    if filename == ERROR_FILENAME:
        return error_response(run)
    entry = run.file_entry(filename)
    if run.status != Run.Status.COMPLETED or entry is None:
        raise Http404("This run has no such file.")
    path = run.stored_path(filename)
    bucket = _bucket_storage()
    if settings.DOWNLOADS == "redirect" and bucket is not None:
        return _redirect_to_bucket(bucket, name=path, entry=entry)
    etag, modified = _validators(run, entry)
    not_modified = get_conditional_response(request, etag=etag, last_modified=modified)
    if not_modified is not None:
        return as_download(not_modified)
    span = _requested_span(request, size=entry["size"], etag=etag, modified=modified)
    if span == "unsatisfiable":
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{entry['size']}"
        return as_download(response)
    try:
        content = _open_stored(path, span=span)
    except FileNotFoundError:
        raise Http404("The file is missing from storage.") from None
    if span is None and bucket is None:
        # A local file goes whole through FileResponse, which a WSGI server may hand to sendfile().
        response = FileResponse(content, as_attachment=True, filename=filename, content_type=entry["content_type"])
    else:
        first, last = span or (0, entry["size"] - 1)
        response = StreamingHttpResponse(_Chunks(content, length=last - first + 1), status=200 if span is None else 206)
        response["Content-Type"] = entry["content_type"]
        response["Content-Length"] = str(last - first + 1)
        response["Content-Disposition"] = content_disposition_header(True, filename)
        if span is not None:
            response["Content-Range"] = f"bytes {first}-{last}/{entry['size']}"
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(modified)
    return as_download(response)


def error_response(run):
    """A failed run's error, or a cancelled or skipped run's reason, as error.txt."""
    if not run.has_reason:
        raise Http404("This run has no error or reason: it completed, or has not ended.")
    response = HttpResponse(run.error + "\n", content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="error.txt"'
    return as_download(response)


def archive_response(*, run):
    """All files of a run (or its error.txt) as a zip, compressed while it streams, never whole in memory."""
    if run.status == Run.Status.COMPLETED:
        members = [(entry["name"], run.stored_path(entry["name"])) for entry in run.files]
    elif run.status == Run.Status.ERROR:
        members = []
    else:
        raise Http404("This run has not finished, or it was skipped: it has no files.")
    stamp = run.finished_time.utctimetuple()[:6] if run.finished_time else (1980, 1, 1, 0, 0, 0)
    response = StreamingHttpResponse(_zip_chunks(run, members, stamp), content_type="application/zip")
    # Named after what it is (`rates-1a2b3c4d.zip`): a folder of `<uuid>.zip` files tells nobody anything.
    name = f"{slugify(run.parser.name) or 'run'}-{str(run.run_id)[:8]}.zip"
    response["Content-Disposition"] = content_disposition_header(True, name)
    return as_download(response)


def as_download(response):
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered it, the content would run with no origin and no scripts.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = CACHE_CONTROL
    return response


def _bucket_storage():
    """The default storage when it is django-storages' S3 backend, else None.

    Its module is looked up, not imported: an S3Storage cannot exist without it, and importing it
    (boto3 with it, some 0.3 s) would only slow down a Parseq that keeps its files on local disk.
    """
    storage_class = default_storage.__class__  # sets up the lazy default storage, importing its module
    s3 = sys.modules.get("storages.backends.s3")
    return default_storage if s3 is not None and issubclass(storage_class, s3.S3Storage) else None


def _object_key(bucket, name):
    """The key of a stored file in the bucket: its name under the storage's prefix (PARSEQ_S3_PREFIX)."""
    from storages.utils import clean_name

    return bucket._normalize_name(clean_name(name))


def _open_stored(name, *, span=None):
    """A readable stream of a stored file from the first byte of `span` on (the whole file when None).

    From a bucket it is the body of one GET for just those bytes. django-storages' own file
    downloads the whole object at its first read or seek: a ten-byte range of a 100 MiB
    result would fetch 100 MiB before the first byte went out.
    """
    bucket = _bucket_storage()
    if bucket is None:
        content = default_storage.open(name, "rb")
        if span is not None:
            content.seek(span[0])
        return content
    from botocore.exceptions import ClientError

    request = {"Bucket": bucket.bucket_name, "Key": _object_key(bucket, name)}
    if span is not None:
        request["Range"] = f"bytes={span[0]}-{span[1]}"
    try:
        return bucket.connection.meta.client.get_object(**request)["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(name) from None
        raise


def _redirect_to_bucket(bucket, *, name, entry):
    """302 to a presigned GET of the object, asking S3 to answer with the headers Parseq would send.

    S3 can be told the type, disposition and caching of its answer, not X-Content-Type-Options
    or a Content-Security-Policy: the file is then served by the bucket's origin, not Parseq's.
    """
    url = bucket.connection.meta.client.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket.bucket_name,
            "Key": _object_key(bucket, name),
            "ResponseContentDisposition": content_disposition_header(True, entry["name"]),
            "ResponseContentType": entry["content_type"],
            "ResponseCacheControl": CACHE_CONTROL,
        },
        ExpiresIn=settings.DOWNLOAD_URL_EXPIRY,
    )
    return as_download(HttpResponseRedirect(url))


def _validators(run, entry):
    """A result never changes once its run completed: name, size and run identify its bytes."""
    digest = hashlib.sha256(f"{run.run_id}/{entry['name']}/{entry['size']}".encode()).hexdigest()[:32]
    modified = int((run.finished_time or run.created_time).timestamp())
    return f'"{digest}"', modified


def _requested_span(request, *, size, etag, modified):
    """(first, last) byte of a single satisfiable range; None for the whole file; "unsatisfiable"."""
    header = request.headers.get("Range", "")
    if not header or not _if_range_holds(request, etag=etag, modified=modified):
        return None
    match = SINGLE_RANGE.match(header.replace(" ", ""))
    if match is None or (not match[1] and not match[2]):
        return None  # several ranges, or a form we do not serve: the whole file is a valid answer
    if not match[1]:
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or (match[2] and int(match[2]) < start):
        return "unsatisfiable"
    return start, end


def _if_range_holds(request, *, etag, modified):
    condition = request.headers.get("If-Range")
    if condition is None:
        return True
    if condition.startswith(('"', "W/")):
        return condition == etag
    return parse_http_date_safe(condition) == modified


class _Chunks:
    """The next `length` bytes of an open stream, in chunks; closing it closes the stream, read or not."""

    def __init__(self, stream, *, length):
        self.stream, self.length = stream, length

    def __iter__(self):
        remaining = self.length
        while remaining > 0:
            block = self.stream.read(min(CHUNK_BYTES, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block
        self.close()

    def close(self):
        self.stream.close()


class _Sink:
    """What ZipFile writes into, emptied after each chunk: the zip is never whole in memory."""

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(bytes(data))
        return len(data)

    def flush(self):
        pass

    def take(self):
        data, self.parts = b"".join(self.parts), []
        return data


def _zip_chunks(run, members, stamp):
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, path in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            opened = contextlib.closing(_open_stored(path))
            with opened as source, archive.open(info, "w", force_zip64=True) as target:
                while block := source.read(CHUNK_BYTES):
                    target.write(block)
                    if chunk := sink.take():
                        yield chunk
        if run.status == Run.Status.ERROR:
            archive.writestr(zipfile.ZipInfo(ERROR_FILENAME, date_time=stamp), run.error + "\n")
    yield sink.take()
