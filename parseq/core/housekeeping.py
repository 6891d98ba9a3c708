"""What keeps Parseq tidy between runs: lost runs ended, orphaned files deleted, waiting runs sent again.

Retention (which finished runs to delete) has its own module, parseq/core/retention.py.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from parseq.core.lifecycle import NOT_SENT_NOTE
from parseq.core.models import Run
from parseq.core.services import send_runs

logger = logging.getLogger(__name__)
RESEND_BATCH = 1000  # runs sent again per sweep: a huge backlog goes over several sweeps


def rerun_or_fail_lost_runs(*, now=None):
    """Rerun, or end in error once out of attempts, every run whose worker's lease has lapsed; (rerun, failed)."""
    rerun, failed = Run.objects.rerun_or_fail_lost(now=now)
    if rerun or failed:
        logger.warning("runs whose worker was lost: %d sent again, %d ended in error (no attempt left)", rerun, failed)
    return rerun, failed


def delete_stored_files(*, names):
    """Delete files from storage, logging (not raising) failures: the rows are gone already."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a storage outage must not undo the deletion the user asked for
            logger.exception("could not delete %s from storage", name)


def resend_waiting_runs(*, now=None):
    """Send again the runs the broker did not take (noted so), and those `enqueued` for over
    PARSEQ_RESEND_ENQUEUED_AFTER seconds; returns how many.

    The latter's message may be gone: a broker that restarted without it, retries used up in a
    database outage. Resending is safe, because a run is claimed only once: a duplicate message
    finds it running and does nothing. Each resent run waits the whole time again before the next
    resend (unless the broker refuses it again), and of several workers sweeping at once each
    takes different runs.
    """
    now = now or timezone.now()
    waited = Q(updated_time__lt=now - timedelta(seconds=settings.RESEND_ENQUEUED_AFTER))
    waiting = Run.objects.filter(waited | Q(error__startswith=NOT_SENT_NOTE), status=Run.Status.ENQUEUED)
    with transaction.atomic():
        run_ids = list(waiting.select_for_update(skip_locked=True).values_list("pk", flat=True)[:RESEND_BATCH])
        Run.objects.filter(pk__in=run_ids).update(updated_time=now, error="")
    if run_ids:
        seconds = settings.RESEND_ENQUEUED_AFTER
        logger.warning(
            "sending again %d run(s): not taken by the broker, or enqueued for over %d s", len(run_ids), seconds
        )
        send_runs(run_ids=run_ids, if_refused="wait")
    return len(run_ids)


def recover_runs_of_the_last_process():
    """At the start of the all-in-one process on the in-memory broker, the only worker there is: a run still
    `running` ran in the process before it, and is rerun (or ended) now, not once its lease has lapsed."""
    rerun, failed = Run.objects.rerun_or_end_all_running(why="worker lost: the all-in-one process was restarted")
    if rerun or failed:
        logger.warning("runs of the last process: %d run again, %d ended in error (no attempt left)", rerun, failed)
    return rerun, failed


def resend_enqueued_runs():
    """Send again every `enqueued` run: an in-memory broker loses its queue when the process stops."""
    run_ids = list(Run.objects.filter(status=Run.Status.ENQUEUED).values_list("run_id", flat=True))
    send_runs(run_ids=run_ids, if_refused="wait")
    return len(run_ids)
