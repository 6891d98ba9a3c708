"""Dramatiq actors of alerts. They only call services."""

import dramatiq
from django.conf import settings

from parseq.alerts import services
from parseq.core.tasks import retry_when_the_database_failed


@dramatiq.actor(
    # A queue of their own: a slow endpoint never delays runs, nor a busy worker an alert.
    queue_name="webhooks",
    retry_when=retry_when_the_database_failed,
    min_backoff=1000,
    max_backoff=30000,
    # The timeout bounds each wait on the socket (connect, send, answer), not the attempt as a whole.
    time_limit=(settings.WEBHOOK_TIMEOUT * 4 + 60) * 1000,
)
def deliver_webhook(delivery_id, attempt):
    services.attempt_delivery(delivery_id=delivery_id, attempt=attempt)
