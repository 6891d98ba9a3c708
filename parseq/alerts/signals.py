"""Alerts follow runs: a run that ends gets the alert its parser asks for."""

import logging

from django.dispatch import receiver

from parseq.alerts import services
from parseq.core.events import run_finished

logger = logging.getLogger(__name__)


@receiver(run_finished, dispatch_uid="parseq.alerts.alert_when_a_run_ends")
def alert_when_a_run_ends(sender, run_id, status, **kwargs):
    try:
        services.record_run_alert(run_id=run_id, status=status)
    except Exception:  # an alert that cannot be made must never keep a run from ending
        logger.exception("could not record the alert about run %s", run_id)
