"""Dramatiq actors of alerts, and the hand-over of deliveries to them. They only call services."""

import logging

import dramatiq
from django.conf import settings
from django.dispatch import receiver

from parseq.alerts import events, services
from parseq.core.tasks import retry_when_the_database_failed

logger = logging.getLogger(__name__)


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


@receiver(events.delivery_due)
def send_to_workers(sender, *, delivery_id, attempt, delay, **kwargs):
    """Never raises: a delivery the broker does not accept is recorded as failed."""
    try:
        deliver_webhook.send_with_options(args=(delivery_id, attempt), delay=round(delay * 1000) if delay else None)
    except Exception as error:
        logger.exception("could not enqueue attempt %d of webhook delivery %s", attempt, delivery_id)
        services.fail_unsent_delivery(delivery_id=delivery_id, attempt=attempt, error=error)
