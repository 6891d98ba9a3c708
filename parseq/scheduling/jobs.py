"""The APScheduler jobs of Parseq: a parser's schedule came due (one job per parser), and the cleanup of old runs."""

import logging

from django.utils import timezone

from parseq.core import retention
from parseq.scheduling import services

logger = logging.getLogger(__name__)

FIRE = "parseq.scheduling.jobs:fire"
JOB_ID_PREFIX = "parser-"
PRUNE = "parseq.scheduling.jobs:prune_runs"
PRUNE_JOB_ID = "prune-runs"


def job_id(parser_id):
    return f"{JOB_ID_PREFIX}{parser_id}"


def fire(parser_id, *, due_times=None, active_since=None):
    if not due_times:
        raise RuntimeError("fire() needs the times it is due for: APScheduler must run it with the DueTimesExecutor")
    return services.fire_schedule(
        parser_id=parser_id, due_times=due_times, now=timezone.now(), active_since=active_since
    )


def prune_runs(*, due_times=None):
    """Delete the runs beyond the retention limits and log what went. `due_times` is not needed: any time will do."""
    report = retention.prune_runs()
    if report.total:
        logger.info("retention: %s", report)
    else:
        logger.debug("retention: nothing to delete")
    return report
