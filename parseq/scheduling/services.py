"""What happens when a schedule comes due: a run, or a skip the user can see, never both and never two."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_apscheduler.models import DjangoJobExecution

from parseq.core.models import Parser, Run
from parseq.core.services import enqueue_run

logger = logging.getLogger(__name__)
JOB_EXECUTIONS_KEPT_SECONDS = 7 * 24 * 3600


def fire_schedule(*, parser_id, due_times, now):
    """Start the run a parser's schedule is due for, or record why it was skipped. Returns the new run.

    `due_times` are the times the schedule came due since it last fired, oldest first; more
    than one means the earlier ones were missed while no scheduler ran. They are coalesced:
    the newest runs if it is within the misfire grace period, and a skipped run records the
    others. Each due time gets at most one run, even if two schedulers fire it.
    """
    parser = Parser.objects.filter(pk=parser_id, enabled=True).first()
    if parser is None:
        return None  # deleted or disabled a moment ago: the scheduler drops its job
    due, missed = due_times[-1], due_times[:-1]
    try:
        with transaction.atomic():
            return _run_or_skip(parser=parser, due=due, missed=missed, now=now)
    except IntegrityError:
        logger.info("parser %s: due time %s was handled already (another scheduler?)", parser_id, due)
        return None


def _run_or_skip(*, parser, due, missed, now):
    grace = timedelta(seconds=settings.MISFIRE_GRACE)
    if now - due > grace:
        reason = (
            f"{_count(missed, due)} due while no scheduler was running, the last at {_when(due)}: "
            f"older than the misfire grace period of {_duration(grace)} (PARSEQ_MISFIRE_GRACE)"
        )
        return record_skip(parser=parser, scheduled_for=due, reason=reason)
    if missed:
        span = _when(missed[0]) if len(missed) == 1 else f"from {_when(missed[0])} to {_when(missed[-1])}"
        reason = (
            f"{_count(missed)} due {span} while no scheduler was running: coalesced into the run due at {_when(due)}"
        )
        record_skip(parser=parser, scheduled_for=missed[0], reason=reason)
    if parser.overlap == Parser.Overlap.SKIP:
        active = parser.runs.filter(status__in=[Run.Status.ENQUEUED, Run.Status.RUNNING]).first()
        if active is not None:
            reason = (
                f"due at {_when(due)} while run {active.run_id} was still {active.status} "
                "(this parser's overlap policy is skip)"
            )
            return record_skip(parser=parser, scheduled_for=due, reason=reason)
    return enqueue_run(parser=parser, trigger=Run.Trigger.SCHEDULE, scheduled_for=due)


def set_automatic_runs(*, parsers, enabled):
    """Switch automatic runs on or off for `parsers`; returns how many changed. Saves each, so the scheduler hears."""
    changed = 0
    for parser in parsers:
        if parser.enabled != enabled:
            parser.enabled = enabled
            parser.save(update_fields=["enabled", "updated_time"])
            changed += 1
    return changed


def prune_job_executions():
    """Forget APScheduler's execution records after a week: the runs are the lasting history."""
    DjangoJobExecution.objects.delete_old_job_executions(max_age=JOB_EXECUTIONS_KEPT_SECONDS)


def record_skip(*, parser, scheduled_for, reason):
    """A `skipped` run in the history: a due automatic run that did not start, and why."""
    logger.warning("parser %s: skipped %s", parser.pk, reason)
    return Run.objects.create(
        parser=parser,
        trigger=Run.Trigger.SCHEDULE,
        status=Run.Status.SKIPPED,
        scheduled_for=scheduled_for,
        finished_time=timezone.now(),
        error=f"Skipped: {reason}.",
    )


def _count(missed, due=None):
    count = len(missed) + (1 if due else 0)
    return "1 scheduled run" if count == 1 else f"{count} scheduled runs"


def _when(moment):
    return moment.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(delta):
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
