"""Dramatiq actors. They only call services."""

import dramatiq
from django.conf import settings

from parseq.core import services


@dramatiq.actor(
    queue_name="runs",
    max_retries=0,
    # Above the longest sandbox a parser may have, so the sandbox's own deadline always fires first.
    time_limit=(settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE) * 1000,
)
def execute_run(run_id):
    services.execute_run(run_id=run_id)
