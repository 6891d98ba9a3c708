"""Scheduling's part of the parser pages: the schedule and its next run, switching automatic runs, and a
notice when no scheduler is running.
"""

from django.contrib import admin
from django.template.loader import render_to_string
from django.utils import timezone

from parseq.core import display
from parseq.core.admin import ParserAdmin
from parseq.core.models import AuditEntry
from parseq.scheduling import selectors, services


@admin.display(description="schedule")
def schedule(parser):
    return selectors.describe_schedule(parser)


@admin.display(description="next run")
def next_run(parser):
    if parser.pk is None:
        return "-"
    due = selectors.next_run_time(parser=parser, now=timezone.now())
    return display.moment(due) if due else "-"


@admin.action(description="Switch automatic runs on", permissions=["change"])
def enable_automatic_runs(modeladmin, request, queryset):
    changed = services.set_automatic_runs(
        parsers=queryset, enabled=True, user=request.user, source=AuditEntry.Source.ADMIN
    )
    modeladmin.message_user(request, f"Automatic runs switched on for {changed} parser(s).")


@admin.action(description="Switch automatic runs off", permissions=["change"])
def disable_automatic_runs(modeladmin, request, queryset):
    changed = services.set_automatic_runs(
        parsers=queryset, enabled=False, user=request.user, source=AuditEntry.Source.ADMIN
    )
    modeladmin.message_user(request, f"Automatic runs switched off for {changed} parser(s).")


def scheduler_inactive():
    """A notice atop the parser pages while no scheduler runs: automatic runs are waiting."""
    if selectors.scheduler_is_active():
        return None
    return render_to_string("admin/scheduling/scheduler_inactive.html")


ParserAdmin.add_column(schedule)
ParserAdmin.add_column(next_run)
ParserAdmin.add_panel(next_run, section="Automatic runs", on_new_parsers=True)
ParserAdmin.add_action(enable_automatic_runs)
ParserAdmin.add_action(disable_automatic_runs)
ParserAdmin.add_annotation(selectors.with_last_due)  # the next run's time follows from the last due time
ParserAdmin.add_notice(scheduler_inactive)
