"""What keeps Parseq tidy between runs: lost runs ended, orphaned files deleted, runs sent again.

Retention (which finished runs to delete) has its own module, parseq/core/retention.py.
"""

import logging

from django.core.files.storage import default_storage

from parseq.core.models import Run
from parseq.core.services import send_runs

logger = logging.getLogger(__name__)


def fail_lost_runs(*, now=None):
    """End in error every run still `running` past its deadline: its worker is gone. Returns how many."""
    return Run.objects.fail_lost(now=now)


def delete_stored_files(*, names):
    """Delete files from storage, logging (not raising) failures: the rows are gone already."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a storage outage must not undo the deletion the user asked for
            logger.exception("could not delete %s from storage", name)


def resend_enqueued_runs():
    """Send again every `enqueued` run: an in-memory broker loses its queue when the process stops."""
    run_ids = list(Run.objects.filter(status=Run.Status.ENQUEUED).values_list("run_id", flat=True))
    send_runs(run_ids=run_ids)
    return len(run_ids)
