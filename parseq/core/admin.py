from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_dramatiq.models import Task

from parseq.core import selectors, services
from parseq.core.environment import MASK, masked_text, parse_environment_text
from parseq.core.models import Parser, Run
from parseq.scheduling import selectors as schedule_selectors
from parseq.scheduling import services as schedule_services

# django_dramatiq's task table stays empty (its AdminMiddleware is off): runs are the history.
admin.site.unregister(Task)


class ParserForm(forms.ModelForm):
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
        self.fields["environment_text"].initial = masked_text(self.instance.environment or {})

    def clean_environment_text(self):
        text = self.cleaned_data["environment_text"]
        environment, problems = parse_environment_text(text, previous=self.instance.environment or {})
        if problems:
            raise forms.ValidationError(problems)
        self.instance.environment = environment
        return masked_text(environment)

    def clean(self):
        cleaned = super().clean()
        script, restricted = cleaned.get("script"), cleaned.get("restricted", False)
        newly_restricted = "restricted" in self.changed_data and restricted
        if script and ("script" in self.changed_data or newly_restricted):
            try:
                services.check_script(uploaded_file=script, restricted=restricted)
            except forms.ValidationError as error:
                self.add_error("script", error)
        return cleaned


@admin.register(Parser)
class ParserAdmin(admin.ModelAdmin):
    form = ParserForm
    list_display = ["name", "enabled", "schedule", "next_run", "last_run_status", "last_run_time"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    actions = ["run_now", "enable_automatic_runs", "disable_automatic_runs"]
    change_form_template = "admin/core/parser/change_form.html"
    change_list_template = "admin/core/parser/change_list.html"
    readonly_fields = ["next_run", "recent_runs"]
    fieldsets = [
        (None, {"fields": Parser.SCRIPT_FIELDS}),
        ("Automatic runs", {"fields": (*Parser.SCHEDULE_FIELDS, "next_run")}),
        ("Sandbox", {"fields": (*Parser.SANDBOX_FIELDS, "environment_text")}),
        ("History", {"fields": ("recent_runs",)}),
    ]

    def get_queryset(self, request):
        return schedule_selectors.with_last_due(selectors.parsers_with_last_run())

    def get_fieldsets(self, request, obj=None):
        return self.fieldsets if obj else self.fieldsets[:-1]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), **_scheduler_context()}
        backend = services.sandbox_backend()
        if backend == "subprocess":
            extra_context["sandbox_warning"] = selectors.SANDBOX_DESCRIPTIONS[backend]
        return super().changeform_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), **_scheduler_context()})

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
        if not runs:
            return "-"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:core_run_change", args=[run.run_id]),
                    _moment(run.created_time),
                    run.status,
                    run.trigger,
                    _moment(run.scheduled_for) if run.scheduled_for else "-",
                    run.error.splitlines()[-1][:200] if run.error else "",
                )
                for run in runs
            ),
        )
        all_runs = reverse("admin:core_run_changelist") + f"?parser__id__exact={parser.pk}"
        return format_html(
            "<table><thead><tr><th>created</th><th>status</th><th>trigger</th><th>due</th><th>error or reason</th>"
            '</tr></thead><tbody>{}</tbody></table><p><a href="{}">All runs of this parser</a></p>',
            rows,
            all_runs,
        )

    @admin.display(description="last run", ordering="last_run_status")
    def last_run_status(self, parser):
        return parser.last_run_status or "-"

    @admin.display(description="last run time", ordering="last_run_time")
    def last_run_time(self, parser):
        return parser.last_run_time

    @admin.action(description="Run now")
    def run_now(self, request, queryset):
        for parser in queryset:
            run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
            self.message_user(request, format_html("{}: run {} enqueued.", parser.name, _run_link(run)))

    @admin.action(description="Switch automatic runs on")
    def enable_automatic_runs(self, request, queryset):
        changed = schedule_services.set_automatic_runs(parsers=queryset, enabled=True)
        self.message_user(request, f"Automatic runs switched on for {changed} parser(s).")

    @admin.action(description="Switch automatic runs off")
    def disable_automatic_runs(self, request, queryset):
        changed = schedule_services.set_automatic_runs(parsers=queryset, enabled=False)
        self.message_user(request, f"Automatic runs switched off for {changed} parser(s).")

    def get_urls(self):
        run_url = path("<int:parser_id>/run/", self.admin_site.admin_view(self.run_now_view), name="core_parser_run")
        return [run_url, *super().get_urls()]

    def run_now_view(self, request, parser_id):
        if request.method != "POST" or not self.has_change_permission(request):
            return HttpResponseRedirect(reverse("admin:core_parser_change", args=[parser_id]))
        parser = get_object_or_404(Parser, pk=parser_id)
        run = services.enqueue_run(parser=parser, trigger=Run.Trigger.MANUAL)
        self.message_user(request, format_html("Run {} enqueued.", _run_link(run)), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:core_run_change", args=[run.run_id]))


RECENT_RUNS = 10


def _moment(value):
    """A time to the second, in the server's timezone, named: schedules are about seconds."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def _scheduler_context():
    return {"scheduler_inactive": not schedule_selectors.scheduler_is_active()}


def _run_link(run):
    return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[run.run_id]), run.run_id)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["run_id", "parser", "status", "created_time", "duration_display", "trigger", "scheduled_for"]
    list_filter = ["status", "parser", "trigger"]
    list_select_related = ["parser"]
    date_hierarchy = "created_time"
    fields = [
        "run_id",
        "parser",
        "status",
        "trigger",
        "scheduled_for",
        "created_time",
        "started_time",
        "finished_time",
        "duration_display",
        "result_files",
        "error_display",
        "log_display",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="duration")
    def duration_display(self, run):
        return f"{run.duration.total_seconds():.1f} s" if run.duration else "-"

    @admin.display(description="files")
    def result_files(self, run):
        if run.status == Run.Status.ERROR:
            return format_html('<a href="{}">error.txt</a>', reverse("download", args=[run.run_id, "error.txt"]))
        if not run.files:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a> ({} bytes, {})</li>',
                (
                    (reverse("download", args=[run.run_id, f["name"]]), f["name"], f["size"], f["content_type"])
                    for f in run.files
                ),
            ),
        )

    @admin.display(description="error or reason")
    def error_display(self, run):
        return format_html("<pre>{}</pre>", run.error) if run.error else "-"

    @admin.display(description="log")
    def log_display(self, run):
        return format_html('<pre style="max-height: 40em; overflow: auto">{}</pre>', run.log) if run.log else "-"
