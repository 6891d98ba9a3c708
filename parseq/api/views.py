"""The REST API's views. They only call services and selectors."""

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from parseq.access.authentication import BasicAuthentication
from parseq.access.tokens import token_of
from parseq.api.filters import AuditEntryFilter, ParserFilter, RunFilter
from parseq.api.parsers import DepthSafeJSONParser, StrictMultiPartParser
from parseq.api.permissions import SECRETS_PERMISSION, PublicDownloads, may_read_secrets
from parseq.api.renderers import AnyContentRenderer
from parseq.api.serializers import (
    AuditEntrySerializer,
    ParserSerializer,
    ParserTextSerializer,
    ParserUploadSerializer,
    RunParametersSerializer,
    RunSerializer,
    ScriptCheckSerializer,
    ScriptVerdictSerializer,
    ScriptVersionSerializer,
    ScriptVersionSourceSerializer,
    TokenSerializer,
)
from parseq.core import audit, downloads, intake, selectors, services
from parseq.core.models import AuditEntry, Parser, Run
from parseq.core.selectors import with_current_version
from parseq.scheduling.selectors import with_last_due

VERSION_NUMBER = "[0-9]{1,9}"
VERSION_PARAMETER = OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH, description="1, 2, 3…")
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
FILE_RESPONSES = {
    (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The file."),
    (206, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The requested range."),
    304: OpenApiResponse(description="Not modified (If-None-Match, If-Modified-Since)."),
    404: OpenApiResponse(description="No such run or file."),
    416: OpenApiResponse(description="The range lies outside the file."),
}
RANGE_HEADERS = [
    OpenApiParameter("Range", OpenApiTypes.STR, OpenApiParameter.HEADER, description="One range: bytes=first-last"),
    OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
]


# A parser's body: a form with the script as a file, or JSON with its text (serializers.ParserTextSerializer).
PARSER_BODIES = {"multipart/form-data": ParserUploadSerializer, "application/json": ParserTextSerializer}
# Both checks: a script in JSON, a verdict back.
CHECK_BODIES = {"request": ScriptCheckSerializer, "responses": {200: ScriptVerdictSerializer}}


class RunAlreadyEnded(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "run_ended"


@extend_schema_view(
    list=extend_schema(summary="List parsers"),
    create=extend_schema(
        summary="Upload a parser",
        description="Multipart with a `script` file, or JSON with `script_text`.",
        request=PARSER_BODIES,
        responses={201: ParserSerializer},
    ),
    retrieve=extend_schema(summary="A parser"),
    update=extend_schema(summary="Replace a parser", request=PARSER_BODIES, responses={200: ParserSerializer}),
    partial_update=extend_schema(
        summary="Change some fields of a parser", request=PARSER_BODIES, responses={200: ParserSerializer}
    ),
    destroy=extend_schema(summary="Delete a parser, its runs and their files"),
)
class ParserViewSet(viewsets.ModelViewSet):
    """Parsers: their scripts (every version kept), schedules, sandbox settings and alerts; run one now."""

    serializer_class = ParserSerializer
    filterset_class = ParserFilter
    lookup_value_regex = "[0-9]{1,18}"  # ids the database can hold; anything else is a 404
    parser_classes = [StrictMultiPartParser, DepthSafeJSONParser]
    action_permissions = {
        **dict.fromkeys(["list", "retrieve", "metadata", "audit", "versions"], "core.view_parser"),
        "create": "core.add_parser",
        # A parser's secrets (its variables' values, its script) are for those who may change them anyway.
        **dict.fromkeys(
            ["update", "partial_update", "script", "environment", "version", "restore_version"], "core.change_parser"
        ),
        "destroy": "core.delete_parser",
        "run": "core.run_parser",
        "check_new": "core.add_parser",
        "check": "core.change_parser",
    }

    def get_queryset(self):
        return with_current_version(with_last_due(Parser.objects.order_by("name")))

    def perform_create(self, serializer):
        message = serializer.validated_data.pop("script_message", "")
        parser = Parser(**serializer.validated_data)
        serializer.instance = services.save_parser(
            parser=parser, user=self.request.user, source=AuditEntry.Source.API, script_message=message
        )

    def perform_update(self, serializer):
        message = serializer.validated_data.pop("script_message", "")
        parser = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(parser, name, value)
        services.save_parser(
            parser=parser, user=self.request.user, source=AuditEntry.Source.API, script_message=message
        )
        vars(parser).pop("current_script_version", None)  # as read before the save

    def perform_destroy(self, instance):
        services.delete_parser(parser=instance, user=self.request.user, source=AuditEntry.Source.API)

    @extend_schema(
        summary="Run a parser now",
        description="With an optional JSON body: variables added to (and overriding) the parser's for this run "
        "only, and a timeout instead of the parser's.",
        request=RunParametersSerializer,
        responses={202: RunSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[DepthSafeJSONParser])
    def run(self, request, pk=None):
        parser = self.get_object()
        body = RunParametersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if "environment" in body.validated_data and not may_read_secrets(request.user):
            # A variable can send a script, and the secrets it holds, elsewhere (API_URL=https://attacker/).
            raise exceptions.PermissionDenied(f"Giving a run variables needs the permission {SECRETS_PERMISSION}.")
        run = services.enqueue_run(
            parser=parser, trigger=Run.Trigger.API, user=request.user, parameters=body.validated_data
        )
        run.refresh_from_db()  # the broker took it, or refused it and the run says why (parseq/core/tasks.py)
        data = RunSerializer(run, context=self.get_serializer_context()).data
        if run.refused_by_the_broker:
            body = {"detail": run.error, "code": "broker_unavailable", "run": data}
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "30"})
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": str(data["url"])})

    @extend_schema(
        summary="Check a script for a new parser, without saving it",
        operation_id="api_parsers_check_new",
        description="The checks an upload gets, by line; `valid` is false when a save would refuse the script. "
        "`restricted` (default true, a new parser's default) adds the restricted mode's rules.",
        **CHECK_BODIES,
    )
    @action(detail=False, methods=["post"], url_path="check", parser_classes=[DepthSafeJSONParser])
    def check_new(self, request):
        return self._verdict(request, parser=None)

    @extend_schema(
        summary="Check a new version of a parser's script, without saving it",
        operation_id="api_parsers_check",
        description="As for a new parser, by this parser's rules (its restricted mode; `restricted` is ignored).",
        **CHECK_BODIES,
    )
    @action(detail=True, methods=["post"], url_path="check", parser_classes=[DepthSafeJSONParser])
    def check(self, request, pk=None):
        return self._verdict(request, parser=self.get_object())

    def _verdict(self, request, *, parser):
        body = ScriptCheckSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        verdict = intake.judge_script(
            text=given["script_text"],
            parser_name=parser.name if parser else given.get("name", ""),
            restricted=parser.restricted if parser else given["restricted"],
        )
        return Response(ScriptVerdictSerializer(verdict).data)

    @extend_schema(summary="A parser's script", responses={(200, "text/x-python"): OpenApiTypes.STR})
    @action(detail=True, renderer_classes=[JSONRenderer, AnyContentRenderer])
    def script(self, request, pk=None):
        parser = self.get_object()
        with parser.script.open("rb") as source:
            response = HttpResponse(source.read(), content_type="text/x-python; charset=utf-8")
        return downloads.as_download(response)

    @extend_schema(
        summary="A parser's environment, values included",
        description="Elsewhere values are masked; reading them needs the permission to change the parser.",
        responses={200: {"type": "object", "additionalProperties": {"type": "string"}}},
    )
    @action(detail=True)
    def environment(self, request, pk=None):
        return Response(self.get_object().environment or {}, headers={"Cache-Control": "no-store"})

    @extend_schema(
        summary="A parser's script versions, newest first (without their sources)",
        responses={200: ScriptVersionSerializer(many=True)},
    )
    @action(detail=True, filter_backends=[])
    def versions(self, request, pk=None):
        versions = self.paginate_queryset(selectors.script_versions_of(parser=self.get_object()))
        return self.get_paginated_response(
            ScriptVersionSerializer(versions, many=True, context={"request": request}).data
        )

    @extend_schema(
        summary="One script version, with its source",
        parameters=[VERSION_PARAMETER],
        responses={200: ScriptVersionSourceSerializer},
    )
    @action(detail=True, url_path=f"versions/(?P<number>{VERSION_NUMBER})", filter_backends=[])
    def version(self, request, pk=None, number=None):
        version = get_object_or_404(self.get_object().script_versions, number=number)
        return Response(ScriptVersionSourceSerializer(version, context={"request": request}).data)

    @extend_schema(
        summary="Make a script version the current script again",
        description="Appends a new version with that version's content (versions are never rewritten); none "
        "when it is already the current content. 400 when the old script breaks the parser's rules of today.",
        request=None,
        parameters=[VERSION_PARAMETER],
        responses={200: ScriptVersionSerializer},
    )
    @action(
        detail=True, methods=["post"], url_path=f"versions/(?P<number>{VERSION_NUMBER})/restore", filter_backends=[]
    )
    def restore_version(self, request, pk=None, number=None):
        version = get_object_or_404(self.get_object().script_versions, number=number)
        try:
            current = services.restore_script_version(version=version, user=request.user, source=AuditEntry.Source.API)
        except DjangoValidationError as error:
            raise exceptions.ValidationError({"script": error.messages}) from None
        return Response(ScriptVersionSerializer(current, context={"request": request}).data)

    @extend_schema(summary="Who did what to a parser, newest first", responses={200: AuditEntrySerializer(many=True)})
    @action(detail=True, filter_backends=[])  # the list's filters are the parsers', not the trail's
    def audit(self, request, pk=None):
        entries = self.paginate_queryset(audit.entries_of(parser=self.get_object()))
        return self.get_paginated_response(AuditEntrySerializer(entries, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List runs, newest first"),
    retrieve=extend_schema(summary="A run: status, times, error, files"),
)
class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs, newest first: status, times, error, result files and log; cancel one that is still going."""

    # Also a run's files, its zip and its log: routed in urls.py through `file_view`.

    serializer_class = RunSerializer
    lookup_field = "run_id"
    lookup_value_regex = UUID_PATTERN
    filterset_class = RunFilter
    queryset = Run.objects.select_related("parser").order_by("-created_time")
    action_permissions = {
        **dict.fromkeys(["list", "retrieve", "metadata", "file", "archive", "log"], "core.view_run"),
        "cancel": "core.cancel_run",
    }

    @extend_schema(
        summary="Cancel a run",
        description="An enqueued or running run ends `cancelled`; a running one has its sandbox killed within "
        "about a second. 409 when the run has already ended.",
        request=None,
        responses={200: RunSerializer, 409: OpenApiResponse(description="The run has already ended.")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, run_id=None):
        run = self.get_object()
        if not services.cancel_run(run=run, user=request.user, source=AuditEntry.Source.API):
            raise RunAlreadyEnded(f"The run has already ended: it is {run.status}.")
        return Response(self.get_serializer(run).data)

    # The three below are routed in urls.py, without the trailing slash of the rest: they name files.
    @extend_schema(summary="A result file of a run", parameters=RANGE_HEADERS, responses=FILE_RESPONSES)
    def file(self, request, run_id=None, filename=None):
        return downloads.run_file_response(request, run=self.get_object(), filename=filename)

    @extend_schema(
        summary="All files of a run as a zip",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: OpenApiResponse(description="No files.")},
    )
    def archive(self, request, run_id=None):
        return downloads.archive_response(run=self.get_object())

    @extend_schema(
        summary="The captured log of a run, growing while it runs",
        description=(
            "From byte `offset` on (default 0); `X-Log-Size` is the whole log's size so far, in bytes, and "
            "`X-Run-Status` the run's status as the log was read, `X-Run-Attempt` its attempt (a run rerun after "
            "its worker was lost logs afresh). To follow a running run, ask again with `offset` set to the last "
            "`X-Log-Size` (0 when the attempt changed) until `X-Run-Status` is neither `enqueued` nor `running`."
        ),
        parameters=[OpenApiParameter("offset", OpenApiTypes.INT, description="The first byte to send (default 0)")],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def log(self, request, run_id=None):
        offset = request.query_params.get("offset", "0")
        if not re.fullmatch(r"[0-9]{1,18}", offset):  # ASCII digits only: "²".isdigit() is true
            raise exceptions.ValidationError({"offset": "A number of bytes from the start of the log: 0 or more."})
        run = self.get_object()
        log = run.log.encode()
        response = HttpResponse(log[int(offset) :], content_type="text/plain; charset=utf-8")
        response["X-Log-Size"] = str(len(log))
        # One request per round for a client following the log; a new attempt starts its log afresh.
        response["X-Run-Status"] = run.status
        response["X-Run-Attempt"] = str(run.attempt)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "no-store"  # it grows while the run runs
        return response

    @classmethod
    def file_view(cls, method):
        """A view of one of the methods above, answering in any content type a client accepts."""
        return cls.as_view({"get": method}, renderer_classes=[JSONRenderer, AnyContentRenderer])


@extend_schema_view(
    list=extend_schema(summary="The audit trail, newest first: who created, changed, ran, cancelled or deleted what"),
    retrieve=extend_schema(summary="One entry of the audit trail"),
)
class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The whole trail, deleted parsers included; a parser's own is also at /api/parsers/{id}/audit/."""

    serializer_class = AuditEntrySerializer
    queryset = AuditEntry.objects.order_by("-time", "-pk")
    filterset_class = AuditEntryFilter
    lookup_value_regex = "[0-9]{1,18}"
    action_permissions = dict.fromkeys(["list", "retrieve", "metadata"], "core.view_auditentry")


class TokenView(APIView):
    """A user's API token for their name and password (`parseq login`)."""

    # HTTP Basic only, with its sign-in lockout: a password, never a session a page could ride on.
    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Your API token, for your user name and password (HTTP Basic)",
        description="One token per user, made when first asked for; the same one again after. "
        "Revoke it in the admin (Auth Token), and the next request for one makes a new one.",
        request=None,
        responses={200: TokenSerializer},
        auth=[{"basicAuth": []}],
    )
    def post(self, request):
        token = token_of(user=request.user)
        body = {"token": token.key, "username": request.user.get_username()}
        return Response(body, headers={"Cache-Control": "no-store"})


@extend_schema(exclude=True)
class RunFileDownload(APIView):
    """A result file of a run, or its error: `/<run_id>/<filename>`, public unless PARSEQ_PUBLIC_DOWNLOADS=false."""

    permission_classes = [PublicDownloads]
    renderer_classes = [JSONRenderer, AnyContentRenderer]

    def get(self, request, run_id, filename):
        run = get_object_or_404(Run, pk=run_id)
        return downloads.run_file_response(request, run=run, filename=filename)
