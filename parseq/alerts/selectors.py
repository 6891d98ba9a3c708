"""Read-only questions about alerts."""

from parseq.alerts.models import WebhookDelivery


def recent_deliveries(*, parser, limit=10):
    """The newest webhook deliveries about `parser`'s runs, newest first."""
    return WebhookDelivery.objects.filter(parser=parser).select_related("run")[:limit]
