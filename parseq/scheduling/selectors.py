"""Read-only questions about schedules."""

from django.conf import settings
from django.db.models import Count, Max, OuterRef, Subquery
from django_apscheduler.models import DjangoJob

from parseq.core.models import Parser, Run
from parseq.core.triggers import first_due, parser_trigger
from parseq.scheduling.coordination import coordinator_for_database


def with_last_due(parsers):
    """Annotate `last_due`: the latest due time that has a run (or a recorded skip) of each parser."""
    newest = Run.objects.filter(parser=OuterRef("pk"), scheduled_for__isnull=False).order_by("-scheduled_for")
    return parsers.annotate(last_due=Subquery(newest.values("scheduled_for")[:1]))


def next_run_time(*, parser, now):
    """When the schedule is next due, as the scheduler computes it; None when it never is.

    The scheduler sets each new job's time with this same function, so a page shows the
    right time the moment an edit is saved, before the scheduler has heard of it.
    """
    trigger = parser_trigger(parser, default_timezone=settings.TIME_ZONE)
    if trigger is None:
        return None
    if not hasattr(parser, "last_due"):
        parser = with_last_due(Parser.objects.filter(pk=parser.pk)).get()
    return first_due(trigger, now=now, last_due=parser.last_due)


def schedules_fingerprint():
    """Changes whenever a parser is added, deleted or saved, or a job is removed behind our back."""
    parsers = Parser.objects.aggregate(count=Count("pk"), newest=Max("pk"), changed=Max("updated_time"))
    return parsers["count"], parsers["newest"], parsers["changed"], DjangoJob.objects.count()


def scheduler_is_active():
    return coordinator_for_database().leader_exists()


def describe_schedule(parser):
    """The parser's schedule in a few words, for lists."""
    if parser.cron:
        schedule = f"cron {parser.cron} ({parser.cron_timezone or settings.TIME_ZONE})"
    elif parser.scheduled_time and parser.repeat_after:
        schedule = f"every {parser.repeat_after}"
    elif parser.scheduled_time:
        schedule = "once"
    else:
        return "-"
    return schedule if parser.enabled else f"{schedule}, off"
