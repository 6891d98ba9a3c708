"""A run's life as one state machine: every change of a run's status is a method of `Run.objects`.

    enqueued ──claim──▶ running ──complete──▶ completed
       │                  ├──────fail──────▶ error
       │                  └──fail_lost─────▶ error   (past its deadline: its worker is gone)
       ├──fail_unsent──▶ error                        (the broker did not take it)
       └──cancel (enqueued or running)──▶ cancelled
    skipped: created so by the scheduler, and never changes.

Each transition is one conditional UPDATE (`... WHERE status = <the status it leaves>`): of two
racing transitions (a worker finishing a run a user cancels) exactly one wins, and the other
learns it from the result and changes nothing. `run_finished` is sent here, and only here,
once per run, after its final status is saved.
"""

import logging
from datetime import timedelta

from django.db import models
from django.utils import timezone

from parseq.core.events import run_finished

logger = logging.getLogger(__name__)

LOST_RUN_ERROR = "worker lost: the run did not finish by its deadline (its worker stopped or was killed)"


class RunQuerySet(models.QuerySet):
    def claim(self, *, run_id, grace):
        """Move a run from enqueued to running, with its deadline; the run, or None when it was not enqueued.

        A duplicate delivery, or one for a run already cancelled, finds nothing to claim.
        """
        run = self.select_related("parser").filter(pk=run_id).first()
        if run is None:
            logger.warning("run %s does not exist; message dropped", run_id)
            return None
        now = timezone.now()
        claimed = self.filter(pk=run_id, status=self.model.Status.ENQUEUED).update(
            status=self.model.Status.RUNNING,
            started_time=now,
            deadline=now + timedelta(seconds=run.parser.timeout + grace),
            updated_time=now,
        )
        return run if claimed else None

    def note_what_ran(self, *, run_id, script_sha256, parser_settings):
        """Record, as a run starts, the script it runs and the settings it goes by (no change of status)."""
        self.filter(pk=run_id).update(script_sha256=script_sha256, parser_settings=parser_settings)

    def complete(self, *, run_id, log, files):
        """A running run's script returned its files, now stored; False if the run had ended meanwhile."""
        status = self.model.Status
        return self._end(run_id=run_id, leaving=status.RUNNING, status=status.COMPLETED, log=log, files=list(files))

    def fail(self, *, run_id, error, log=""):
        """A running run failed (its script, its sandbox, or storing its files); False if it had ended meanwhile."""
        status = self.model.Status
        return self._end(run_id=run_id, leaving=status.RUNNING, status=status.ERROR, error=error, log=log)

    def fail_unsent(self, *, run_id, error):
        """The broker did not take an enqueued run: it ends in error rather than wait forever."""
        message = f"could not enqueue the run: the broker did not accept it ({error})"
        status = self.model.Status
        return self._end(run_id=run_id, leaving=status.ENQUEUED, status=status.ERROR, error=message)

    def fail_lost(self, *, now=None):
        """End in error every run still running past its deadline; returns how many."""
        lost = self.filter(status=self.model.Status.RUNNING, deadline__lt=now or timezone.now())
        return sum(self.fail(run_id=run_id, error=LOST_RUN_ERROR) for run_id in lost.values_list("pk", flat=True))

    def cancel(self, *, run_id, user):
        """Stop an enqueued or running run on `user`'s word; False when it had already ended."""
        who = user.get_username() if user else "unknown"
        cancelled = self._end(
            run_id=run_id,
            leaving=self.model.ACTIVE_STATUSES,
            status=self.model.Status.CANCELLED,
            error=f"cancelled by {who}",
            cancelled_by=user,
        )
        if cancelled:
            logger.info("run %s cancelled by %s", run_id, who)
        return cancelled

    def keep_log_of_cancelled(self, *, run_id, log):
        """What a cancelled run's script printed until it was stopped: still worth keeping."""
        self.filter(pk=run_id, status=self.model.Status.CANCELLED).update(log=log, updated_time=timezone.now())

    def _end(self, *, run_id, leaving, status, **fields):
        """Move a run that is still in `leaving` (a status or several) to the final `status`, and say so."""
        leaving = [leaving] if isinstance(leaving, str) else list(leaving)
        now = timezone.now()
        ended = self.filter(pk=run_id, status__in=leaving).update(
            status=status, finished_time=now, updated_time=now, deadline=None, **fields
        )
        if not ended:
            logger.warning("run %s was no longer %s; its end (%s) was dropped", run_id, " or ".join(leaving), status)
            return False
        error = fields.get("error", "")
        logger.info("run %s ended %s%s", run_id, status, f": {error.splitlines()[-1]}" if error else "")
        run_finished.send(sender=self.model, run_id=run_id, status=status)
        return True
