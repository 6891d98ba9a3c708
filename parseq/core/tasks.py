"""Dramatiq actors, and the hand-over of runs to them. They only call services."""

import logging

import dramatiq
from django.conf import settings
from django.db import DatabaseError
from django.dispatch import receiver

from parseq.core import events, execution, sending, services
from parseq.logs import about_run

logger = logging.getLogger(__name__)

MAX_INFRASTRUCTURE_RETRIES = 5


def retry_when_the_database_failed(retries_so_far, exception):
    """A script's failure is recorded, never raised; only our own infrastructure can fail an actor."""
    return retries_so_far < MAX_INFRASTRUCTURE_RETRIES and isinstance(exception, DatabaseError)


@dramatiq.actor(
    queue_name="runs",
    retry_when=retry_when_the_database_failed,
    min_backoff=1000,
    max_backoff=30000,
    # Above the longest sandbox a parser may have, so the sandbox's own deadline always fires first.
    # Beyond it, the time a finished run's outcome may wait for the database to come back.
    time_limit=(settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE + settings.RECORD_RETRY_SECONDS) * 1000,
)
def execute_run(run_id):
    with about_run(run_id):
        execution.execute_run(run_id=run_id)


@receiver(events.runs_enqueued)
def send_to_workers(sender, *, run_ids, if_refused="fail", **kwargs):
    """One message a run, each confirmed by the broker within PARSEQ_BROKER_TIMEOUT (parseq/core/sending.py).

    A run the broker does not take in time, with `if_refused="fail"`, ends in error at once, which
    the user who asked for it is told (should its message arrive later all the same, the claim
    drops it). With "wait", it and the runs after it stay enqueued, noted, for the reaper's next sweep.
    """
    for position, run_id in enumerate(run_ids):
        try:
            sending.sender.send(lambda run_id=run_id: execute_run.send(str(run_id)), timeout=settings.BROKER_TIMEOUT)
        except Exception as error:
            if if_refused == "wait":
                logger.warning("the broker did not take run %s (%s); the reaper sends it again", run_id, error)
                services.note_runs_not_sent(run_ids=run_ids[position:], why=error)
                return  # the broker is away: the runs after it wait for the next sweep too
            logger.exception("could not enqueue run %s", run_id)
            services.fail_unsent_run(run_id=run_id, error=error)
