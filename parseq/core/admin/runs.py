"""A run's pages: the list, and a run's record with its files, log and what it ran; Cancel."""

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from parseq.core import display, previews, selectors, services
from parseq.core.admin.common import CappedCountPaginator, owned_objects_go_along
from parseq.core.environment import masked
from parseq.core.models import ERROR_FILENAME, LARGEST_ID, AuditEntry, Parser, Run

# What a run holds that only those who may change its parser read (the values it was given); never a filter.
SECRET_RUN_FIELDS = {"parameters"}


class RunsOfParser(admin.SimpleListFilter):
    """The runs of one parser, as its pages link them; the side bar names the chosen parser only (listing every
    parser would be thousands of links on every page of runs).
    """

    title = "parser"
    parameter_name = "parser__id__exact"

    def lookups(self, request, model_admin):
        parser_id = self.parser_id()
        name = Parser.objects.filter(pk=parser_id).values_list("name", flat=True).first() if parser_id else None
        return [(str(parser_id), name)] if name else []

    def has_output(self):
        return self.value() is not None  # shown, and applied, once a parser is chosen (an id that is none: no run)

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.parser_id() is None:
            raise IncorrectLookupParameters(f"{self.value()!r} is not a parser's id")
        return queryset.filter(parser_id=self.parser_id())

    def parser_id(self):
        value = self.value() or ""
        return int(value) if value.isdigit() and 1 <= int(value) <= LARGEST_ID else None


# How long after a cancel its worker may take to stop the sandbox and write what it printed.
CANCELLED_LOG_WAIT = timedelta(seconds=15)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["short_id", "parser_link", "status_badge", "created_and_trigger", "duration", "error_line"]
    list_display_links = None  # the short id is the link (a column of full UUIDs wraps over four lines)
    # No date hierarchy: it reads the years and months of every run listed. Of the parsers, only the chosen one.
    list_filter = [RunsOfParser, "status", "trigger", ("created_time", admin.DateFieldListFilter)]
    # The box finds a run by its parser's name, its id (the 8 digits the list shows will do) or its error's text
    # (get_search_results; the fields only show the box).
    search_fields = ["parser__name", "error"]
    search_help_text = "A parser's name, a run's id (its first 8 digits will do) or a word of its error."
    list_select_related = ["parser"]
    paginator = CappedCountPaginator
    show_full_result_count = False  # a second count of every run
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
                    "attempt_display",
                ]
            },
        ),
        ("Error", {"fields": ["error_display"]}),
        ("Result files", {"fields": ["result_files"]}),
        ("Log", {"fields": ["log_display"]}),
        ("What it ran", {"fields": ["script_display", "parameters_display", "settings_display"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a run is a record: it is only ever cancelled

    get_deleted_objects = owned_objects_go_along

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

    def lookup_allowed(self, lookup, value, request=None):
        # `?parameters__environment__TOKEN__startswith=` would tell a reader a run's variable a letter at a time.
        return lookup.split(LOOKUP_SEP)[0] not in SECRET_RUN_FIELDS and super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request, queryset, search_term):
        return selectors.runs_matching(runs=queryset, text=search_term), False

    @admin.display(description="run", ordering="run_id")
    def short_id(self, run):
        url = reverse("admin:core_run_change", args=[run.run_id])
        return format_html(
            '<a href="{}" title="{}" class="parseq-run-id">{}</a>', url, run.run_id, display.short_id(run)
        )

    @admin.display(description="created", ordering="created_time")
    def created_and_trigger(self, run):
        """When; what started it (and a due time) on hover: columns of their own would not fit 1280 px."""
        due = f", due {display.moment(run.scheduled_for)}" if run.scheduled_for else ""
        return format_html('<span title="{}{}">{}</span>', run.trigger, due, display.moment(run.created_time))

    @admin.display(description="error")
    def error_line(self, run):
        line = display.last_line(run.error)
        return format_html('<span class="parseq-error-line" title="{}">{}</span>', line, line) if line else ""

    @admin.display(description="due (schedule)", ordering="scheduled_for")
    def due(self, run):
        return display.moment(run.scheduled_for) if run.scheduled_for else "-"

    @admin.display(description="created", ordering="created_time")
    def created(self, run):
        return display.moment(run.created_time)

    @admin.display(description="started")
    def started(self, run):
        return display.moment(run.started_time) if run.started_time else "-"

    @admin.display(description="finished")
    def finished(self, run):
        return display.moment(run.finished_time) if run.finished_time else "-"

    @admin.display(description="parser", ordering="parser__name")
    def parser_link(self, run):
        return format_html('<a href="{}">{}</a>', reverse("admin:core_parser_change", args=[run.parser_id]), run.parser)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return display.status_badge(run)

    @admin.display(description="attempt")
    def attempt_display(self, run):
        context = {"run": run, "max_attempts": run.parser.max_attempts}
        return render_to_string("admin/core/run/panels/attempts.html", context)

    @admin.display(description="duration")
    def duration(self, run):
        return display.duration(run)

    @admin.display(description="files")
    def result_files(self, run):
        shown = previews.previews(run) if run.status == Run.Status.COMPLETED else []
        context = {"run": run, "error_filename": ERROR_FILENAME, "previews": shown}
        return render_to_string("admin/core/run/panels/result_files.html", context)

    @admin.display(description="error or reason")
    def error_display(self, run):
        return render_to_string("admin/core/run/panels/error.html", {"run": run})

    @admin.display(description="log")
    def log_display(self, run):
        if not run.log:
            if not run.is_finished:
                return "Nothing printed yet: lines show here as they are."
            if run.status == Run.Status.CANCELLED and timezone.now() - run.finished_time < CANCELLED_LOG_WAIT:
                return "Stopping: what it printed until now shows here in a moment."  # its worker writes it
            return "Nothing was printed."
        tail, shown, total = display.log_tail(run.log)
        context = {"run": run, "tail": tail, "shown": shown, "total": total}
        return render_to_string("admin/core/run/panels/log.html", context)

    @admin.display(description="script")
    def script_display(self, run):
        if not run.script_sha256:
            return "-"
        return render_to_string("admin/core/run/panels/script.html", {"run": run})

    @admin.display(description="given")
    def parameters_display(self, run):
        """What the run was given beside its parser's settings (Run with…, the API's body), values masked."""
        given = masked(run.parameters.get("environment", {}))
        rows = [(name, value) for name, value in given.items()]
        if "timeout" in run.parameters:
            rows.append(("timeout", f"{run.parameters['timeout']} s"))
        return render_to_string("admin/core/run/panels/settings.html", {"settings": rows}) if rows else "-"

    @admin.display(description="settings")
    def settings_display(self, run):
        if not run.parser_settings:
            return "-"
        rows = [(name.replace("_", " "), _setting_text(value)) for name, value in run.parser_settings.items()]
        return render_to_string("admin/core/run/panels/settings.html", {"settings": rows})


def _setting_text(value):
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return value
