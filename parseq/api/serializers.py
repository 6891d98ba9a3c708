"""What the API shows and accepts. Parsers get the admin's checks: the script's, the model's, the schedule's."""

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from parseq.api.permissions import may_read_secrets
from parseq.core import intake, parameters
from parseq.core.environment import MASK, masked, merge_environment
from parseq.core.models import ERROR_FILENAME, AuditEntry, Parser, Run, ScriptVersion, validate_egress_ports
from parseq.scheduling.selectors import next_run_time

SCRIPT_FIELDS = ("script", "script_text", "script_message")


class OptionalBooleanField(serializers.BooleanField):
    """A boolean a multipart form may leave out (curl -F): left out means unchanged, not false."""

    default_empty_html = serializers.empty


class JSONBooleanField(serializers.BooleanField):
    """`true` or `false`, as JSON writes them: not 0, 1 or "yes", which the schema's boolean does not allow."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class JSONStringField(serializers.CharField):
    """A JSON string: not a number or a boolean, which CharField would take as its text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ParserSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:parser-detail")
    script = serializers.FileField(
        write_only=True, required=False, help_text="The script, a .py file that defines parse() (multipart upload)."
    )
    script_text = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        help_text="The script's source as text, instead of uploading `script`.",
    )
    script_name = serializers.SerializerMethodField()
    script_message = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Why the script changed, kept with its new version.",
    )
    script_version = serializers.SerializerMethodField(help_text="The number of the current script version.")
    environment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text=f"Variables for this parser's runs only. Values are shown as {MASK}; send {MASK} to keep a value. "
        "Those who may change the parser read the values at /api/parsers/{id}/environment/.",
    )
    extra_egress_ports = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=65535),
        required=False,
        validators=[validate_egress_ports],
        help_text=Parser._meta.get_field("extra_egress_ports").help_text,
    )
    next_run_time = serializers.SerializerMethodField()
    runs_url = serializers.SerializerMethodField()
    enabled = OptionalBooleanField(required=False, help_text=Parser._meta.get_field("enabled").help_text)
    restricted = OptionalBooleanField(required=False, help_text=Parser._meta.get_field("restricted").help_text)

    class Meta:
        model = Parser
        fields = [
            "id",
            "url",
            *Parser.EDITABLE_FIELDS,
            "script_text",
            "script_message",
            "script_name",
            "script_version",
            "script_sha256",
            "environment",
            "next_run_time",
            "created_time",
            "updated_time",
            "runs_url",
        ]

    def get_script_name(self, parser) -> str:
        return parser.script.name.rsplit("/", 1)[-1] if parser.script else ""

    def get_script_version(self, parser) -> int | None:
        if hasattr(parser, "current_script_version"):  # annotated by the view's query
            return parser.current_script_version
        return parser.script_versions.values_list("number", flat=True).first()

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_time(self, parser):
        return next_run_time(parser=parser, now=timezone.now())

    def get_runs_url(self, parser) -> str:
        return self._absolute(reverse("api:run-list") + f"?parser={parser.pk}")

    def to_representation(self, parser):
        data = super().to_representation(parser)
        data["environment"] = masked(parser.environment or {})
        if not may_read_secrets(self._user()):
            del data["webhook_url"]  # a Slack incoming-webhook URL is a credential
        return data

    def _user(self):
        request = self.context.get("request")
        return request.user if request else None

    def validate(self, attrs):
        attrs = super().validate(attrs)
        parser = self.instance
        self._take_script(attrs)
        if "environment" in attrs:
            previous = parser.environment if parser else {}
            attrs["environment"], problems = merge_environment(attrs["environment"], previous=previous)
            if problems:
                raise serializers.ValidationError({"environment": problems})
        self._check_schedule(attrs)
        return attrs

    def _take_script(self, attrs):
        """The script the request brings (`script` or `script_text`), by the admin's rules (core/intake.py)."""
        parser = self.instance
        try:
            script = intake.incoming_script(
                upload=attrs.pop("script", None),
                text=attrs.pop("script_text", None),
                parser=parser,
                parser_name=attrs.get("name") or (parser.name if parser else ""),
                restricted=attrs.get("restricted", parser.restricted if parser else True),
            )
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        if script is not None:
            attrs["script"] = script

    def _check_schedule(self, attrs):
        candidate = copy.copy(self.instance) if self.instance else Parser()
        for name, value in attrs.items():
            if name not in SCRIPT_FIELDS:
                setattr(candidate, name, value)
        try:
            candidate.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None

    def _absolute(self, path):
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ParserUploadSerializer(ParserSerializer):
    """A parser as a multipart form sends it, the script as a file: the schema's name for that body."""


class ParserTextSerializer(ParserSerializer):
    """A parser as JSON sends it, the script as `script_text` (no file travels in JSON).

    A body of its own in the schema: one schema under two content types makes generated clients
    (openapi-python-client) write a union of a type with itself, which does not even import.
    """

    script = None

    class Meta(ParserSerializer.Meta):
        fields = [name for name in ParserSerializer.Meta.fields if name != "script"]


class ScriptCheckSerializer(serializers.Serializer):
    """The body of `POST /api/parsers/check/` and `/api/parsers/{id}/check/`: a script to judge, not to save."""

    script_text = JSONStringField(trim_whitespace=False, help_text="The script's source.")
    name = JSONStringField(
        required=False, max_length=200, help_text="The parser's name, which names a script given as text."
    )
    restricted = JSONBooleanField(
        required=False,
        default=True,
        help_text="Judge by the restricted mode's rules too (a new parser's default). A parser's check uses its own.",
    )


class ScriptProblemSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True, help_text="The line it is on (null: the whole script).")
    reason = serializers.CharField()


class ScriptVerdictSerializer(serializers.Serializer):
    valid = serializers.BooleanField(help_text="Whether a save would take the script.")
    problems = ScriptProblemSerializer(many=True, help_text="Every reason a save would refuse it, by line.")
    sha256 = serializers.CharField(help_text="The SHA-256 the script would be stored with.")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
    username = serializers.CharField()


class RunParametersSerializer(serializers.Serializer):
    """The optional body of `POST /api/parsers/{id}/run/`, checked by the admin's rules (core/parameters.py)."""

    environment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Variables for this run only, added to the parser's (the same name overrides it).",
    )
    timeout = serializers.IntegerField(required=False, help_text="Seconds this run may take, instead of the parser's.")

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, "Not a parameter: give environment or timeout."))
        try:
            return parameters.run_parameters(**attrs)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None


class RunFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes.")
    content_type = serializers.CharField()
    url = serializers.URLField(help_text="The file through the API (needs authentication; Range, ETag).")
    download_url = serializers.URLField(help_text="The public link /<run_id>/<filename>.")


class RunSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:run-detail", lookup_field="run_id")
    parser_name = serializers.CharField(source="parser.name", read_only=True)
    duration = serializers.SerializerMethodField(help_text="Seconds from start to finish.")
    files = serializers.SerializerMethodField()
    log_url = serializers.SerializerMethodField()
    archive_url = serializers.SerializerMethodField()
    error_url = serializers.SerializerMethodField()
    cancelled_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who cancelled the run (null unless cancelled).",
    )
    script_sha256 = serializers.CharField(read_only=True, help_text="SHA-256 of the script the run executed.")
    parser_settings = serializers.JSONField(
        read_only=True, help_text="The parser's sandbox settings the run went by (variable names, never values)."
    )

    script_version = serializers.IntegerField(
        source="script_version.number",
        read_only=True,
        allow_null=True,
        help_text="The number of the parser's script version the run executed (/api/parsers/{id}/versions/{n}/).",
    )
    parameters = serializers.SerializerMethodField(
        help_text="What the run was given beside its parser's settings: its variables (values masked) and timeout."
    )

    attempts = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text="The earlier attempts, each {attempt, worker, started, ended, why}: a run whose worker was lost "
        "runs again, up to its parser's max_attempts.",
    )

    class Meta:
        model = Run
        fields = [
            "run_id",
            "url",
            "parser",
            "parser_name",
            "status",
            "trigger",
            "scheduled_for",
            "created_time",
            "updated_time",
            "started_time",
            "finished_time",
            "duration",
            "error",
            "error_url",
            "log_url",
            "files",
            "archive_url",
            "cancelled_by",
            "script_sha256",
            "script_version",
            "parser_settings",
            "parameters",
            "attempt",
            "worker",
            "attempts",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                "timeout": {"type": "integer"},
            },
        }
    )
    def get_parameters(self, run):
        given = dict(run.parameters)
        if "environment" in given:
            given["environment"] = masked(given["environment"])
        return given

    def get_duration(self, run) -> float | None:
        return round(run.duration.total_seconds(), 3) if run.duration else None

    @extend_schema_field(RunFileSerializer(many=True))
    def get_files(self, run):
        if run.status != Run.Status.COMPLETED:
            return []
        return [
            {
                **entry,
                "url": self._absolute(reverse("api:run-file", args=[run.run_id, entry["name"]])),
                "download_url": self._absolute(reverse("download", args=[run.run_id, entry["name"]])),
            }
            for entry in run.files
        ]

    def get_log_url(self, run) -> str:
        return self._absolute(reverse("api:run-log", args=[run.run_id]))

    def get_archive_url(self, run) -> str | None:
        if run.status not in (Run.Status.COMPLETED, Run.Status.ERROR):
            return None
        return self._absolute(reverse("api:run-archive", args=[run.run_id]))

    def get_error_url(self, run) -> str | None:
        if not run.has_reason:
            return None
        return self._absolute(reverse("download", args=[run.run_id, ERROR_FILENAME]))

    def _absolute(self, path):
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ScriptVersionSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    author = serializers.CharField(source="author_name", help_text="Who saved it (empty: a command).")

    class Meta:
        model = ScriptVersion
        fields = ["number", "url", "filename", "sha256", "author", "message", "created_time"]
        read_only_fields = fields

    def get_url(self, version) -> str:
        path = reverse("api:parser-version", args=[version.parser_id, version.number])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ScriptVersionSourceSerializer(ScriptVersionSerializer):
    class Meta(ScriptVersionSerializer.Meta):
        fields = [*ScriptVersionSerializer.Meta.fields, "source"]
        read_only_fields = fields


class AuditEntrySerializer(serializers.ModelSerializer):
    parser = serializers.IntegerField(
        source="parser_id", allow_null=True, help_text="The parser's id (it may be gone)."
    )
    fields = serializers.ListField(
        child=serializers.CharField(), help_text="What changed: field names, and `environment.NAME` for a variable."
    )

    class Meta:
        model = AuditEntry
        fields = ["id", "time", "username", "action", "source", "parser", "parser_name", "run_id", "fields"]
        read_only_fields = fields
