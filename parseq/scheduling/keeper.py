"""The scheduler process: standby until it holds the leadership, then APScheduler kept equal to the parsers.

APScheduler (with django_apscheduler's job store) owns the timing: one job per scheduled
parser, whose only argument is the parser's id, persisted with its next due time so that a
scheduler that starts later knows what was missed. This module keeps those jobs equal to the
parsers' schedules: at once on each change notice, on any change of the parser table (checked
every second), and by rereading everything now and then.
"""

import contextlib
import logging
import pickle
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.triggers.interval import IntervalTrigger
from django import db
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob, DjangoJobExecution
from django_apscheduler.util import get_django_internal_datetime

from parseq.core.models import Parser
from parseq.core.triggers import parser_trigger
from parseq.scheduling import selectors, services
from parseq.scheduling.coordination import LeadershipLost, coordinator_for_database
from parseq.scheduling.jobs import FIRE, JOB_ID_PREFIX, PRUNE, PRUNE_JOB_ID, job_id

logger = logging.getLogger(__name__)
HOUSEKEEPING_EXECUTOR = "housekeeping"
# The first cleanup after taking over: soon, rather than an interval later (the active scheduler
# changes on every restart), yet after the due times missed meanwhile have been fired.
PRUNE_FIRST_DELAY = timedelta(seconds=10)


class DueTimesExecutor(BaseExecutor):
    """Runs a due job at once, in the scheduler's thread, and tells it every time it is due for.

    Parsers' jobs normally fire together, a round at a time (`_Scheduler.fire_due_parsers`): this
    fires one by one those that a failed round left due.

    At once: the run is recorded before APScheduler stores the job's next time, so a scheduler
    killed in between leaves a due time that the next one fires again (and the database refuses
    as a duplicate), never one that is lost. APScheduler 3 does not pass due times to a job;
    Parseq needs them to make firing idempotent and misfires visible.
    """

    def _do_submit_job(self, job, run_times):
        try:
            active_since = getattr(self._scheduler, "active_since", None)
            events = run_job(
                _WithDueTimes(job, run_times, active_since), job._jobstore_alias, run_times[-1:], self._logger.name
            )
        except BaseException:  # noqa: BLE001 - as APScheduler's own executors: report, never kill the scheduler
            self._run_job_error(job.id, *sys.exc_info()[1:])
        else:
            self._run_job_success(job.id, events)


class _WithDueTimes:
    """The job as `run_job` sees it: called with its due times (and since when this scheduler is the active
    one, to tell why any were missed), with misfires left to Parseq."""

    misfire_grace_time = None

    def __init__(self, job, due_times, active_since):
        self.id, self.func, self.args = job.id, job.func, job.args
        self.kwargs = {**job.kwargs, "due_times": list(due_times)}
        if job.func_ref == FIRE:
            self.kwargs["active_since"] = active_since

    def __str__(self):
        return self.id


class HousekeepingExecutor(BaseExecutor):
    """Runs each job in a new thread, whose database connections are closed when the job is done.

    For the cleanup of old runs: deleting many files (one request each on S3) may take minutes,
    and the default executor fires the parsers' due runs in the scheduler's own thread. Jobs run
    at most one at a time (`max_instances`), an hour or so apart: a connection is not worth keeping.
    """

    def _do_submit_job(self, job, run_times):
        thread = threading.Thread(target=self._run, args=(job, run_times), name=f"parseq-{job.id}", daemon=True)
        thread.start()

    def _run(self, job, run_times):
        try:
            events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
        except BaseException:  # noqa: BLE001 - as APScheduler's own executors: report, never kill the scheduler
            self._run_job_error(job.id, *sys.exc_info()[1:])
        else:
            self._run_job_success(job.id, events)  # its listeners record the execution in the database
        finally:
            db.connections.close_all()


class _Scheduler(BackgroundScheduler):
    active_since = None  # when it began firing as the active scheduler: due times missed since, it was held up

    def _process_jobs(self):
        # APScheduler 3 fires a round's due jobs one by one, each with its own transaction, message and
        # job update: of 50 parsers due at once, the 50th came late. Fire the parsers' jobs together first;
        # APScheduler's own round then sees what is left (the cleanup job) and computes the next wake-up.
        if self.state != STATE_PAUSED:
            self.fire_due_parsers(now=datetime.now(UTC))
        return super()._process_jobs()

    def fire_due_parsers(self, *, now):
        """Fire every parser's job due at `now` in one batch, then store their next times: a few queries for any number.

        As one by one, the runs are committed before the next times are stored, so a scheduler killed in
        between leaves due times that the next one fires again (and the database refuses), never lost ones.
        On any failure the jobs stay due, and APScheduler's round fires them one by one (`DueTimesExecutor`).
        """
        with self._jobstores_lock:  # as APScheduler's round: no job is added or removed meanwhile
            jobstore = self._jobstores.get("default")  # gone once stop_scheduler removed it
            if jobstore is None:
                return
            try:
                # _get_run_times: the due times APScheduler's round computes, by the same (private) method.
                due = [(job, job._get_run_times(now)) for job in jobstore.get_due_jobs(now) if job.func_ref == FIRE]
                if due:
                    due_times = {job.args[0]: times for job, times in due}
                    services.fire_schedules(due_times=due_times, now=now, active_since=self.active_since)
                    _store_next_times(due=due, now=now, pickle_protocol=jobstore.pickle_protocol)
            except Exception:
                logger.exception("could not fire the due parsers together; firing them one by one")
                db.close_old_connections()

    def _main_loop(self):
        try:
            super()._main_loop()
        finally:
            db.connections.close_all()  # the job store's connection in APScheduler's own thread


def _store_next_times(*, due, now, pickle_protocol):
    """What APScheduler's round does after firing each job, for all together: its next time, or no more job."""
    for job, due_times in due:
        job.next_run_time = job.trigger.get_next_fire_time(due_times[-1], now)
    finished = timezone.now()
    with transaction.atomic():
        DjangoJob.objects.bulk_update(
            [
                DjangoJob(
                    id=job.id,
                    next_run_time=get_django_internal_datetime(job.next_run_time),
                    job_state=pickle.dumps(job.__getstate__(), pickle_protocol),
                )
                for job, _ in due
                if job.next_run_time
            ],
            ["next_run_time", "job_state"],
        )
        if done := [job.id for job, _ in due if not job.next_run_time]:
            DjangoJob.objects.filter(id__in=done).delete()  # a one-off that has fired
        # The execution records (in the admin) that django_apscheduler's listeners write, one by one, after each job.
        DjangoJobExecution.objects.bulk_create(
            [
                DjangoJobExecution(
                    job_id=job.id,
                    run_time=due_times[-1],
                    status=DjangoJobExecution.SUCCESS,
                    duration=(finished - due_times[-1]).total_seconds(),
                    finished=finished.timestamp(),
                )
                for job, due_times in due
                if job.next_run_time
            ],
            ignore_conflicts=True,
        )


def new_scheduler():
    return _Scheduler(
        jobstores={"default": DjangoJobStore()},
        executors={"default": DueTimesExecutor()},
        job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )


def stop_scheduler(scheduler):
    """Shut APScheduler down without the last round of due jobs its shutdown would otherwise process."""
    scheduler.remove_jobstore("default")  # waits for a round in progress; the jobs stay in the database
    scheduler.shutdown(wait=False)


def sync_parser_job(*, scheduler, parser, job, now):
    """Make the parser's job match its schedule. An unchanged schedule keeps its job (and what it missed)."""
    trigger = parser_trigger(parser, default_timezone=settings.TIME_ZONE) if parser else None
    if job is not None and (trigger is None or repr(job.trigger) != repr(trigger)):
        with contextlib.suppress(JobLookupError):  # a one-off that fired a moment ago is gone already
            scheduler.remove_job(job.id)
        job = None
    if trigger is None or job is not None:
        return
    due = selectors.next_run_time(parser=parser, now=now)
    if due is not None:
        scheduler.add_job(
            FIRE, trigger=trigger, args=[parser.pk], id=job_id(parser.pk), next_run_time=due, replace_existing=True
        )
        logger.info("parser %s (%s) next runs at %s", parser.pk, parser.name, due)


def sync_one(*, scheduler, parser_id, now):
    parser = selectors.with_last_due(Parser.objects.filter(pk=parser_id)).first()
    sync_parser_job(scheduler=scheduler, parser=parser, job=scheduler.get_job(job_id(parser_id)), now=now)


def sync_all(*, scheduler, now):
    """Make every job match its parser's schedule, and drop the jobs of deleted parsers."""
    jobs = {job.id: job for job in scheduler.get_jobs() if job.id.startswith(JOB_ID_PREFIX)}
    for parser in selectors.with_last_due(Parser.objects.all()):
        sync_parser_job(scheduler=scheduler, parser=parser, job=jobs.pop(job_id(parser.pk), None), now=now)
    for orphan in jobs.values():
        with contextlib.suppress(JobLookupError):
            scheduler.remove_job(orphan.id)


def add_prune_job(*, scheduler, now):
    """Delete old runs every PARSEQ_PRUNE_INTERVAL seconds, the first time shortly after `now`.

    Its id does not start with the parsers' prefix, so `sync_all` leaves it alone.
    """
    scheduler.add_executor(HousekeepingExecutor(), alias=HOUSEKEEPING_EXECUTOR)
    scheduler.add_job(
        PRUNE,
        trigger=IntervalTrigger(seconds=settings.PRUNE_INTERVAL, timezone=UTC),
        id=PRUNE_JOB_ID,
        executor=HOUSEKEEPING_EXECUTOR,
        next_run_time=now + PRUNE_FIRST_DELAY,
        coalesce=True,  # one cleanup makes up for any number of missed ones
        replace_existing=True,
    )


class ScheduleKeeper:
    """One scheduler: a standby until it takes the leadership, then the active one until it stops or loses it."""

    def __init__(self, *, coordinator=None):
        self.coordinator = coordinator or coordinator_for_database()
        self.active = threading.Event()

    def run(self, stopping):
        announced_standby = False
        while not stopping.is_set():
            if self.coordinator.try_lead():
                announced_standby = False
                try:
                    self._lead(stopping)
                except LeadershipLost as error:
                    logger.error("scheduler stepped down: %s", error)
                except Exception:  # the scheduler must outlive any single failure; it retries as a standby
                    logger.exception("scheduler failed; stepping down")
                    stopping.wait(settings.SCHEDULER_STANDBY_POLL)
                finally:
                    self.active.clear()
                    self.coordinator.release()
                    db.connections.close_all()
            else:
                if not announced_standby:
                    logger.info("another scheduler is active: standing by")
                    announced_standby = True
                stopping.wait(settings.SCHEDULER_STANDBY_POLL)

    def _lead(self, stopping):
        scheduler = new_scheduler()
        scheduler.start(paused=True)
        try:
            add_prune_job(scheduler=scheduler, now=timezone.now())
            sync_all(scheduler=scheduler, now=timezone.now())
            scheduler.active_since = datetime.now(UTC)
            scheduler.resume()
            self.active.set()
            logger.info("scheduler active")
            self._follow_changes(scheduler, stopping)
        finally:
            stop_scheduler(scheduler)

    def _follow_changes(self, scheduler, stopping):
        fingerprint, reconciled = selectors.schedules_fingerprint(), time.monotonic()
        while not stopping.is_set():
            announced = self.coordinator.wait_for_changes(timeout=1.0)
            try:
                for parser_id in announced:
                    sync_one(scheduler=scheduler, parser_id=parser_id, now=timezone.now())
                latest = selectors.schedules_fingerprint()
                reread_all = time.monotonic() - reconciled > settings.SCHEDULER_RECONCILE
                if reread_all:
                    services.prune_job_executions()
                if latest != fingerprint or reread_all:
                    sync_all(scheduler=scheduler, now=timezone.now())
                    fingerprint, reconciled = selectors.schedules_fingerprint(), time.monotonic()
            except db.Error:
                logger.exception("could not read the schedules; trying again")
                db.connections.close_all()
