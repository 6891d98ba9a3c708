from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from parseq import health, metrics
from parseq.api.views import RunFileDownload

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("parseq.api.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("<uuid:run_id>/<str:filename>", RunFileDownload.as_view(), name="download"),
]

# Outside the API's views too (a middleware reading the session), an API client gets JSON (parseq/api/exceptions.py).
handler500 = "parseq.api.exceptions.server_error"
