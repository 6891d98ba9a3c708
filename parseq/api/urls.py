from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from parseq.api import exceptions, views

app_name = "api"

router = DefaultRouter()
router.register("parsers", views.ParserViewSet, basename="parser")
router.register("runs", views.RunViewSet, basename="run")
router.register("audit", views.AuditEntryViewSet, basename="audit")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("runs/<uuid:run_id>/files/<str:filename>", views.RunViewSet.file_view("file"), name="run-file"),
    path("runs/<uuid:run_id>/archive.zip", views.RunViewSet.file_view("archive"), name="run-archive"),
    path("runs/<uuid:run_id>/log", views.RunViewSet.file_view("log"), name="run-log"),
    path("", include(router.urls)),
    re_path(r"^[\s\S]*$", exceptions.not_found),  # any other path under /api/, newlines included
]
