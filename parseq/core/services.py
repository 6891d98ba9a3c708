"""What Parseq does: every entry point (admin, API, scheduler, worker, CLI) calls these."""

import ast
import glob
import hashlib
import logging
import mimetypes
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

import runner
from parseq.core import audit, cancellation
from parseq.core.environment import mask_values
from parseq.core.events import run_finished, runs_enqueued
from parseq.core.models import AuditEntry, Parser, Run
from parseq.core.validation import MAX_SCRIPT_BYTES, allowed_modules, validate_script
from runner import modules

logger = logging.getLogger(__name__)
ERROR_FILENAME = "error.txt"
WORKER_TEMP_PREFIX = "parseq-worker-"
# Imported by the warm start's zygote besides the sandbox's top-level packages: the parts scrapers load most.
LOST_RUN_ERROR = "worker lost: the run did not finish by its deadline (its worker stopped or was killed)"


def check_script(*, uploaded_file, restricted):
    """Raise ValidationError listing every way the uploaded script breaks the contract."""
    uploaded_file.seek(0)
    content = uploaded_file.read(MAX_SCRIPT_BYTES + 1)
    uploaded_file.seek(0)
    name, size = os.path.basename(uploaded_file.name), uploaded_file.size
    problems = validate_script(filename=name, content=content, size=size, restricted=restricted)
    if problems:
        raise ValidationError([str(problem) for problem in problems])


def script_from_text(*, text, parser_name):
    """A script written as text (the admin's editor, the API's `script_text`), as an upload named after its parser."""
    filename = f"{slugify(parser_name).replace('-', '_') or 'parser'}.py"
    return SimpleUploadedFile(filename, text.encode("utf-8"), content_type="text/x-python")


def script_source(*, parser):
    """The parser's script as text, for showing and editing; undecodable bytes are shown replaced."""
    # Through the storage, not the field: closing the field's file would break a form that checks it next.
    with parser.script.storage.open(parser.script.name, "rb") as source:
        return source.read(MAX_SCRIPT_BYTES + 1).decode("utf-8", errors="replace")


def load_demo_parsers(*, directory):
    """Add each script in `directory` as a parser named after its file, automatic runs off.

    Idempotent: a parser of that name is left as it is (its user may have changed it).
    Returns (added names, names that were there already).
    """
    added, present = [], []
    for path in sorted(Path(directory).glob("*.py")):
        if Parser.objects.filter(name=path.stem).exists():
            present.append(path.stem)
            continue
        content = path.read_bytes()
        script = ContentFile(content, name=path.name)
        check_script(uploaded_file=script, restricted=True)
        description = ast.get_docstring(ast.parse(content)) or ""
        parser = Parser(name=path.stem, description=description, script=script, enabled=False)
        save_parser(parser=parser, user=None, source=AuditEntry.Source.COMMAND)
        added.append(path.stem)
    return added, present


def save_parser(*, parser, user, source):
    """Create or change a parser (admin, API) and record who did it and which fields changed."""
    with transaction.atomic():
        before = Parser.objects.filter(pk=parser.pk).first() if parser.pk else None
        fields = audit.changed_fields(before=before, after=parser)
        parser.save()
        if before is None:
            audit.record(user=user, action=AuditEntry.Action.CREATED, source=source, parser=parser, fields=fields)
        elif fields:  # a save that changed nothing is not news
            audit.record(user=user, action=AuditEntry.Action.CHANGED, source=source, parser=parser, fields=fields)
    return parser


def delete_parser(*, parser, user, source):
    """Delete a parser with its runs and their files, and record who did it."""
    with transaction.atomic():
        audit.record(user=user, action=AuditEntry.Action.DELETED, source=source, parser=parser)
        parser.delete()


def delete_run(*, run, user, source):
    """Delete a run with its files, and record who did it (retention's deletions are not a person's)."""
    with transaction.atomic():
        audit.record(user=user, action=AuditEntry.Action.DELETED, source=source, parser=run.parser, run_id=run.pk)
        run.delete()


def enqueue_run(*, parser, trigger, scheduled_for=None, user=None):
    """Create a run and send it to the workers once the transaction commits; a user's run goes in the audit trail."""
    run = Run(parser=parser, trigger=trigger, status=Run.Status.ENQUEUED, scheduled_for=scheduled_for)
    with transaction.atomic():
        create_runs(runs=[run])
        if user is not None:
            source = AuditEntry.Source.API if trigger == Run.Trigger.API else AuditEntry.Source.ADMIN
            audit.record(user=user, action=AuditEntry.Action.RAN, source=source, parser=parser, run_id=run.run_id)
    return run


def create_runs(*, runs):
    """Insert `runs` (unsaved) in one statement; those `enqueued` are sent to the workers once the transaction commits.

    The scheduler creates a round's runs and recorded skips together with it: one INSERT, not one per parser.
    Run has no save signals to miss.
    """
    Run.objects.bulk_create(runs)
    run_ids = [run.run_id for run in runs if run.status == Run.Status.ENQUEUED]
    if run_ids:
        transaction.on_commit(lambda: send_runs(run_ids=run_ids))
    return runs


def send_runs(*, run_ids):
    """Have `run_ids` handed to the workers: the actors' module does it (events.runs_enqueued)."""
    runs_enqueued.send(sender=Run, run_ids=list(run_ids))


def fail_unsent_run(*, run_id, error):
    """A run the broker did not accept ends in error rather than waiting forever."""
    _finish(
        run_id=run_id,
        expected=Run.Status.ENQUEUED,
        status=Run.Status.ERROR,
        error=f"could not enqueue the run: the broker did not accept it ({error})",
    )


def execute_run(*, run_id):
    """The worker's job: claim the run, run its script in the sandbox, store the outcome.

    A run that is not `enqueued` (a duplicate delivery, or one already handled) is
    left alone. No database connection is held while the sandbox runs.
    """
    run = claim_run(run_id=run_id)
    if run is None:
        return None
    with tempfile.TemporaryDirectory(prefix=WORKER_TEMP_PREFIX) as tempdir:
        try:
            script_path, script_sha256 = _copy_script(run.parser, tempdir)
        except Exception as error:  # noqa: BLE001 - a disk or an object store (botocore raises no OSError): this run only
            return _fail_running(run_id=run_id, error=f"cannot read the script: {error}")
        out_dir = os.path.join(tempdir, "out")
        os.mkdir(out_dir)
        limits = run_limits(parser=run.parser)
        backend = sandbox_backend()
        logger.info("running parser %s (%s) in the %s sandbox", run.parser_id, run.parser.name, backend)
        Run.objects.filter(pk=run_id).update(
            script_sha256=script_sha256, parser_settings=settings_used(parser=run.parser, backend=backend)
        )
        if not connection.in_atomic_block:
            connection.close()
        cancelled = cancellation.watcher.watch(run.run_id)
        try:
            outcome = runner.run_script(
                script_path,
                out_dir,
                python=settings.SANDBOX_PYTHON,
                backend=backend,
                limits=limits,
                timezone=settings.TIME_ZONE,
                variables=run.parser.environment,
                network=run.parser.network,
                refused_networks=settings.REFUSED_NETWORKS,
                extra_ports=run.parser.extra_egress_ports,
                restricted_modules=allowed_modules() if run.parser.restricted else None,
                cancelled=cancelled.is_set,
                warm=warm_start(backend=backend),
                preload=warm_preload(),
            )
        finally:
            cancellation.watcher.forget(run.run_id)
        # Whoever may read runs reads these; the variables' values are for those who may change the parser.
        outcome.error = mask_values(outcome.error, environment=run.parser.environment)
        outcome.log = mask_values(outcome.log, environment=run.parser.environment)
        return _record_outcome(run_id=run_id, outcome=outcome, out_dir=out_dir)


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


def cancel_run(*, run, user, source):
    """Stop an enqueued or running run. Its sandbox, if it has one, is killed within a second.

    Returns False when the run had already ended.
    """
    now = timezone.now()
    who = user.get_username() if user else "unknown"
    with transaction.atomic():
        cancelled = Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE_STATUSES).update(
            status=Run.Status.CANCELLED,
            cancelled_by=user,
            error=f"cancelled by {who}",
            finished_time=now,
            updated_time=now,
            deadline=None,
        )
        if cancelled:
            audit.record(user=user, action=AuditEntry.Action.CANCELLED, source=source, parser=run.parser, run_id=run.pk)
    if cancelled:
        logger.info("run %s cancelled by %s", run.pk, who)
        run_finished.send(sender=Run, run_id=run.pk, status=Run.Status.CANCELLED)
    run.refresh_from_db()
    return bool(cancelled)


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
    return settings.SANDBOX_BACKEND or runner.best_backend()


def warm_start(*, backend):
    """Whether runs start warm: forked from a zygote (README: Isolation); subprocess and bwrap can, docker cannot."""
    return settings.SANDBOX_WARM_START and backend in runner.WARM_BACKENDS


def warm_preload():
    """What the warm start's zygote imports before any run: the sandbox's libraries and what scrapers use most."""
    return modules.warm_preload(settings.SANDBOX_REQUIREMENTS)


def claim_run(*, run_id):
    """Move a run from enqueued to running; None when another delivery got there first."""
    now = timezone.now()
    run = Run.objects.select_related("parser").filter(pk=run_id).first()
    if run is None:
        logger.warning("run %s does not exist; message dropped", run_id)
        return None
    claimed = Run.objects.filter(pk=run_id, status=Run.Status.ENQUEUED).update(
        status=Run.Status.RUNNING,
        started_time=now,
        deadline=now + timedelta(seconds=run.parser.timeout + settings.RUN_GRACE),
        updated_time=now,
    )
    return run if claimed else None


def _copy_script(parser, tempdir):
    """Copy the script next to the run; returns its path and its SHA-256."""
    path = os.path.join(tempdir, os.path.basename(parser.script.name) or "script.py")
    digest = hashlib.sha256()
    with parser.script.storage.open(parser.script.name, "rb") as source, open(path, "wb") as target:
        while chunk := source.read(64 * 1024):
            digest.update(chunk)
            target.write(chunk)
    return path, digest.hexdigest()


def _record_outcome(*, run_id, outcome, out_dir):
    if outcome.status == runner.CANCELLED:
        # The run ended when it was cancelled; what the script printed until then is still worth keeping.
        Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).update(log=outcome.log, updated_time=timezone.now())
        return False
    if not outcome.ok:
        return _fail_running(run_id=run_id, error=outcome.error, log=outcome.log)
    try:
        files = [_store_result_file(run_id=run_id, out_dir=out_dir, result_file=f) for f in outcome.files]
    except Exception as error:  # a storage failure fails this run only
        logger.exception("could not store the files of run %s", run_id)
        return _fail_running(run_id=run_id, error=f"could not store the result files: {error}", log=outcome.log)
    status = Run.Status.COMPLETED
    return _finish(run_id=run_id, expected=Run.Status.RUNNING, status=status, log=outcome.log, files=files)


def _fail_running(*, run_id, error, log=""):
    return _finish(run_id=run_id, expected=Run.Status.RUNNING, status=Run.Status.ERROR, error=error, log=log)


def _store_result_file(*, run_id, out_dir, result_file):
    path = result_path(run_id=run_id, filename=result_file.name)
    with open(os.path.join(out_dir, result_file.name), "rb") as content:
        stored = default_storage.save(path, File(content, name=result_file.name))
    if stored != path:
        raise OSError(f"storage saved {path} as {stored}")
    content_type = mimetypes.guess_type(result_file.name)[0] or "application/octet-stream"
    return {"name": result_file.name, "size": result_file.size, "content_type": content_type}


def result_path(*, run_id, filename):
    return f"{run_id}/{filename}"


def _finish(*, run_id, expected, status, error="", log="", files=()):
    """End a run that is still in the `expected` status; False if something else ended it first."""
    now = timezone.now()
    finished = Run.objects.filter(pk=run_id, status=expected).update(
        status=status, error=error, log=log, files=list(files), finished_time=now, updated_time=now, deadline=None
    )
    if not finished:
        logger.warning("run %s was no longer %s; its outcome (%s) was dropped", run_id, expected, status)
    else:
        logger.info("run %s ended %s%s", run_id, status, f": {error.splitlines()[-1]}" if error else "")
        run_finished.send(sender=Run, run_id=run_id, status=status)
    return bool(finished)


def delete_stored_files(*, names):
    """Delete files from storage, logging (not raising) failures: the rows are gone already."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a storage outage must not undo the deletion the user asked for
            logger.exception("could not delete %s from storage", name)


def fail_lost_runs(*, now=None):
    """End in error every run still `running` past its deadline. Returns how many."""
    now = now or timezone.now()
    ended = 0
    for run_id in Run.objects.filter(status=Run.Status.RUNNING, deadline__lt=now).values_list("pk", flat=True):
        ended += _finish(run_id=run_id, expected=Run.Status.RUNNING, status=Run.Status.ERROR, error=LOST_RUN_ERROR)
    return ended


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


def resend_enqueued_runs():
    """Send again every `enqueued` run: an in-memory broker loses its queue when the process stops."""
    run_ids = list(Run.objects.filter(status=Run.Status.ENQUEUED).values_list("run_id", flat=True))
    send_runs(run_ids=run_ids)
    return len(run_ids)
