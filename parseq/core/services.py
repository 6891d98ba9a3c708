"""What users do to parsers and runs: every entry point (admin, API, scheduler, CLI) calls these.

A run's changes of status are `Run.objects`' transitions (parseq/core/lifecycle.py); a script
coming in goes through parseq/core/intake.py; the worker's side of a run is
parseq/core/execution.py; housekeeping between runs, parseq/core/housekeeping.py.
"""

import ast
from hashlib import sha256
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction

from parseq.core import audit, script_versions
from parseq.core.events import runs_enqueued
from parseq.core.intake import check_script
from parseq.core.models import AuditEntry, Parser, Run


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


def save_parser(*, parser, user, source, script_message=""):
    """Create or change a parser (admin, API, `loaddemo`) and record who did it and which fields changed.

    A new script appends a script version (`script_message` says why); the same content as the
    stored script stores nothing and appends none.
    """
    with transaction.atomic():
        # Locked: two saves at once would otherwise both take the next version number.
        before = Parser.objects.select_for_update().filter(pk=parser.pk).first() if parser.pk else None
        content = script_versions.incoming_content(parser)
        if content is not None and before is not None and sha256(content).hexdigest() == before.script_sha256:
            parser.script = before.script.name  # the same script again
            content = None
        fields = audit.changed_fields(before=before, after=parser)
        parser.save()
        if content is not None:
            script_versions.append(parser=parser, content=content, user=user, message=script_message)
        if before is None:
            audit.record(user=user, action=AuditEntry.Action.CREATED, source=source, parser=parser, fields=fields)
        elif fields:  # a save that changed nothing is not news
            audit.record(user=user, action=AuditEntry.Action.CHANGED, source=source, parser=parser, fields=fields)
    return parser


def restore_script_version(*, version, user, source):
    """Make `version`'s script the current one again, as a new version; returns the version now current.

    Versions are never rewritten: restoring version 1 of three appends version 4 (none when
    version 1 is already what is stored). Raises ValidationError when the old script breaks
    the parser's rules of today (restricted mode switched on since).
    """
    parser = version.parser
    parser.script = script_versions.as_upload(version=version, restricted=parser.restricted)
    save_parser(parser=parser, user=user, source=source, script_message=f"restored version {version.number}")
    return script_versions.latest_version(parser=parser)


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


def enqueue_run(*, parser, trigger, scheduled_for=None, user=None, parameters=None):
    """Create a run and send it to the workers once the transaction commits; a user's run goes in the audit trail.

    `parameters`: what parameters.run_parameters made of a user's variables and timeout for this run.
    """
    run = Run(
        parser=parser,
        trigger=trigger,
        status=Run.Status.ENQUEUED,
        scheduled_for=scheduled_for,
        parameters=parameters or {},
    )
    with transaction.atomic():
        create_runs(runs=[run])
        if user is not None:
            source = AuditEntry.Source.API if trigger == Run.Trigger.API else AuditEntry.Source.ADMIN
            audit.record(user=user, action=AuditEntry.Action.RAN, source=source, parser=parser, run_id=run.run_id)
    return run


def create_runs(*, runs, if_refused="fail"):
    """Insert `runs` (unsaved) in one statement; those `enqueued` are sent to the workers once the transaction commits.

    The scheduler creates a round's runs and recorded skips together with it: one INSERT, not one per parser.
    Run has no save signals to miss. `if_refused`: as for send_runs.
    """
    Run.objects.bulk_create(runs)
    run_ids = [run.run_id for run in runs if run.status == Run.Status.ENQUEUED]
    if run_ids:
        transaction.on_commit(lambda: send_runs(run_ids=run_ids, if_refused=if_refused))
    return runs


def send_runs(*, run_ids, if_refused="fail"):
    """Have `run_ids` handed to the workers: the actors' module does it (events.runs_enqueued).

    Should the broker not take a run: "fail" ends it in error (a user asked for it and is told at
    once); "wait" leaves it enqueued with a note, and the workers' reaper sends it again at its
    next sweep (the scheduler's runs, and runs sent before).
    """
    runs_enqueued.send(sender=Run, run_ids=list(run_ids), if_refused=if_refused)


def note_runs_not_sent(*, run_ids, why):
    """Enqueued runs the broker did not take: they say so, and the workers' reaper sends them again."""
    Run.objects.note_not_sent(run_ids=run_ids, why=why)


def fail_unsent_run(*, run_id, error):
    """A run the broker did not accept ends in error rather than waiting forever."""
    return Run.objects.fail_unsent(run_id=run_id, error=error)


def cancel_run(*, run, user, source):
    """Stop an enqueued or running run. Its sandbox, if it has one, is killed within a second.

    Returns False when the run had already ended.
    """
    with transaction.atomic():
        cancelled = Run.objects.cancel(run_id=run.pk, user=user)
        if cancelled:
            audit.record(user=user, action=AuditEntry.Action.CANCELLED, source=source, parser=run.parser, run_id=run.pk)
    run.refresh_from_db()
    return cancelled
