"""Read-only questions about schedules."""

from django.conf import settings
from django.db.models import CharField, Max, OuterRef, Subquery, Value
from django.db.models.functions import Cast, Concat
from django_apscheduler.models import DjangoJob

from parseq.core.models import Parser
from parseq.scheduling.coordination import coordinator_for_database
from parseq.scheduling.jobs import JOB_ID_PREFIX


def with_next_run(parsers):
    """Annotate `next_run_time`: when the active scheduler will next fire each parser (None: never)."""
    job = DjangoJob.objects.filter(id=Concat(Value(JOB_ID_PREFIX), Cast(OuterRef("pk"), CharField())))
    return parsers.annotate(next_run_time=Subquery(job.values("next_run_time")[:1]))


def last_due(*, parser_id):
    """The latest due time that has a run (or a recorded skip) of this parser."""
    return Parser.objects.filter(pk=parser_id).aggregate(last=Max("runs__scheduled_for"))["last"]


def schedules_fingerprint():
    """Changes whenever a parser is added, deleted or saved, or a job is removed behind our back."""
    parsers = Parser.objects.aggregate(count=Max("pk"), changed=Max("updated_time"))
    return Parser.objects.count(), parsers["count"], parsers["changed"], DjangoJob.objects.count()


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
