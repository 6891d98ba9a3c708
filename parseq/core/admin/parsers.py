"""A parser's pages: its list, its form with its history, and Run now.

Other apps add their parts from their own admin modules, through ParserAdmin's class methods:
a panel in a section of the form's page (`add_panel`), a column of the list (`add_column`),
an action (`add_action`), what the list's query needs (`add_annotation`) and a notice atop
both pages (`add_notice`). The core names none of them.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html

from parseq.core import audit, display, execution, history, parameters, selectors, services
from parseq.core.admin.common import owned_objects_go_along, run_link
from parseq.core.admin.forms import ParserForm
from parseq.core.admin.versions import ScriptVersionsAdmin
from parseq.core.environment import MASK, parse_environment_text
from parseq.core.models import AuditEntry, Parser, Run

# What only those who may change a parser read; never a filter of a list.
SECRET_MODEL_FIELDS = {"script", "environment", "webhook_url"}
RECENT_RUNS = 10
RECENT_AUDIT_ENTRIES = 10
SUCCESS_RATE_RUNS = 20


@admin.register(Parser)
class ParserAdmin(ScriptVersionsAdmin, admin.ModelAdmin):
    form = ParserForm
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    # Each row computes its next due time and draws a dozen cells: 50 a page keep a page of 10,000 parsers quick.
    list_per_page = 50
    actions = ["run_now"]
    change_form_template = "admin/core/parser/change_form.html"
    change_list_template = "admin/core/parser/change_list.html"
    readonly_fields = ["recent_runs", "api_links", "audit_trail", "variable_names", "script_versions"]
    # A parser's secrets: shown only to those who may change the parser (README: Permissions).
    SECRET_FIELDS = ("script_text", "script_message", "environment_text", "webhook_url")
    fieldsets = [
        ("History", {"fields": ("recent_runs", "api_links", "audit_trail")}),
        (None, {"fields": (*Parser.SCRIPT_FIELDS, "script_text", "script_message", "script_versions")}),
        ("Automatic runs", {"fields": Parser.SCHEDULE_FIELDS}),
        ("Sandbox", {"fields": (*Parser.SANDBOX_FIELDS, "environment_text")}),
        ("Failure alerts", {"fields": Parser.ALERT_FIELDS}),
        ("Retention", {"fields": Parser.RETENTION_FIELDS}),
    ]

    # What other apps add (see the module's docstring).
    panels = []  # (section, name, also on a new parser's page)
    columns = []  # names, shown after "enabled"
    annotations = []  # queryset -> queryset
    notices = []  # () -> HTML or None

    @classmethod
    def add_panel(cls, panel, *, section, on_new_parsers=False):
        """Show `panel` (an admin.display function of a parser) at the end of `section` of the form's page."""
        setattr(cls, panel.__name__, staticmethod(panel))
        cls.panels.append((section, panel.__name__, on_new_parsers))

    @classmethod
    def add_column(cls, column):
        """Show `column` (an admin.display function of a parser) in the list, after "enabled"."""
        setattr(cls, column.__name__, staticmethod(column))
        cls.columns.append(column.__name__)

    @classmethod
    def add_action(cls, action):
        cls.actions = [*cls.actions, action]

    @classmethod
    def add_annotation(cls, annotate):
        cls.annotations.append(annotate)

    @classmethod
    def add_notice(cls, notice):
        cls.notices.append(notice)

    def get_queryset(self, request):
        parsers = selectors.parsers_with_last_run()
        for annotate in self.annotations:
            parsers = annotate(parsers)
        return parsers

    def get_list_display(self, request):
        return ["name", "enabled", *self.columns, "last_run_status", "last_run_time"]

    def get_readonly_fields(self, request, obj=None):
        readonly = [*super().get_readonly_fields(request, obj), *(name for _, name, _ in self.panels)]
        return readonly if self.has_change_permission(request, obj) else [*readonly, "script_versions_unlinked"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (section, {**options, "fields": [*options["fields"], *self._panels_of(section, new=obj is None)]})
            for section, options in self.fieldsets
        ]
        if obj is None:
            return _without(fieldsets, sections=["History"])  # a new parser has no history yet
        if not request.user.has_perm("core.view_run"):
            # Its runs (errors, charts, success rate) are for those who may read runs, as in the run list.
            fieldsets = _without(fieldsets, fields=["recent_runs"])
        if not self.has_change_permission(request, obj):
            # Readers see the names of the variables, not their values; no script, no webhook URL; the
            # script's versions without their sources.
            fieldsets = _without(fieldsets, fields=self.SECRET_FIELDS)
            readers_fields = {"Sandbox": ["variable_names"], None: ["script_versions_unlinked"]}
            fieldsets = [(n, {"fields": [*o["fields"], *readers_fields.get(n, [])]}) for n, o in fieldsets]
            return _without(fieldsets, fields=["script_versions"])
        return fieldsets

    def _panels_of(self, section, *, new):
        return [name for where, name, on_new in self.panels if where == section and (on_new or not new)]

    def lookup_allowed(self, lookup, value, request=None):
        # The admin lets a list be filtered by any field in the query string: `?webhook_url__startswith=`
        # or `?environment__API_KEY__startswith=` would tell a reader a secret a letter at a time.
        return lookup.split(LOOKUP_SEP)[0] not in SECRET_MODEL_FIELDS and super().lookup_allowed(lookup, value, request)

    def has_run_permission(self, request, obj=None):
        return request.user.has_perm("core.run_parser")

    def save_model(self, request, obj, form, change):
        message = form.cleaned_data.get("script_message", "")
        services.save_parser(parser=obj, user=request.user, source=AuditEntry.Source.ADMIN, script_message=message)

    def delete_model(self, request, obj):
        services.delete_parser(parser=obj, user=request.user, source=AuditEntry.Source.ADMIN)

    def delete_queryset(self, request, queryset):
        for parser in queryset:
            services.delete_parser(parser=parser, user=request.user, source=AuditEntry.Source.ADMIN)

    get_deleted_objects = owned_objects_go_along

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        notices = [*self._notices(), *self._sandbox_notices()]
        context = {
            **(extra_context or {}),
            "notices": notices,
            "can_run": self.has_run_permission(request),
            # A variable can send a script, and the secrets it holds, elsewhere: it is for those who may change it.
            "can_give_variables": self.has_change_permission(request),
        }
        return super().changeform_view(request, object_id, form_url, context)

    def changelist_view(self, request, extra_context=None):
        context = {"live_fingerprint": selectors.live_fingerprint(scope="runs"), "notices": self._notices()}
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def _notices(self):
        return [html for notice in self.notices if (html := notice())]

    @staticmethod
    def _sandbox_notices():
        backend = execution.sandbox_backend()
        context = {
            "sandbox_warning": execution.SANDBOX_DESCRIPTIONS[backend] if backend in ("subprocess", None) else None,
            "limits_warning": execution.run_limits_warning(backend=backend),
        }
        return [render_to_string("admin/core/parser/sandbox_notices.html", context)] if any(context.values()) else []

    @admin.display(description="recent runs")
    def recent_runs(self, parser):
        succeeded, counted = selectors.success_rate(parser=parser, last=SUCCESS_RATE_RUNS)
        context = {
            "parser": parser,
            "runs": parser.runs.all()[:RECENT_RUNS],
            "succeeded": succeeded,
            "counted": counted,
            "percent": round(100 * succeeded / counted) if counted else None,
            "fingerprint": selectors.live_fingerprint(scope=f"parser:{parser.pk}"),
            "charts": history.parser_charts(parser=parser),
        }
        return render_to_string("admin/core/parser/panels/recent_runs.html", context)

    @admin.display(description="API")
    def api_links(self, parser):
        return render_to_string("admin/core/parser/panels/api_links.html", {"parser": parser})

    @admin.display(description="audit trail")
    def audit_trail(self, parser):
        entries = audit.entries_of(parser=parser, limit=RECENT_AUDIT_ENTRIES)
        return render_to_string("admin/core/parser/panels/audit_trail.html", {"parser": parser, "entries": entries})

    @admin.display(description="variables")
    def variable_names(self, parser):
        return ", ".join(f"{name}={MASK}" for name in sorted(parser.environment or {})) or "-"

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
            self._say_whether_enqueued(request, run, prefix=f"{parser.name}: ")

    def get_urls(self):
        run_url = path("<int:parser_id>/run/", self.admin_site.admin_view(self.run_now_view), name="core_parser_run")
        return [run_url, *self.version_urls(), *super().get_urls()]

    def run_now_view(self, request, parser_id):
        """Run now; with "Run with…", given variables (NAME=value lines) and a timeout for this run only."""
        parser_page = reverse("admin:core_parser_change", args=[parser_id])
        if request.method != "POST":
            return HttpResponseRedirect(parser_page)
        if not self.has_run_permission(request):
            raise PermissionDenied
        parser = get_object_or_404(Parser, pk=parser_id)
        try:
            given = _run_parameters_from(request.POST)
            if "environment" in given and not self.has_change_permission(request, parser):
                raise ValidationError(
                    {"environment": ["giving a run variables needs the permission to change its parser"]}
                )
        except ValidationError as error:
            problems = "; ".join(
                f"{field}: {problem}" for field, found in error.message_dict.items() for problem in found
            )
            self.message_user(request, f"Not run: {problems}", messages.ERROR)
            return HttpResponseRedirect(parser_page)
        run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL, user=request.user, parameters=given)
        self._say_whether_enqueued(request, run)
        return HttpResponseRedirect(reverse("admin:core_run_change", args=[run.run_id]))

    def _say_whether_enqueued(self, request, run, *, prefix=""):
        """Run X enqueued; or, when the broker refused it, that it is not and why (the run, in error, says so)."""
        run.refresh_from_db()
        if not run.refused_by_the_broker:
            self.message_user(request, format_html("{}Run {} enqueued.", prefix, run_link(run)), messages.SUCCESS)
        else:
            message = format_html("{}Run {} was not enqueued: {}", prefix, run_link(run), run.error)
            self.message_user(request, message, messages.ERROR)


def _run_parameters_from(form):
    """The parameters "Run with…" posts, as a run keeps them; raises ValidationError({field: problems})."""
    environment, problems = parse_environment_text(form.get("environment_text", ""), previous={})
    if problems:
        raise ValidationError({"environment": problems})
    timeout = form.get("timeout", "").strip()
    if timeout and not (timeout.isascii() and timeout.isdigit() and len(timeout) <= 9):
        raise ValidationError({"timeout": ["the timeout must be a whole number of seconds"]})
    return parameters.run_parameters(environment=environment, timeout=int(timeout) if timeout else None)


def _without(fieldsets, *, sections=(), fields=()):
    """`fieldsets` without the named sections and fields."""
    return [
        (name, {**options, "fields": [f for f in options["fields"] if f not in fields]})
        for name, options in fieldsets
        if name not in sections
    ]
