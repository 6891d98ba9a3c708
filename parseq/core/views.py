from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from parseq.api.permissions import PublicDownloads
from parseq.api.renderers import AnyContentRenderer
from parseq.core import downloads, selectors
from parseq.core.models import Run


@extend_schema(exclude=True)
class RunFileDownload(APIView):
    """A result file of a run, or its error: `/<run_id>/<filename>`, public unless PARSEQ_PUBLIC_DOWNLOADS=false."""

    permission_classes = [PublicDownloads]
    renderer_classes = [JSONRenderer, AnyContentRenderer]

    def get(self, request, run_id, filename):
        run = get_object_or_404(Run, pk=run_id)
        return downloads.run_file_response(request, run=run, filename=filename)


@require_safe
def healthz(request):
    healthy, checks = selectors.health()
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)
