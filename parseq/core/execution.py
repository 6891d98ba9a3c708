"""The worker's side of a run: its script runs in a sandbox, and the outcome is kept.

The only part of the core that starts sandboxes (runner.run_script). No database connection
is held while a sandbox runs: a long run must not pin one of the pool's connections.
"""

import glob
import hashlib
import logging
import mimetypes
import os
import shutil
import tempfile
import time

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection

import runner
from parseq.core import cancellation
from parseq.core.environment import mask_values
from parseq.core.models import Run, result_path
from parseq.core.validation import allowed_modules
from parseq.env import ConfigurationError
from runner import modules

logger = logging.getLogger(__name__)
WORKER_TEMP_PREFIX = "parseq-worker-"


def execute_run(*, run_id):
    """The worker's job: claim the run, run its script in the sandbox, keep the outcome.

    A run that is not `enqueued` (a duplicate delivery, or one already handled) is left
    alone. Returns whether the run completed (None when there was nothing to claim).
    """
    run = Run.objects.claim(run_id=run_id, grace=settings.RUN_GRACE)
    if run is None:
        return None
    with tempfile.TemporaryDirectory(prefix=WORKER_TEMP_PREFIX) as tempdir:
        try:
            script_path, script_sha256 = _copy_script(run.parser, tempdir)
        except Exception as error:  # noqa: BLE001 - a disk or an object store (botocore raises no OSError): this run only
            Run.objects.fail(run_id=run_id, error=f"cannot read the script: {error}")
            return False
        out_dir = os.path.join(tempdir, "out")
        os.mkdir(out_dir)
        backend = sandbox_backend()
        logger.info("running parser %s (%s) in the %s sandbox", run.parser_id, run.parser.name, backend)
        used = settings_used(parser=run.parser, backend=backend)
        Run.objects.note_what_ran(run_id=run_id, script_sha256=script_sha256, parser_settings=used)
        if not connection.in_atomic_block:
            connection.close()
        outcome = _run_in_sandbox(run=run, script_path=script_path, out_dir=out_dir, backend=backend)
        return _keep_outcome(run_id=run_id, outcome=outcome, out_dir=out_dir)


def _run_in_sandbox(*, run, script_path, out_dir, backend):
    """Run the script with the parser's settings; the outcome's text no longer shows the variables' values."""
    parser = run.parser
    cancelled = cancellation.watcher.watch(run.run_id)
    try:
        outcome = runner.run_script(
            script_path,
            out_dir,
            python=settings.SANDBOX_PYTHON,
            backend=backend,
            limits=run_limits(parser=parser),
            timezone=settings.TIME_ZONE,
            variables=parser.environment,
            network=parser.network,
            refused_networks=settings.REFUSED_NETWORKS,
            extra_ports=parser.extra_egress_ports,
            restricted_modules=allowed_modules() if parser.restricted else None,
            cancelled=cancelled.is_set,
            warm=warm_start(backend=backend),
            preload=warm_preload(),
        )
    finally:
        cancellation.watcher.forget(run.run_id)
    # Whoever may read runs reads these; the variables' values are for those who may change the parser.
    outcome.error = mask_values(outcome.error, environment=parser.environment)
    outcome.log = mask_values(outcome.log, environment=parser.environment)
    return outcome


def settings_used(*, parser, backend):
    """The parser's settings a run goes by, as its page shows them; variable names only, never values."""
    return {
        "script": os.path.basename(parser.script.name),
        "sandbox": f"{backend} (warm start)" if warm_start(backend=backend) else backend,
        "timeout": parser.timeout,
        "memory_limit_mb": parser.memory_limit_mb or settings.MEMORY_LIMIT_MB,
        "restricted": parser.restricted,
        "network": parser.network,
        "extra_egress_ports": parser.extra_egress_ports,
        "environment": sorted(parser.environment or {}),
    }


def run_limits(*, parser):
    """The limits of a run of `parser`: the global ones, with the parser's own where it has them."""
    mib = 1024 * 1024
    return runner.Limits(
        wall_time=parser.timeout,
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
    """Delete what killed workers left in the temporary directory, once no run can still be using it."""
    cutoff = time.time() - (settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE + 60)
    removed = 0
    for prefix in (WORKER_TEMP_PREFIX, runner.WORKDIR_PREFIX):
        for path in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
            if os.path.isdir(path) and os.lstat(path).st_mtime < cutoff:
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


def _keep_outcome(*, run_id, outcome, out_dir):
    """Store the result files and end the run as its outcome says; whether it completed."""
    if outcome.status == runner.CANCELLED:
        Run.objects.keep_log_of_cancelled(run_id=run_id, log=outcome.log)  # it ended when it was cancelled
        return False
    if not outcome.ok:
        Run.objects.fail(run_id=run_id, error=outcome.error, log=outcome.log)
        return False
    try:
        files = [_store_result_file(run_id=run_id, out_dir=out_dir, result_file=f) for f in outcome.files]
    except Exception as error:  # a storage failure fails this run only
        logger.exception("could not store the files of run %s", run_id)
        Run.objects.fail(run_id=run_id, error=f"could not store the result files: {error}", log=outcome.log)
        return False
    return Run.objects.complete(run_id=run_id, log=outcome.log, files=files)


def _store_result_file(*, run_id, out_dir, result_file):
    path = result_path(run_id=run_id, filename=result_file.name)
    with open(os.path.join(out_dir, result_file.name), "rb") as content:
        stored = default_storage.save(path, File(content, name=result_file.name))
    if stored != path:
        raise OSError(f"storage saved {path} as {stored}")
    content_type = mimetypes.guess_type(result_file.name)[0] or "application/octet-stream"
    return {"name": result_file.name, "size": result_file.size, "content_type": content_type}
