"""Dramatiq actors. They only call services."""

import dramatiq
from django.conf import settings
from django.db import DatabaseError

from parseq.core import services
from parseq.logs import about_run

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
    time_limit=(settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE) * 1000,
)
def execute_run(run_id):
    with about_run(run_id):
        services.execute_run(run_id=run_id)
