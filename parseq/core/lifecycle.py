"""A run's life as one state machine: every change of a run's status is a method of `Run.objects`.

    enqueued ──claim──▶ running ──complete──▶ completed
     ▲ │                  ├──────fail──────▶ error
     │ │                  ├─rerun_or_fail_lost: attempts left──┐   (no heartbeat: its worker is gone)
     │ │                  ├─rerun_or_fail_lost: none left──▶ error "worker lost"
     │ │                  ├─hand_back: attempts left──────────┤   (its worker is stopping: sandbox stopped)
     │ │                  └─hand_back: none left──▶ error "worker stopped"
     └─┼──────────────────────────────────────────────────────┘   (attempt + 1, sent again)
       ├──fail_unsent──▶ error                                     (the broker did not take it)
       └──cancel (enqueued or running)──▶ cancelled
    skipped: created so by the scheduler, and never changes.

Each transition is one conditional UPDATE (`... WHERE status = <the status it leaves>`, and for a
worker's outcome `AND attempt = <its attempt>`): of two racing transitions (a worker finishing a
run a user cancels) exactly one wins, and the other learns it from the result and changes
nothing. `run_finished` is sent here, and only here, after the change is saved: once per run,
except that a worker's real outcome still lands on its attempt if the reaper gave that attempt
up as "worker lost" (the worker was alive, only cut off from the database): a computed result
beats a guess, and is announced too.

A running run is leased: its worker renews `heartbeat_time` every PARSEQ_HEARTBEAT_SECONDS (one
UPDATE for all of a worker process's runs). Why a rerun cannot overlap the attempt it replaces:
a run is rerun only when its heartbeat is PARSEQ_LOST_RUN_SECONDS old *and* the reaper doing it
has reached the database for that long itself (parseq/core/middleware.py). A live worker that
reaches the database renews every few seconds, so its runs are never that stale; a worker that
cannot reach it (an outage) stops no reaper from waiting, because no reaper can act during the
outage and each waits the whole time after it. What remains is a worker cut off while the others
are not (a network partition): its attempt may go on beside the rerun, but its outcome is refused
(`attempt` no longer matches) and its files removed; a run is recorded once.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.functions import Now
from django.utils import timezone

from parseq.core.events import run_finished, runs_enqueued

logger = logging.getLogger(__name__)

UNSENT_ERROR = "could not enqueue the run: the broker did not accept it"
# What an enqueued run the broker did not take says until the reaper has sent it again.
NOT_SENT_NOTE = "not sent yet: the broker did not take it"
LOST_RUN_ERROR = "worker lost: its worker stopped (killed, or cut off) and the run had no attempt left"
STOPPED_RUN_ERROR = "worker stopped: its worker was shut down during the run, which had no attempt left"


class RunQuerySet(models.QuerySet):
    def claim(self, *, run_id, grace, worker=""):
        """Move a run from enqueued to running on `worker`, leased from now; the run, or None if not enqueued.

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
            deadline=now + timedelta(seconds=run.timeout + grace),
            updated_time=now,
            error="",  # a note from its wait (dead-lettered) is not an error of this run
            log="",  # what an earlier attempt printed: this one's comes live (parseq/core/live_logs.py)
            worker=worker,
            heartbeat_time=Now(),  # the database's clock, as the reaper's: the hosts' clocks may disagree
        )
        return run if claimed else None

    def renew(self, *, run_ids, worker):
        """A worker's heartbeat: its running runs are still its own. One UPDATE, however many runs.

        A run past its deadline by more than PARSEQ_RECORD_RETRY_SECONDS is not renewed: its worker
        is alive but stuck (a hung storage), and the run is better rerun than held forever.
        """
        overdue = timezone.now() - timedelta(seconds=settings.RECORD_RETRY_SECONDS)
        mine = self.filter(pk__in=run_ids, status=self.model.Status.RUNNING, worker=worker)
        return mine.exclude(deadline__lt=overdue).update(heartbeat_time=Now())

    def is_current(self, *, run_id, attempt):
        """Whether `attempt` is still the run's attempt that may end it (no rerun has replaced it)."""
        return self.filter(self._awaiting_outcome(attempt), pk=run_id).exists()

    def note_not_sent(self, *, run_ids, why):
        """The broker did not take these enqueued runs: each says so until the reaper's next sweep sends it again."""
        note = f"{NOT_SENT_NOTE} ({why}); the workers send it again as soon as it does"
        self.filter(pk__in=run_ids, status=self.model.Status.ENQUEUED).update(error=note)

    def note_dead_lettered(self, *, run_id, why):
        """An enqueued run's message is gone to the dead-letter queue: the run says so until it is claimed."""
        seconds = settings.RESEND_ENQUEUED_AFTER
        note = f"its message was {why}; it is sent again after waiting {seconds} s"
        self.filter(pk=run_id, status=self.model.Status.ENQUEUED).update(error=note)

    def note_what_ran(self, *, run_id, attempt, script_sha256, parser_settings):
        """Record, as an attempt starts, the script it runs and the settings it goes by (no change of status).

        The script's version is the parser's latest with that content (restoring appends one).
        """
        versions = self.model._meta.get_field("script_version").related_model.objects
        same_content = versions.filter(parser=OuterRef("parser"), sha256=script_sha256).order_by("-number")
        running = self.filter(pk=run_id, attempt=attempt, status=self.model.Status.RUNNING)
        running.update(
            script_sha256=script_sha256,
            script_version=Subquery(same_content.values("pk")[:1]),
            parser_settings=parser_settings,
        )

    def note_recording_retries(self, *, run_id, count):
        """Its worker failed `count` more times to record an outcome of the run (the database was unreachable)."""
        self.filter(pk=run_id).update(recording_retries=F("recording_retries") + count)

    def complete(self, *, run_id, attempt, log, files):
        """Attempt `attempt` returned its files, now stored; False if the run had ended or been rerun meanwhile."""
        completed = self.model.Status.COMPLETED
        files = list(files)
        leaving = self._awaiting_outcome(attempt)
        return self._end(run_id=run_id, leaving=leaving, status=completed, error="", log=log, files=files)

    def fail(self, *, run_id, attempt, error, log=""):
        """Attempt `attempt` failed (its script, its sandbox, or storing its files); False as for complete."""
        status = self.model.Status
        return self._end(
            run_id=run_id, leaving=self._awaiting_outcome(attempt), status=status.ERROR, error=error, log=log
        )

    def _awaiting_outcome(self, attempt):
        """The runs attempt `attempt` may end: running it, or given up on as lost while it ran."""
        status = self.model.Status
        return Q(attempt=attempt) & (Q(status=status.RUNNING) | Q(status=status.ERROR, error=LOST_RUN_ERROR))

    def confirm_completed(self, *, run_id, attempt, files):
        """Whether attempt `attempt` did complete the run with these `files` (a commit whose answer was lost).

        If so it is announced now, as the commit could not be; the alert is recorded once all the same.
        """
        row = self.filter(pk=run_id, attempt=attempt).values_list("status", "files").first()
        confirmed = row == (self.model.Status.COMPLETED, list(files))
        if confirmed:
            run_finished.send(sender=self.model, run_id=run_id, status=self.model.Status.COMPLETED)
        return confirmed

    def fail_unsent(self, *, run_id, error):
        """The broker did not take an enqueued run: it ends in error rather than wait forever."""
        message = f"{UNSENT_ERROR} ({error})"
        status = self.model.Status
        return self._end(run_id=run_id, leaving=Q(status=status.ENQUEUED), status=status.ERROR, error=message)

    def rerun_or_fail_lost(self, *, now=None):
        """Runs whose worker is gone: sent again while they have attempts left, else ended in error.

        Gone means no heartbeat for PARSEQ_LOST_RUN_SECONDS (or, claimed before heartbeats, past its
        deadline). Returns (rerun, failed) counts. The caller makes sure it has reached the database
        for PARSEQ_LOST_RUN_SECONDS itself first (see the module's docstring).
        """
        now = now or timezone.now()
        status = self.model.Status
        # Heartbeats are written and read on the database's clock; the deadline, for runs claimed before
        # leases, on the hosts' (as it was written).
        silent = Q(heartbeat_time__lt=Now() - timedelta(seconds=settings.LOST_RUN_SECONDS))
        stale = silent | Q(heartbeat_time__isnull=True, deadline__lt=now)
        rerun = failed = 0
        for run in self.filter(stale, status=status.RUNNING).select_related("parser"):
            since = run.heartbeat_time.isoformat() if run.heartbeat_time else "its start"
            why = f"worker lost: no heartbeat from {run.worker or 'its worker'} since {since}"
            # Still stale, checked again in the UPDATE itself: a heartbeat that came meanwhile wins.
            became = self._rerun_or_end(run=run, leaving=stale, why=why, error=LOST_RUN_ERROR, now=now)
            rerun += became == status.ENQUEUED
            failed += became == status.ERROR
        return rerun, failed

    def rerun_or_end_all_running(self, *, why):
        """Every running run has lost its worker (the only one, an all-in-one process, has restarted): each is
        rerun or ended at once, as a lost one would be once its lease lapsed. Returns (rerun, failed)."""
        now, status = timezone.now(), self.model.Status
        became = [
            self._rerun_or_end(run=run, leaving=Q(), why=why, error=LOST_RUN_ERROR, now=now)
            for run in self.filter(status=status.RUNNING).select_related("parser")
        ]
        return became.count(status.ENQUEUED), became.count(status.ERROR)

    def hand_back(self, *, run_id, attempt, why):
        """A stopping worker stopped attempt `attempt`'s sandbox: the run goes to another worker at once as its
        next attempt, or, with none left, ends in error. Returns the status it took (None: it had ended already).
        """
        run = self.select_related("parser").filter(pk=run_id, attempt=attempt, status=self.model.Status.RUNNING).first()
        if run is None:
            return None
        return self._rerun_or_end(run=run, leaving=Q(), why=why, error=STOPPED_RUN_ERROR, now=timezone.now())

    def _rerun_or_end(self, *, run, leaving, why, error, now):
        """End a running attempt that will not report: the run is rerun (`enqueued`) if it has attempts left, else
        ends with `error` (`error`). Either only while the run is still on that attempt and as `leaving` (a Q) says;
        returns the status it took, or None.
        """
        record = {
            "attempt": run.attempt,
            "worker": run.worker,
            "started": run.started_time.isoformat() if run.started_time else None,
            "ended": now.isoformat(),
            "why": why,
        }
        status = self.model.Status
        if run.attempt < run.parser.max_attempts:
            return status.ENQUEUED if self._rerun(run=run, leaving=leaving, record=record, now=now) else None
        leaving = leaving & Q(status=status.RUNNING, attempt=run.attempt)
        ended = self._end(
            run_id=run.pk, leaving=leaving, status=status.ERROR, error=error, attempts=[*run.attempts, record]
        )
        return status.ERROR if ended else None

    def _rerun(self, *, run, leaving, record, now):
        """Put a running run back in the queue as its next attempt, and send it once this commits.

        Only while it is still as `leaving` says, checked again in the UPDATE: for a lost run, a heartbeat
        that came since the run was read wins.
        """
        rerun = self.filter(leaving, pk=run.pk, status=self.model.Status.RUNNING, attempt=run.attempt).update(
            status=self.model.Status.ENQUEUED,
            attempt=run.attempt + 1,
            attempts=[*run.attempts, record],
            worker="",
            heartbeat_time=None,
            started_time=None,
            deadline=None,
            updated_time=now,
        )
        if rerun:
            logger.warning("run %s: attempt %d ended (%s); it runs again", run.pk, run.attempt, record["why"])
            # Should the broker refuse it now, it waits enqueued for the reaper's next sweep.
            transaction.on_commit(lambda: runs_enqueued.send(sender=self.model, run_ids=[run.pk], if_refused="wait"))
        return rerun

    def cancel(self, *, run_id, user):
        """Stop an enqueued or running run on `user`'s word; False when it had already ended."""
        who = user.get_username() if user else "unknown"
        cancelled = self._end(
            run_id=run_id,
            leaving=Q(status__in=self.model.ACTIVE_STATUSES),
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
        """Move a run that is still as `leaving` (a Q) says to the final `status`, and say so."""
        now = timezone.now()
        ended = self.filter(leaving, pk=run_id).update(
            status=status, finished_time=now, updated_time=now, deadline=None, **fields
        )
        if not ended:
            logger.warning("run %s had already ended; this end (%s) was dropped", run_id, status)
            return False
        error = fields.get("error", "")
        logger.info("run %s ended %s%s", run_id, status, f": {error.splitlines()[-1]}" if error else "")
        run_finished.send(sender=self.model, run_id=run_id, status=status)
        return True
