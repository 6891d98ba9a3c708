"""Responses that hand out a run's files: streamed, ranged, cacheable, and never a page of ours."""

import hashlib
import re
import zipfile

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe

from parseq.core.models import Run
from parseq.core.services import ERROR_FILENAME, result_path

CHUNK_BYTES = 64 * 1024
# Up to 18 digits: larger offsets cannot exist, and a longer header is not a range we serve.
SINGLE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})\Z")


def run_file_response(request, *, run, filename):
    """A result file (or a failed run's error.txt), honouring If-None-Match, If-Modified-Since and Range."""
    if filename == ERROR_FILENAME:
        return error_response(run)
    entry = run.file_entry(filename)
    if run.status != Run.Status.COMPLETED or entry is None:
        raise Http404("This run has no such file.")
    etag, modified = _validators(run, entry)
    not_modified = get_conditional_response(request, etag=etag, last_modified=modified)
    if not_modified is not None:
        return as_download(not_modified)
    try:
        content = default_storage.open(result_path(run_id=run.run_id, filename=filename), "rb")
    except FileNotFoundError:
        raise Http404("The file is missing from storage.") from None
    span = _requested_span(request, size=entry["size"], etag=etag, modified=modified)
    if span == "unsatisfiable":
        content.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{entry['size']}"
        return as_download(response)
    if span is None:
        response = FileResponse(content, as_attachment=True, filename=filename, content_type=entry["content_type"])
    else:
        start, end = span
        response = StreamingHttpResponse(_read_span(content, start, end), status=206)
        response["Content-Type"] = entry["content_type"]
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{entry['size']}"
        response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(modified)
    return as_download(response)


def error_response(run):
    if run.status != Run.Status.ERROR:
        raise Http404("This run has no error.")
    response = HttpResponse(run.error + "\n", content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="error.txt"'
    return as_download(response)


def archive_response(*, run):
    """All files of a run (or its error.txt) as a zip, compressed while it streams, never whole in memory."""
    if run.status == Run.Status.COMPLETED:
        members = [(entry["name"], result_path(run_id=run.run_id, filename=entry["name"])) for entry in run.files]
    elif run.status == Run.Status.ERROR:
        members = []
    else:
        raise Http404("This run has not finished, or it was skipped: it has no files.")
    stamp = run.finished_time.utctimetuple()[:6] if run.finished_time else (1980, 1, 1, 0, 0, 0)
    response = StreamingHttpResponse(_zip_chunks(run, members, stamp), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, f"{run.run_id}.zip")
    return as_download(response)


def as_download(response):
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered it, the content would run with no origin and no scripts.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=0"
    return response


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


def _read_span(content, start, end):
    with content:
        content.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            block = content.read(min(CHUNK_BYTES, remaining))
            if not block:
                return
            remaining -= len(block)
            yield block


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
            with default_storage.open(path, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while block := source.read(CHUNK_BYTES):
                    target.write(block)
                    if chunk := sink.take():
                        yield chunk
        if run.status == Run.Status.ERROR:
            archive.writestr(zipfile.ZipInfo(ERROR_FILENAME, date_time=stamp), run.error + "\n")
    yield sink.take()
