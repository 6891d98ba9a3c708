from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_dramatiq.models import Task

from parseq.alerts import selectors as alert_selectors
from parseq.core import audit, display, selectors, services
from parseq.core.environment import MASK, masked_text, parse_environment_text
from parseq.core.models import AuditEntry, Parser, Run
from parseq.scheduling import selectors as schedule_selectors
from parseq.scheduling import services as schedule_services

# django_dramatiq's task table stays empty (its AdminMiddleware is off): runs are the history.
admin.site.unregister(Task)


def _owned_objects_go_along(self, objs, request):
    """As the admin's, but what the objects own (a parser's runs, a run's alert deliveries) needs no permission
    of its own: deleting the owner is permission enough, as in the API.
    """
    deleted, counts, _, protected = admin.ModelAdmin.get_deleted_objects(self, objs, request)
    return deleted, counts, set(), protected


class PortsField(forms.CharField):
    """Ports as people write them, `8080, 8443`; a list of numbers for the model."""

    def prepare_value(self, value):
        return ", ".join(str(port) for port in value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        words = [word for word in text.replace(",", " ").split() if word]
        if not all(word.isascii() and word.isdigit() for word in words):
            raise forms.ValidationError("Give port numbers separated by commas, as 8080, 8443.")
        return [int(word) for word in words]


class ParserForm(forms.ModelForm):
    script_text = forms.CharField(
        label="Script as text",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 20, "cols": 100, "spellcheck": "false", "class": "parseq-editor"}),
        help_text="Edit the script here, or upload a file above: either is checked the same way before it is saved.",
    )
    extra_egress_ports = PortsField(
        label="Extra egress ports",
        required=False,
        help_text=Parser._meta.get_field("extra_egress_ports").help_text,
    )
    environment_text = forms.CharField(
        label="Environment",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"}),
        help_text="One NAME=value a line, passed to this parser's runs only. Saved values are shown as "
        f"{MASK}: leave a line as it is to keep its value.",
    )

    class Meta:
        model = Parser
        fields = Parser.EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "script" not in self.fields:
            return  # a reader's page: every field is shown read-only, none is a form field
        self.fields["environment_text"].initial = masked_text(self.instance.environment or {})
        self.fields["script"].required = False  # a script may come as text instead; clean() requires one
        if self.instance.pk and self.instance.script:
            try:
                self.fields["script_text"].initial = services.script_source(parser=self.instance)
            except OSError as error:
                self.fields["script_text"].help_text = f"The stored script cannot be read: {error}"

    def clean_environment_text(self):
        text = self.cleaned_data["environment_text"]
        environment, problems = parse_environment_text(text, previous=self.instance.environment or {})
        if problems:
            raise forms.ValidationError(problems)
        self.instance.environment = environment
        return masked_text(environment)

    def clean(self):
        cleaned = super().clean()
        self._script_from_text(cleaned)
        script, restricted = cleaned.get("script"), cleaned.get("restricted", False)
        newly_restricted = "restricted" in self.changed_data and restricted
        if script and ("script" in self.changed_data or newly_restricted):
            try:
                services.check_script(uploaded_file=script, restricted=restricted)
            except forms.ValidationError as error:
                self.add_error("script_text" if "script_text" in self.changed_data else "script", error)
        return cleaned

    def _script_from_text(self, cleaned):
        """An edited text becomes the new script file; an upload and an edit at once is ambiguous."""
        text_changed = "script_text" in self.changed_data and cleaned.get("script_text", "").strip()
        if "script" in self.changed_data and cleaned.get("script"):
            if text_changed:
                self.add_error("script_text", "Upload a file or edit the text, not both.")
            return
        if text_changed:
            name = cleaned.get("name") or self.instance.name
            cleaned["script"] = services.script_from_text(text=cleaned["script_text"], parser_name=name)
            self.changed_data.append("script")
        elif not self.instance.script:
            self.add_error("script", "Upload a .py file that defines parse(), or write the script as text below.")


@admin.register(Parser)
class ParserAdmin(admin.ModelAdmin):
    form = ParserForm
    list_display = ["name", "enabled", "schedule", "next_run", "last_run_status", "last_run_time"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    actions = ["run_now", "enable_automatic_runs", "disable_automatic_runs"]
    change_form_template = "admin/core/parser/change_form.html"
    change_list_template = "admin/core/parser/change_list.html"
    readonly_fields = ["next_run", "recent_runs", "api_links", "webhook_deliveries", "audit_trail", "variable_names"]
    # A parser's secrets: shown only to those who may change the parser (README: Permissions).
    SECRET_FIELDS = ("script_text", "environment_text", "webhook_url")
    fieldsets = [
        ("History", {"fields": ("recent_runs", "api_links", "audit_trail")}),
        (None, {"fields": (*Parser.SCRIPT_FIELDS, "script_text")}),
        ("Automatic runs", {"fields": (*Parser.SCHEDULE_FIELDS, "next_run")}),
        ("Sandbox", {"fields": (*Parser.SANDBOX_FIELDS, "environment_text")}),
        ("Failure alerts", {"fields": (*Parser.ALERT_FIELDS, "webhook_deliveries")}),
        ("Retention", {"fields": Parser.RETENTION_FIELDS}),
    ]

    def get_queryset(self, request):
        return schedule_selectors.with_last_due(selectors.parsers_with_last_run())

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            # A new parser has no history and no deliveries yet.
            return _without(self.fieldsets, sections=["History"], fields=["webhook_deliveries"])
        if not self.has_change_permission(request, obj):
            # Readers see the names of the variables, not their values; no script, no webhook URL.
            fieldsets = _without(self.fieldsets, fields=self.SECRET_FIELDS)
            return [(n, {"fields": [*o["fields"], "variable_names"]} if n == "Sandbox" else o) for n, o in fieldsets]
        return self.fieldsets

    def lookup_allowed(self, lookup, value, request=None):
        # The admin lets a list be filtered by any field in the query string: `?webhook_url__startswith=`
        # or `?environment__API_KEY__startswith=` would tell a reader a secret a letter at a time.
        return lookup.split(LOOKUP_SEP)[0] not in SECRET_MODEL_FIELDS and super().lookup_allowed(lookup, value, request)

    def has_run_permission(self, request, obj=None):
        return request.user.has_perm("core.run_parser")

    def save_model(self, request, obj, form, change):
        services.save_parser(parser=obj, user=request.user, source=AuditEntry.Source.ADMIN)

    def delete_model(self, request, obj):
        services.delete_parser(parser=obj, user=request.user, source=AuditEntry.Source.ADMIN)

    def delete_queryset(self, request, queryset):
        for parser in queryset:
            services.delete_parser(parser=parser, user=request.user, source=AuditEntry.Source.ADMIN)

    get_deleted_objects = _owned_objects_go_along

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), **_scheduler_context(), "can_run": self.has_run_permission(request)}
        backend = services.sandbox_backend()
        if backend in ("subprocess", None):
            extra_context["sandbox_warning"] = selectors.SANDBOX_DESCRIPTIONS[backend]
        extra_context["limits_warning"] = selectors.run_limits_warning(backend=backend)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        live = {"live_fingerprint": selectors.live_fingerprint(scope="runs")}
        return super().changelist_view(request, {**(extra_context or {}), **_scheduler_context(), **live})

    @admin.display(description="schedule")
    def schedule(self, parser):
        return schedule_selectors.describe_schedule(parser)

    @admin.display(description="next run")
    def next_run(self, parser):
        if parser.pk is None:
            return "-"
        due = schedule_selectors.next_run_time(parser=parser, now=timezone.now())
        return _moment(due) if due else "-"

    @admin.display(description="recent runs")
    def recent_runs(self, parser):
        runs = parser.runs.all()[:RECENT_RUNS]
        succeeded, counted = selectors.success_rate(parser=parser, last=SUCCESS_RATE_RUNS)
        rate = (
            format_html(
                '<p class="parseq-rate"><strong>{}%</strong> of the last {} finished runs succeeded ({} of {}).</p>',
                round(100 * succeeded / counted),
                counted,
                succeeded,
                counted,
            )
            if counted
            else format_html("<p>No finished runs yet.</p>")
        )
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:core_run_change", args=[run.run_id]),
                    _moment(run.created_time),
                    display.status_badge(run),
                    display.duration(run),
                    run.trigger,
                    _moment(run.scheduled_for) if run.scheduled_for else "-",
                    run.error.splitlines()[-1][:200] if run.error else "",
                )
                for run in runs
            ),
        )
        table = (
            format_html(
                '<table class="parseq-runs"><thead><tr><th>created</th><th>status</th><th>duration</th>'
                "<th>trigger</th><th>due</th><th>error or reason</th></tr></thead><tbody>{}</tbody></table>",
                rows,
            )
            if runs
            else ""
        )
        all_runs = reverse("admin:core_run_changelist") + f"?parser__id__exact={parser.pk}"
        return live_region(
            f"parser:{parser.pk}",
            format_html('{}{}<p><a href="{}">All runs of this parser</a></p>', rate, table, all_runs),
        )

    @admin.display(description="API")
    def api_links(self, parser):
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">its runs</a> · <a href="{}">API docs</a>',
            reverse("api:parser-detail", args=[parser.pk]),
            reverse("api:parser-detail", args=[parser.pk]),
            reverse("api:run-list") + f"?parser={parser.pk}",
            reverse("api:docs"),
        )

    @admin.display(description="audit trail")
    def audit_trail(self, parser):
        entries = audit.entries_of(parser=parser, limit=RECENT_AUDIT_ENTRIES)
        if not entries:
            return "Nothing recorded yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_moment(e.time), e.username or "-", e.action, e.source, _audit_details(e)) for e in entries),
        )
        return format_html(
            '<table class="parseq-audit"><thead><tr><th>when</th><th>who</th><th>did</th><th>through</th>'
            '<th>what</th></tr></thead><tbody>{}</tbody></table><p><a href="{}">The whole trail</a></p>',
            rows,
            reverse("admin:core_auditentry_changelist") + f"?parser_id={parser.pk}",
        )

    @admin.display(description="variables")
    def variable_names(self, parser):
        return ", ".join(f"{name}={MASK}" for name in sorted(parser.environment or {})) or "-"

    @admin.display(description="deliveries")
    def webhook_deliveries(self, parser):
        deliveries = alert_selectors.recent_deliveries(parser=parser, limit=5)
        if not deliveries:
            return "None yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (_moment(d.created_time), d.event, d.status, d.attempts, d.last_error or d.last_status_code or "")
                for d in deliveries
            ),
        )
        return format_html(
            "<table><thead><tr><th>created</th><th>event</th><th>status</th><th>attempts</th><th>last answer</th>"
            '</tr></thead><tbody>{}</tbody></table><p><a href="{}">All deliveries</a></p>',
            rows,
            reverse("admin:alerts_webhookdelivery_changelist") + f"?parser__id__exact={parser.pk}",
        )

    @admin.display(description="last run", ordering="last_run_status")
    def last_run_status(self, parser):
        return display.plain_status_badge(parser.last_run_status)

    @admin.display(description="last run time", ordering="last_run_time")
    def last_run_time(self, parser):
        return parser.last_run_time

    @admin.action(description="Run now", permissions=["run"])
    def run_now(self, request, queryset):
        for parser in queryset:
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL, user=request.user)
            self.message_user(request, format_html("{}: run {} enqueued.", parser.name, _run_link(run)))

    @admin.action(description="Switch automatic runs on", permissions=["change"])
    def enable_automatic_runs(self, request, queryset):
        changed = schedule_services.set_automatic_runs(
            parsers=queryset, enabled=True, user=request.user, source=AuditEntry.Source.ADMIN
        )
        self.message_user(request, f"Automatic runs switched on for {changed} parser(s).")

    @admin.action(description="Switch automatic runs off", permissions=["change"])
    def disable_automatic_runs(self, request, queryset):
        changed = schedule_services.set_automatic_runs(
            parsers=queryset, enabled=False, user=request.user, source=AuditEntry.Source.ADMIN
        )
        self.message_user(request, f"Automatic runs switched off for {changed} parser(s).")

    def get_urls(self):
        run_url = path("<int:parser_id>/run/", self.admin_site.admin_view(self.run_now_view), name="core_parser_run")
        return [run_url, *super().get_urls()]

    def run_now_view(self, request, parser_id):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:core_parser_change", args=[parser_id]))
        if not self.has_run_permission(request):
            raise PermissionDenied
        parser = get_object_or_404(Parser, pk=parser_id)
        run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL, user=request.user)
        self.message_user(request, format_html("Run {} enqueued.", _run_link(run)), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:core_run_change", args=[run.run_id]))


# What only those who may change a parser read; never a filter of a list.
SECRET_MODEL_FIELDS = {"script", "environment", "webhook_url"}
RECENT_RUNS = 10
RECENT_AUDIT_ENTRIES = 10
SUCCESS_RATE_RUNS = 20


def _without(fieldsets, *, sections=(), fields=()):
    """`fieldsets` without the named sections and fields."""
    return [
        (name, {**options, "fields": [f for f in options["fields"] if f not in fields]})
        for name, options in fieldsets
        if name not in sections
    ]


def _audit_details(entry):
    if entry.run_id:
        return format_html(
            'run <a href="{}">{}</a>', reverse("admin:core_run_change", args=[entry.run_id]), entry.run_id
        )
    return ", ".join(entry.fields)


def live_region(scope, content):
    """Content the live script redraws (without reloading the page) when the runs of `scope` change."""
    return format_html(
        '<div class="parseq-live" id="live-{}" data-live-scope="{}" data-live-fingerprint="{}">{}</div>',
        scope.replace(":", "-"),
        scope,
        selectors.live_fingerprint(scope=scope),
        content,
    )


def _moment(value):
    """A time to the second, in the server's timezone, named: schedules are about seconds."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def _scheduler_context():
    return {"scheduler_inactive": not schedule_selectors.scheduler_is_active()}


def _run_link(run):
    return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[run.run_id]), run.run_id)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["run_id", "parser", "status_badge", "created_time", "duration", "trigger", "scheduled_for"]
    list_filter = ["status", "parser", "trigger"]
    list_select_related = ["parser"]
    date_hierarchy = "created_time"
    actions = ["cancel_runs"]
    change_form_template = "admin/core/run/change_form.html"
    change_list_template = "admin/core/run/change_list.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "run_id",
                    "parser_link",
                    "status_badge",
                    "trigger",
                    "cancelled_by",
                    "due",
                    "created",
                    "started",
                    "finished",
                    "duration",
                ]
            },
        ),
        ("Error", {"fields": ["error_display"]}),
        ("Result files", {"fields": ["result_files"]}),
        ("Log", {"fields": ["log_display"]}),
        ("What it ran", {"fields": ["script_display", "settings_display"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a run is a record: it is only ever cancelled

    get_deleted_objects = _owned_objects_go_along

    def delete_model(self, request, obj):
        services.delete_run(run=obj, user=request.user, source=AuditEntry.Source.ADMIN)

    def delete_queryset(self, request, queryset):
        for run in queryset.select_related("parser"):
            services.delete_run(run=run, user=request.user, source=AuditEntry.Source.ADMIN)

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("core.cancel_run")

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not obj.error:
            return [(name, options) for name, options in self.fieldsets if name != "Error"]
        return self.fieldsets

    def changelist_view(self, request, extra_context=None):
        context = {"live_fingerprint": selectors.live_fingerprint(scope="runs"), **(extra_context or {})}
        return super().changelist_view(request, context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        context = {
            "live_fingerprint": selectors.live_fingerprint(scope=f"run:{object_id}") or "",
            "can_cancel": self.has_cancel_permission(request),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self):
        cancel = path("<uuid:run_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="core_run_cancel")
        live = path("live/", self.admin_site.admin_view(self.live_view), name="core_run_live")
        return [cancel, live, *super().get_urls()]

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        cancelled = sum(
            services.cancel_run(run=run, user=request.user, source=AuditEntry.Source.ADMIN) for run in queryset
        )
        ended = len(queryset) - cancelled
        message = f"Cancelled {cancelled} run(s)." + (f" {ended} had already ended." if ended else "")
        self.message_user(request, message, messages.SUCCESS if cancelled else messages.WARNING)

    def cancel_view(self, request, run_id):
        page = HttpResponseRedirect(reverse("admin:core_run_change", args=[run_id]))
        if request.method != "POST":
            return page
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        run = get_object_or_404(Run, pk=run_id)
        if services.cancel_run(run=run, user=request.user, source=AuditEntry.Source.ADMIN):
            self.message_user(request, "Run cancelled.", messages.SUCCESS)
        else:
            self.message_user(request, f"The run had already ended: it is {run.status}.", messages.WARNING)
        return page

    def live_view(self, request):
        """The fingerprints of the scopes a page shows, for its live script (see display.py and live.js)."""
        if not self.has_view_permission(request):
            return JsonResponse({"detail": "This needs the permission core.view_run."}, status=403)
        scopes = request.GET.getlist("scope")[:20]
        fingerprints = {scope: selectors.live_fingerprint(scope=scope) for scope in scopes}
        if not scopes or None in fingerprints.values():
            return JsonResponse({"detail": "Give one or more scope=runs, parser:<id> or run:<uuid>."}, status=400)
        return JsonResponse({"fingerprints": fingerprints}, headers={"Cache-Control": "no-store"})

    @admin.display(description="due (schedule)")
    def due(self, run):
        return _moment(run.scheduled_for) if run.scheduled_for else "-"

    @admin.display(description="created")
    def created(self, run):
        return _moment(run.created_time)

    @admin.display(description="started")
    def started(self, run):
        return _moment(run.started_time) if run.started_time else "-"

    @admin.display(description="finished")
    def finished(self, run):
        return _moment(run.finished_time) if run.finished_time else "-"

    @admin.display(description="parser", ordering="parser__name")
    def parser_link(self, run):
        return format_html('<a href="{}">{}</a>', reverse("admin:core_parser_change", args=[run.parser_id]), run.parser)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return display.status_badge(run)

    @admin.display(description="duration")
    def duration(self, run):
        return display.duration(run)

    @admin.display(description="files")
    def result_files(self, run):
        if run.status == Run.Status.ERROR:
            return format_html('<a href="{}">error.txt</a>', reverse("download", args=[run.run_id, "error.txt"]))
        if not run.files:
            return "-"
        rows = format_html_join("", "{}", ((self._file_row(run, entry),) for entry in run.files))
        return format_html(
            '<table class="parseq-files"><thead><tr><th></th><th>file</th><th>size</th><th>type</th></tr></thead>'
            '<tbody>{}</tbody></table><p><a href="{}">All files as a zip</a></p>',
            rows,
            reverse("api:run-archive", args=[run.run_id]),
        )

    @staticmethod
    def _file_row(run, entry):
        url = reverse("download", args=[run.run_id, entry["name"]])
        preview = (
            format_html('<img class="parseq-thumbnail" src="{}" alt="{}" loading="lazy">', url, entry["name"])
            if display.is_previewable(entry)
            else ""
        )
        return format_html(
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td title="{} bytes">{}</td><td>{}</td></tr>',
            preview,
            url,
            entry["name"],
            entry["size"],
            display.human_size(entry["size"]),
            entry["content_type"],
        )

    @admin.display(description="error or reason")
    def error_display(self, run):
        return format_html('<pre class="parseq-pre parseq-error">{}</pre>', run.error)

    @admin.display(description="log")
    def log_display(self, run):
        if not run.log:
            return "Nothing was printed." if run.is_finished else "The log arrives when the run ends."
        return display.log_tail(run.log, full_url=reverse("api:run-log", args=[run.run_id]))

    @admin.display(description="script")
    def script_display(self, run):
        if not run.script_sha256:
            return "-"
        current = run.parser.script_sha256
        same = (
            "the parser's current script" if current == run.script_sha256 else "the script has changed since this run"
        )
        return format_html('SHA-256 <code class="parseq-hash">{}</code> ({})', run.script_sha256, same)

    @admin.display(description="settings")
    def settings_display(self, run):
        if not run.parser_settings:
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            ((name.replace("_", " "), _setting_text(value)) for name, value in run.parser_settings.items()),
        )
        return format_html('<table class="parseq-settings"><tbody>{}</tbody></table>', rows)


def _setting_text(value):
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return value


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail: read-only for everyone, superusers included; entries outlive their parsers."""

    list_display = ["time", "username", "action", "source", "parser_link", "run_link", "what"]
    list_filter = ["action", "source"]
    search_fields = ["parser_name", "username"]
    date_hierarchy = "time"
    fields = ["time", "username", "action", "source", "parser_link", "run_link", "what"]
    readonly_fields = fields

    def get_queryset(self, request):
        # Whether each entry's parser still exists, in the list's one query: a deleted one's entries keep its id.
        return (
            super()
            .get_queryset(request)
            .annotate(parser_exists=Exists(Parser.objects.filter(pk=OuterRef("parser_id"))))
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="parser", ordering="parser_name")
    def parser_link(self, entry):
        if not entry.parser_exists:
            return f"{entry.parser_name} (deleted)"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:core_parser_change", args=[entry.parser_id]), entry.parser_name
        )

    @admin.display(description="run")
    def run_link(self, entry):
        if not entry.run_id:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[entry.run_id]), entry.run_id)

    @admin.display(description="what changed")
    def what(self, entry):
        return ", ".join(entry.fields) or "-"
