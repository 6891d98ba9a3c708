"""What happens when a schedule comes due: a run, or a skip the user can see, never both and never two."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django_apscheduler.models import DjangoJobExecution

from parseq.core import audit
from parseq.core.display import moment
from parseq.core.models import AuditEntry, Parser, Run
from parseq.core.services import create_runs

logger = logging.getLogger(__name__)
JOB_EXECUTIONS_KEPT_SECONDS = 7 * 24 * 3600


def fire_schedule(*, parser_id, due_times, now, active_since=None):
    """Start the run a parser's schedule is due for, or record why it was skipped. Returns the new run.

    `due_times` are the times the schedule came due since it last fired, oldest first; more
    than one means the earlier ones were missed: while no scheduler ran, or, from `active_since`
    (when the scheduler firing them became the active one), while it was held up. They are
    coalesced: the newest runs if it is within the misfire grace period, and a skipped run records
    the others. Each due time gets at most one run, even if two schedulers fire it.
    """
    return fire_schedules(due_times={parser_id: due_times}, now=now, active_since=active_since).get(parser_id)


def fire_schedules(*, due_times, now, active_since=None):
    """Fire many schedules as `fire_schedule` fires one, in one transaction. Returns {parser id: its new run}.

    `due_times` maps each parser's id to its due times. For a scheduler with many parsers due at
    once: one query for the parsers, one INSERT for all their runs and skips, the messages sent after
    the commit. If a due time was handled already (another scheduler?), the database refuses the whole
    INSERT: then each parser is fired on its own, so that the others still run.
    """
    # A parser deleted or disabled a moment ago gets no entry (and the scheduler drops its job).
    parsers = _with_busy_run(Parser.objects.filter(pk__in=list(due_times), enabled=True))
    planned = {
        parser.pk: _runs_or_skips(parser=parser, due_times=due_times[parser.pk], now=now, active_since=active_since)
        for parser in parsers
    }
    try:
        with transaction.atomic():
            # Nobody waits on a scheduled run: should the broker not take it, it waits for the reaper's resend.
            create_runs(runs=[run for runs in planned.values() for run in runs], if_refused="wait")
    except IntegrityError:
        if len(planned) > 1:  # each alone: only what was handled already is refused
            fired = {
                pk: fire_schedule(parser_id=pk, due_times=due_times[pk], now=now, active_since=active_since)
                for pk in planned
            }
            return {pk: run for pk, run in fired.items() if run is not None}
        for pk in planned:
            logger.info("parser %s: due time %s was handled already (another scheduler?)", pk, due_times[pk][-1])
        return {}
    for runs in planned.values():
        for run in runs:
            if run.status == Run.Status.SKIPPED:
                logger.warning("parser %s: %s", run.parser_id, run.error)
    return {pk: runs[-1] for pk, runs in planned.items()}


def _with_busy_run(parsers):
    """Annotate each parser's newest run still `enqueued` or `running` (its id and status): the overlap rule's."""
    busy = Run.objects.filter(parser=OuterRef("pk"), status__in=Run.ACTIVE_STATUSES).order_by("-created_time")
    return parsers.annotate(
        busy_run_id=Subquery(busy.values("run_id")[:1]), busy_status=Subquery(busy.values("status")[:1])
    )


def _runs_or_skips(*, parser, due_times, now, active_since):
    """The unsaved runs a parser's due times become: the run (or skip) for the newest due time comes last."""
    due, missed = due_times[-1], due_times[:-1]
    grace = timedelta(seconds=settings.MISFIRE_GRACE)
    if now - due > grace:
        reason = (
            f"{_count(missed, due)} due {_while(due_times[0], active_since)}, the last at {moment(due)}: "
            f"older than the misfire grace period of {_duration(grace)} (PARSEQ_MISFIRE_GRACE)"
        )
        return [skipped_run(parser=parser, scheduled_for=due, reason=reason)]
    runs = []
    if missed:
        span = moment(missed[0]) if len(missed) == 1 else f"from {moment(missed[0])} to {moment(missed[-1])}"
        when = _while(missed[0], active_since)
        reason = f"{_count(missed)} due {span} {when}: coalesced into the run due at {moment(due)}"
        runs.append(skipped_run(parser=parser, scheduled_for=missed[0], reason=reason))
    if parser.overlap == Parser.Overlap.SKIP and parser.busy_run_id is not None:
        reason = (
            f"due at {moment(due)} while run {parser.busy_run_id} was still {parser.busy_status} "
            "(this parser's overlap policy is skip)"
        )
        return [*runs, skipped_run(parser=parser, scheduled_for=due, reason=reason)]
    return [*runs, Run(parser=parser, trigger=Run.Trigger.SCHEDULE, status=Run.Status.ENQUEUED, scheduled_for=due)]


def set_automatic_runs(*, parsers, enabled, user, source):
    """Switch automatic runs on or off for `parsers`; returns how many changed. Saves each, so the scheduler hears."""
    changed = 0
    for parser in parsers:
        if parser.enabled != enabled:
            parser.enabled = enabled
            with transaction.atomic():
                parser.save(update_fields=["enabled", "updated_time"])
                audit.record(
                    user=user, action=AuditEntry.Action.CHANGED, source=source, parser=parser, fields=["enabled"]
                )
            changed += 1
    return changed


def prune_job_executions():
    """Forget APScheduler's execution records after a week: the runs are the lasting history."""
    DjangoJobExecution.objects.delete_old_job_executions(max_age=JOB_EXECUTIONS_KEPT_SECONDS)


def skipped_run(*, parser, scheduled_for, reason):
    """A `skipped` run for the history (unsaved): a due automatic run that did not start, and why."""
    return Run(
        parser=parser,
        trigger=Run.Trigger.SCHEDULE,
        status=Run.Status.SKIPPED,
        scheduled_for=scheduled_for,
        finished_time=timezone.now(),
        error=f"Skipped: {reason}.",
    )


def _while(first_missed, active_since):
    """Why due times were missed: before the active scheduler took over, or while it was held up itself."""
    if active_since is not None and first_missed >= active_since:
        return "while the scheduler was held up (the database or the broker did not answer in time)"
    return "while no scheduler was running"


def _count(missed, due=None):
    count = len(missed) + (1 if due else 0)
    return "1 scheduled run" if count == 1 else f"{count} scheduled runs"


def _duration(delta):
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
