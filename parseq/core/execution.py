"""The worker's side of a run: its script runs in a sandbox, and the outcome is kept.

The only part of the core that starts sandboxes (runner.run_script). No database connection
is held while a sandbox runs: a long run must not pin one of the pool's connections.
"""

import collections
import contextlib
import glob
import hashlib
import logging
import mimetypes
import os
import shutil
import socket
import tempfile
import threading
import time

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError

import runner
from parseq.core import cancellation
from parseq.core.environment import mask_values
from parseq.core.events import runs_enqueued
from parseq.core.housekeeping import delete_stored_files
from parseq.core.live_logs import live_logs
from parseq.core.models import Run, result_path
from parseq.core.slots import slots
from parseq.core.validation import allowed_modules
from parseq.env import ConfigurationError
from runner import leftovers, modules

logger = logging.getLogger(__name__)
WORKER_TEMP_PREFIX = "parseq-worker-"
# What a database outage raises (a lost connection, a refused one, a timeout); a query's own error is not retried.
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)
# The recording's clock and its waits: tests turn a clock of their own instead of waiting.
_clock, _sleep = time.monotonic, time.sleep


class Drain:
    """A stopping worker process: it claims no new run, and stops the sandboxes of those it still runs once
    PARSEQ_DRAIN_SECONDS have passed, handing each back as its next attempt (Run.objects.hand_back).
    """

    def __init__(self, *, clock=time.monotonic):
        self.clock = clock
        self.deadline = None

    def begin(self, *, seconds):
        self.deadline = self.clock() + seconds

    @property
    def active(self):
        return self.deadline is not None

    def end(self):
        self.deadline = None

    def time_is_up(self):
        return self.deadline is not None and self.clock() >= self.deadline


drain = Drain()
STOPPED_BY_DRAIN = "stopped by the worker's shutdown"


def execute_run(*, run_id):
    """The worker's job: claim the run, run its script in the sandbox, keep the outcome.

    A run that is not `enqueued` (a duplicate delivery, or one already handled) is left
    alone, and so is every run once this worker is stopping: it goes back to the queue for
    another worker. Returns whether the run completed (None when there was nothing to claim).
    """
    if drain.active:
        logger.info("stopping: run %s goes back to the queue", run_id)
        runs_enqueued.send(sender=Run, run_ids=[run_id], if_refused="wait")
        return None
    with slots.database_turn():
        run = Run.objects.claim(run_id=run_id, grace=settings.RUN_GRACE, worker=worker_name())
    if run is None:
        return None
    with _leased(run.run_id):
        return _execute_claimed(run)


def _execute_claimed(run):
    """Run a claimed run's script and keep its outcome; its lease is renewed meanwhile (renew_leases)."""
    run_id, attempt = run.run_id, run.attempt
    # Named after the worker process: what a killed worker leaves is removed at once (remove_stale_...).
    with tempfile.TemporaryDirectory(prefix=f"{WORKER_TEMP_PREFIX}{leftovers.owner_tag()}") as tempdir:
        try:
            script_path, script_sha256 = _copy_script(run.parser, tempdir)
        except Exception as error:  # noqa: BLE001 - a disk or an object store (botocore raises no OSError): this run only
            failure = f"cannot read the script: {error}"
            _record(run_id, lambda: Run.objects.fail(run_id=run_id, attempt=attempt, error=failure))
            return False
        out_dir = os.path.join(tempdir, "out")
        os.mkdir(out_dir)
        backend = sandbox_backend()
        logger.info("running parser %s (%s) in the %s sandbox", run.parser_id, run.parser.name, backend)
        used = settings_used(run=run, backend=backend)
        _record(
            run_id,
            lambda: Run.objects.note_what_ran(
                run_id=run_id, attempt=attempt, script_sha256=script_sha256, parser_settings=used
            ),
        )
        try:
            outcome = _run_in_sandbox(run=run, script_path=script_path, out_dir=out_dir, backend=backend)
        except Exception as error:  # the runner's own failure, not the script's: the run fails saying so
            logger.exception("could not run the sandbox of run %s", run_id)
            failure = f"the worker could not run the sandbox: {type(error).__name__}: {error}"
            outcome = runner.Outcome(runner.SANDBOX_ERROR, error=failure)
        return _keep_outcome(run_id=run_id, attempt=attempt, outcome=outcome, out_dir=out_dir)


def _run_in_sandbox(*, run, script_path, out_dir, backend):
    """Run the script with the parser's settings and the run's parameters; the outcome's text no longer shows
    the variables' values.
    """
    parser, variables = run.parser, run.variables
    cancelled = cancellation.watcher.watch(run.run_id)
    live = live_logs.follow(run_id=run.run_id, attempt=run.attempt, environment=variables)
    try:
        outcome = runner.run_script(
            script_path,
            out_dir,
            python=settings.SANDBOX_PYTHON,
            backend=backend,
            limits=run_limits(parser=parser, timeout=run.timeout),
            timezone=settings.TIME_ZONE,
            variables=variables,
            network=parser.network,
            refused_networks=settings.REFUSED_NETWORKS,
            extra_ports=parser.extra_egress_ports,
            restricted_modules=allowed_modules() if parser.restricted else None,
            cancelled=lambda: cancelled.is_set() or drain.time_is_up(),
            warm=warm_start(backend=backend),
            preload=warm_preload(),
            runs_at_once=slots.runs,
            log_sink=live.feed,
        )
    finally:
        cancellation.watcher.forget(run.run_id)
        live_logs.forget(live)
    if outcome.status == runner.CANCELLED and not cancelled.is_set():
        outcome.status = STOPPED_BY_DRAIN  # not a user's cancel: the worker is stopping and its drain time is up
    # Whoever may read runs reads these; the variables' values are for those who may change the parser.
    # A NUL cannot be stored in PostgreSQL's text: a script printing one must not make its outcome unsavable.
    outcome.error = mask_values(outcome.error, environment=variables).replace("\x00", "\ufffd")
    outcome.log = mask_values(outcome.log, environment=variables).replace("\x00", "\ufffd")
    return outcome


def worker_name():
    """This worker process, as runs name it: host, process id and process id namespace.

    Containers often share a host name (host networking) and have the same small process ids;
    their process id namespaces tell them apart.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{leftovers.pid_namespace()}"


_leases_lock = threading.Lock()
# The runs this worker process is running, whose leases renew_leases renews; counted, since after a
# wrongful rerun two attempts of one run may run in the same process, and the first to end must not
# end the other's lease.
_leases = collections.Counter()


@contextlib.contextmanager
def _leased(run_id):
    with _leases_lock:
        _leases[run_id] += 1
    try:
        yield
    finally:
        with _leases_lock:
            _leases[run_id] -= 1
            if not _leases[run_id]:
                del _leases[run_id]


def has_leases():
    """Whether this worker process is running (or recording) any run."""
    with _leases_lock:
        return bool(_leases)


def renew_leases():
    """The heartbeat: renew the leases of the runs this worker process is running (one UPDATE); how many."""
    with _leases_lock:
        run_ids = list(_leases)
    return Run.objects.renew(run_ids=run_ids, worker=worker_name()) if run_ids else 0


def settings_used(*, run, backend):
    """The settings a run goes by (its parser's, and its parameters), as its page shows them; variable names
    only, never values.
    """
    parser = run.parser
    return {
        "script": os.path.basename(parser.script.name),
        "sandbox": f"{backend} (warm start)" if warm_start(backend=backend) else backend,
        "timeout": run.timeout,
        "memory_limit_mb": parser.memory_limit_mb or settings.MEMORY_LIMIT_MB,
        "restricted": parser.restricted,
        "network": parser.network,
        "extra_egress_ports": parser.extra_egress_ports,
        "environment": sorted(run.variables),
    }


def run_limits(*, parser, timeout=None):
    """The limits of a run of `parser`: the global ones, with the parser's own where it has them; `timeout`
    (a run's parameter) instead of the parser's.
    """
    mib = 1024 * 1024
    return runner.Limits(
        wall_time=timeout or parser.timeout,
        memory_bytes=(parser.memory_limit_mb or settings.MEMORY_LIMIT_MB) * mib,
        processes=settings.PROCESS_LIMIT,
        open_files=settings.OPEN_FILES_LIMIT,
        file_bytes=settings.FILE_SIZE_LIMIT_MB * mib,
        disk_bytes=settings.DISK_LIMIT_MB * mib,
        log_bytes=settings.LOG_LIMIT,
        result_bytes=settings.RESULT_SIZE_LIMIT_MB * mib,
        result_files=settings.RESULT_FILES_LIMIT,
    )


def sandbox_backend():
    """The sandbox runs use: PARSEQ_SANDBOX_BACKEND, or the strongest this machine has (None: none)."""
    return settings.SANDBOX_BACKEND or runner.best_backend()


SANDBOX_DESCRIPTIONS = {
    None: f"none: {runner.NO_BACKEND}",
    "bwrap": "bwrap",
    "docker": "docker",
    "subprocess": "subprocess (weaker: no filesystem, process or network isolation)",
}


def refuse_an_unusable_sandbox():
    """Stop Parseq from starting when the sandbox it is told to use cannot work here."""
    if settings.SANDBOX_BACKEND == "bwrap" and not runner.bwrap_works():
        raise ConfigurationError(
            "PARSEQ_SANDBOX is bwrap, but bubblewrap cannot make a jail here "
            "(install the bubblewrap package; unprivileged user namespaces must be allowed)"
        )


def run_limits_description():
    """How a run's memory and processes are bounded on this machine: its own cgroup, or rlimits alone and why."""
    works, reason = runner.cgroups_availability()
    if works:
        return "a cgroup per run (memory of all its processes, processes)"
    return f"rlimits only (weaker: memory per process, processes per user id): {reason}"


def run_limits_warning(*, backend):
    """What the admin says when runs have no cgroups of their own (docker's containers always have)."""
    if backend == "docker" or runner.cgroups_availability()[0]:
        return None
    return run_limits_description()


def warm_start(*, backend):
    """Whether runs start warm: forked from a zygote (README: Isolation); subprocess and bwrap can, docker cannot."""
    return settings.SANDBOX_WARM_START and backend in runner.WARM_BACKENDS


def warm_preload():
    """What the warm start's zygote imports before any run: the sandbox's libraries and what scrapers use most."""
    return modules.warm_preload(settings.SANDBOX_REQUIREMENTS)


def remove_stale_temporary_directories():
    """Delete what killed workers left in the temporary directory: at once when its worker process is gone
    (runner/leftovers.py), else once no run can still be using it.
    """
    cutoff = time.time() - (settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE + settings.RECORD_RETRY_SECONDS + 60)
    removed = 0
    for prefix in (WORKER_TEMP_PREFIX, runner.WORKDIR_PREFIX):
        for path in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
            rest = os.path.basename(path)[len(prefix) :]
            worker_gone = prefix == WORKER_TEMP_PREFIX and leftovers.owner_is_gone(rest)
            if os.path.isdir(path) and (worker_gone or os.lstat(path).st_mtime < cutoff):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def _copy_script(parser, tempdir):
    """Copy the script next to the run; returns its path and its SHA-256."""
    path = os.path.join(tempdir, os.path.basename(parser.script.name) or "script.py")
    digest = hashlib.sha256()
    with parser.script.storage.open(parser.script.name, "rb") as source, open(path, "wb") as target:
        while chunk := source.read(64 * 1024):
            digest.update(chunk)
            target.write(chunk)
    return path, digest.hexdigest()


def _keep_outcome(*, run_id, attempt, outcome, out_dir):
    """Store the result files, then end the run as its outcome says; whether it completed.

    The files go to storage before the row names them. Whatever the row does not end up
    naming (a store that failed part-way, a run cancelled, ended or rerun meanwhile, an outcome
    the database refused) is deleted again: storage keeps no file without its run. One
    exception: when the database never came back, the files stay, since the last attempt to
    record them may have committed without its answer arriving.
    """
    if outcome.status == runner.CANCELLED:
        _record(run_id, lambda: Run.objects.keep_log_of_cancelled(run_id=run_id, log=outcome.log))
        return False
    if outcome.status == STOPPED_BY_DRAIN:
        why = f"its worker was stopped and gave the run PARSEQ_DRAIN_SECONDS ({settings.DRAIN_SECONDS} s) to end"
        _record(run_id, lambda: Run.objects.hand_back(run_id=run_id, attempt=attempt, why=why))
        return False
    if not outcome.ok:
        _record(run_id, lambda: Run.objects.fail(run_id=run_id, attempt=attempt, error=outcome.error, log=outcome.log))
        return False
    if not _record(run_id, lambda: Run.objects.is_current(run_id=run_id, attempt=attempt)):
        logger.warning(
            "run %s was cancelled, ended or rerun meanwhile; the files of attempt %d are dropped", run_id, attempt
        )
        return False
    written = []
    try:
        files = [
            _store_result_file(run_id=run_id, attempt=attempt, out_dir=out_dir, entry=entry, written=written)
            for entry in outcome.files
        ]
    except Exception as error:  # a storage failure fails this run only
        logger.exception("could not store the files of run %s", run_id)
        delete_stored_files(names=written)
        failure = f"could not store the result files: {error}"
        _record(run_id, lambda: Run.objects.fail(run_id=run_id, attempt=attempt, error=failure, log=outcome.log))
        return False
    try:
        completed = _record(
            run_id, lambda: Run.objects.complete(run_id=run_id, attempt=attempt, log=outcome.log, files=files)
        )
    except DATABASE_UNREACHABLE:
        raise  # files kept: the row may name them (see above); the lease lapses and the run is rerun or ended
    except Exception as error:  # the database refused this outcome (not an outage): it fails, and keeps no file
        logger.exception("could not record the outcome of run %s", run_id)
        delete_stored_files(names=written)
        failure = f"could not record the outcome: {type(error).__name__}: {error}"
        _record(run_id, lambda: Run.objects.fail(run_id=run_id, attempt=attempt, error=failure))
        return False
    if not completed and _record(
        run_id, lambda: Run.objects.confirm_completed(run_id=run_id, attempt=attempt, files=files)
    ):
        return True  # an earlier try did commit: only its answer was lost on the way
    if not completed:
        delete_stored_files(names=written)  # the run was cancelled, ended or rerun meanwhile
    return completed


def _record(run_id, change):
    """Save a finished run's outcome, retrying while the database is unreachable; returns what `change` returns.

    A result, once computed, is not dropped for an outage: attempts back off from 1 s to 30 s
    for PARSEQ_RECORD_RETRY_SECONDS, each a turn of its own (a connection that failed is not used
    again), before the error is raised. Every change is conditional on the run's status, so an
    attempt that did commit before its answer was lost cannot be applied twice. The failed tries
    are counted on the run (/metrics).
    """
    deadline = _clock() + settings.RECORD_RETRY_SECONDS
    delay, failures = 1, 0
    while True:
        try:
            with slots.database_turn():  # a broken connection is not reused
                result = change()
        except DATABASE_UNREACHABLE as error:
            failures += 1
            if failures == 1:
                logger.warning("the database is unreachable; keeping the run's outcome until it answers")
            if _clock() + delay > deadline:
                logger.error("gave up recording the run's outcome after %d attempts: %s", failures, error)
                raise
            _sleep(delay)
            delay = min(delay * 2, 30)
            continue
        if failures:
            logger.warning("recorded the run's outcome after %d failed attempts", failures)
            with slots.database_turn():
                Run.objects.note_recording_retries(run_id=run_id, count=failures)
        return result


def _store_result_file(*, run_id, attempt, out_dir, entry, written):
    """Store one result file and note its name in `written` as soon as anything may be in storage."""
    path = result_path(run_id=run_id, filename=entry.name, attempt=attempt)
    written.append(path)  # before saving: a save that fails part-way may leave a partial file
    with open(os.path.join(out_dir, entry.name), "rb") as content:
        stored = default_storage.save(path, File(content, name=entry.name))
    if stored != path:  # a file was there already, not written by this attempt: it is not ours to delete
        written[-1] = stored
        raise OSError(f"storage saved {path} as {stored}")
    content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    return {"name": entry.name, "size": entry.size, "content_type": content_type}
