from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from parseq.core import selectors
from parseq.core.models import Run
from parseq.core.services import ERROR_FILENAME, result_path


@require_safe
def download(request, run_id, filename):
    """A result file of a run, or its error, always as a download and never as a page of ours."""
    run = get_object_or_404(Run, pk=run_id)
    if filename == ERROR_FILENAME:
        if run.status != Run.Status.ERROR:
            raise Http404("This run has no error.")
        response = HttpResponse(run.error + "\n", content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="error.txt"'
        return _as_download(response)
    entry = run.file_entry(filename)
    if run.status != Run.Status.COMPLETED or entry is None:
        raise Http404("This run has no such file.")
    try:
        content = default_storage.open(result_path(run_id=run.run_id, filename=filename), "rb")
    except FileNotFoundError:
        raise Http404("The file is missing from storage.") from None
    response = FileResponse(content, as_attachment=True, filename=filename, content_type=entry["content_type"])
    return _as_download(response)


def _as_download(response):
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered it, the content would run with no origin and no scripts.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=0"
    return response


@require_safe
def healthz(request):
    healthy, checks = selectors.health()
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)
