import hashlib
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from parseq.core.lifecycle import UNSENT_ERROR, RunQuerySet
from parseq.core.triggers import CRON_HELP, validate_cron, validate_timezone
from parseq.core.validation import validate_webhook_url
from runner.egress import egress_ports_problem
from runner.names import shows_as_written

MAX_INTERVAL_DAYS = 3660
MAX_ATTEMPTS = 10
# A failed run's error downloads under this name, beside (never among) its result files.
ERROR_FILENAME = "error.txt"
# The largest id a row may have (bigint): a filter given a larger one answers "no such", not a database error.
LARGEST_ID = 2**63 - 1


def default_timeout():
    return settings.RUN_TIMEOUT


def validate_timeout(seconds):
    if not 1 <= seconds <= settings.MAX_RUN_TIMEOUT:
        raise ValidationError(f"The timeout must be between 1 and {settings.MAX_RUN_TIMEOUT} seconds.")


def validate_interval(interval):
    if interval.total_seconds() < 1:
        raise ValidationError("The interval must be at least one second.")
    if interval.days > MAX_INTERVAL_DAYS:
        raise ValidationError(f"The interval must be at most {MAX_INTERVAL_DAYS} days.")


def validate_egress_ports(ports):
    problem = egress_ports_problem(ports)
    if problem:
        raise ValidationError(problem)


def validate_first_run(moment):
    # Far enough for any schedule, near enough that its times stay within what dates can hold.
    if moment.year >= 9000:
        raise ValidationError("The first run must be before the year 9000.")


def script_upload_path(parser, filename):
    return f"scripts/{uuid.uuid4().hex}/{filename}"


class Parser(models.Model):
    """A user's parser script and when it runs on its own."""

    # What a user edits, by group, in the order forms show it (the admin's form, the API's serializer).
    SCRIPT_FIELDS = ("name", "description", "script")
    SCHEDULE_FIELDS = ("enabled", "scheduled_time", "repeat_after", "cron", "cron_timezone", "overlap")
    SANDBOX_FIELDS = ("timeout", "max_attempts", "memory_limit_mb", "restricted", "network", "extra_egress_ports")
    ALERT_FIELDS = ("webhook_url", "webhook_on")
    RETENTION_FIELDS = ("keep_last_runs", "keep_days")
    EDITABLE_FIELDS = SCRIPT_FIELDS + SCHEDULE_FIELDS + SANDBOX_FIELDS + ALERT_FIELDS + RETENTION_FIELDS

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    script = models.FileField(
        upload_to=script_upload_path, max_length=255, help_text="A .py file that defines parse()."
    )
    enabled = models.BooleanField(default=True, help_text="Automatic runs on or off; Run now works either way.")
    scheduled_time = models.DateTimeField(
        null=True, blank=True, validators=[validate_first_run], help_text="The first automatic run."
    )
    repeat_after = models.DurationField(
        null=True,
        blank=True,
        validators=[validate_interval],
        help_text="Interval between automatic runs, as HH:MM:SS; empty runs once.",
    )
    cron = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_cron],
        help_text=f"Instead of an interval: a cron expression, {CRON_HELP}. The first run, if set, is the earliest.",
    )
    cron_timezone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_timezone],
        help_text="The timezone of the cron expression, as in Europe/Berlin; empty uses the server's TIME_ZONE.",
    )

    class Overlap(models.TextChoices):
        SKIP = "skip", "skip (recorded in the run history)"
        ALLOW = "allow", "allow"

    overlap = models.CharField(
        max_length=16,
        choices=Overlap.choices,
        default=Overlap.SKIP,
        help_text="When an automatic run is due while the previous run is still enqueued or running.",
    )
    timeout = models.PositiveIntegerField(
        default=default_timeout,
        validators=[validate_timeout],
        help_text="Seconds a run may take before it is killed.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=2,
        db_default=2,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ATTEMPTS)],
        help_text="How many times a run may start when its worker is lost (killed, or stopped mid-run); "
        "1 never starts it again. A script's own failure is never retried.",
    )
    memory_limit_mb = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(64)],
        help_text="Memory a run may use, in MiB; empty uses the global limit (PARSEQ_MEMORY_LIMIT_MB).",
    )

    class Network(models.TextChoices):
        INTERNET = "internet", "internet"
        NONE = "none", "none (bwrap only)"

    restricted = models.BooleanField(
        default=True,
        help_text="Run under the RestrictedPython policy (no names starting with _, no exec/eval, only allowed "
        "imports). Turn off only for trusted authors; the sandbox holds either way.",
    )
    network = models.CharField(max_length=16, choices=Network.choices, default=Network.INTERNET)
    extra_egress_ports = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_egress_ports],
        help_text="Ports besides 80 and 443 that this parser's requests may go to, as in 8080, 8443.",
    )
    environment = models.JSONField(
        default=dict,
        blank=True,
        help_text="Variables for this parser's runs only (API keys, base URLs); values are shown masked.",
    )
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[validate_webhook_url],
        help_text="Receives a JSON POST when a run ends (Slack-compatible: it has a `text`); empty sends nothing.",
    )

    class WebhookOn(models.TextChoices):
        ERROR = "error", "runs that end in error"
        FINISH = "finish", "every run that ends (completed, error or cancelled)"

    webhook_on = models.CharField(max_length=16, choices=WebhookOn.choices, default=WebhookOn.ERROR)
    keep_last_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Delete older finished runs with their files beyond this many; empty uses PARSEQ_KEEP_RUNS.",
    )
    keep_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Delete finished runs older than this many days with their files; empty uses PARSEQ_KEEP_DAYS.",
    )
    # The SHA-256 of the stored script, taken from the upload as it is saved: a run page compares it with
    # the run's own without reading the script back from storage (an S3 GET per page view).
    script_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    created_time = models.DateTimeField(auto_now_add=True)
    updated_time = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        # Beside view/add/change/delete: starting a run by hand (the admin's Run now, the API's run/).
        permissions = [("run_parser", "Can run parsers now")]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        """Save; a new script's hash is taken from the upload itself, before it is stored."""
        if self.script and not self.script._committed:
            self.script_sha256 = sha256_of(self.script.file)
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "script_sha256"}
        super().save(*args, **kwargs)

    def clean(self):
        super().clean()
        if not shows_as_written(self.name):  # names are printed in terminals (`parseq runs`) and logs
            raise ValidationError({"name": "A name cannot hold control characters or bidirectional controls."})
        if self.cron and self.repeat_after:
            raise ValidationError({"cron": "Choose either an interval (repeat after) or a cron expression, not both."})
        if self.repeat_after and self.scheduled_time is None:
            raise ValidationError({"scheduled_time": "An interval needs its first run: set the scheduled time."})


class ScriptVersion(models.Model):
    """One state of a parser's script. Every change appends one; none is ever rewritten, and none is deleted
    before its parser (runs refer to the version they ran, and a version cannot go before its runs).
    """

    parser = models.ForeignKey(Parser, on_delete=models.CASCADE, related_name="script_versions")
    number = models.PositiveIntegerField()
    # Scripts are UTF-8 text of at most 256 KiB (core/validation.py): kept in the row, diffed from it.
    source = models.TextField()
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    author_name = models.CharField(max_length=150, blank=True)
    message = models.CharField(max_length=200, blank=True)
    created_time = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["parser", "-number"]
        constraints = [models.UniqueConstraint(fields=["parser", "number"], name="one_script_version_per_number")]

    def __str__(self):
        return f"{self.parser_id} v{self.number}"


def sha256_of(file):
    """The SHA-256 of a Django File's content, read in chunks (from its start)."""
    digest = hashlib.sha256()
    for chunk in file.chunks():
        digest.update(chunk)
    return digest.hexdigest()


class Run(models.Model):
    """One execution of a parser, from enqueueing to its files or its error."""

    class Status(models.TextChoices):
        # Labels match the values: the statuses are the contract's words.
        ENQUEUED = "enqueued", "enqueued"
        RUNNING = "running", "running"
        COMPLETED = "completed", "completed"
        ERROR = "error", "error"
        # A due automatic run that did not start (missed, or overlapping); `error` says why.
        SKIPPED = "skipped", "skipped"
        # Stopped by a user (`cancelled_by`) while enqueued or running.
        CANCELLED = "cancelled", "cancelled"

    ACTIVE_STATUSES = (Status.ENQUEUED, Status.RUNNING)

    class Trigger(models.TextChoices):
        MANUAL = "manual", "manual"
        SCHEDULE = "schedule", "schedule"
        API = "api", "api"

    run_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    parser = models.ForeignKey(Parser, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENQUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    created_time = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_time = models.DateTimeField(auto_now=True)
    started_time = models.DateTimeField(null=True, blank=True)
    finished_time = models.DateTimeField(null=True, blank=True)
    # The schedule's due time this run is for; a parser's due time gets at most one run.
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # A `running` run past this moment has lost its worker.
    deadline = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    # [{"name": ..., "size": ..., "content_type": ...}], in the order the script returned them.
    files = models.JSONField(default=list, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Its attempts: the current one's number, worker and last heartbeat; the earlier ones as
    # [{"attempt", "worker", "started", "ended", "why"}] (README: When things fail).
    # Defaults in the database too: during an upgrade, code from before these columns still inserts runs.
    attempt = models.PositiveSmallIntegerField(default=1, db_default=1)
    worker = models.CharField(max_length=255, blank=True, default="", db_default="")
    heartbeat_time = models.DateTimeField(null=True, blank=True)
    attempts = models.JSONField(default=list, blank=True, db_default=[])
    # How many tries at recording its outcome failed (the database was unreachable): /metrics adds them up.
    recording_retries = models.PositiveIntegerField(default=0, db_default=0)
    # What the run used, recorded when it starts: the script's SHA-256 and the parser's sandbox settings.
    script_sha256 = models.CharField(max_length=64, blank=True)
    # The version whose content that was (RESTRICT: a version cannot be deleted while a run refers to it,
    # except with its parser, which takes its runs along).
    script_version = models.ForeignKey(
        "ScriptVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="runs"
    )
    parser_settings = models.JSONField(default=dict, blank=True)
    # What this run was given beside its parser's settings: {"environment": {NAME: value}, "timeout": seconds},
    # either left out. The values are read by the sandbox alone and shown masked, as the parser's are.
    parameters = models.JSONField(default=dict, blank=True, db_default={})

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_time"]
        # Runs are records: nobody changes one, but an operator may stop it.
        permissions = [("cancel_run", "Can cancel runs")]
        # The lists, newest first, by parser; the live pages' newest change. The search of errors has an index
        # of its trigrams too, on PostgreSQL (migration 0014).
        indexes = [
            models.Index(fields=["parser", "-created_time"]),
            models.Index(fields=["updated_time"], name="core_run_updated_time"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["parser", "scheduled_for"],
                condition=models.Q(scheduled_for__isnull=False),
                name="one_run_per_due_time",
            )
        ]

    def __str__(self):
        return str(self.run_id)

    @property
    def duration(self):
        if self.started_time and self.finished_time:
            return self.finished_time - self.started_time
        return None

    @property
    def variables(self):
        """The environment its script gets: its parser's variables, with the run's own parameters over them."""
        return {**(self.parser.environment or {}), **self.parameters.get("environment", {})}

    @property
    def timeout(self):
        """Seconds it may run: its own parameter, else its parser's timeout."""
        return self.parameters.get("timeout") or self.parser.timeout

    @property
    def is_finished(self):
        return self.status not in self.ACTIVE_STATUSES

    @property
    def has_reason(self):
        """Whether the run ended with an error or a reason (cancelled by whom, skipped why): its error.txt."""
        return self.is_finished and self.status != self.Status.COMPLETED and bool(self.error)

    @property
    def refused_by_the_broker(self):
        """Whether the run ended because the broker did not take it (`Run.objects.fail_unsent`)."""
        return self.status == self.Status.ERROR and self.error.startswith(UNSENT_ERROR)

    def file_entry(self, name):
        return next((entry for entry in self.files if entry["name"] == name), None)

    def stored_path(self, filename):
        """Where this run's result file `filename` is in storage (the attempt that completed it stored it)."""
        return result_path(run_id=self.run_id, filename=filename, attempt=self.attempt)

    def stored_names(self):
        """Where this run's result files are in storage."""
        return [self.stored_path(entry["name"]) for entry in self.files]


def result_path(*, run_id, filename, attempt=1):
    """Where a run's result file is kept in storage: `<run_id>/<filename>` for a first attempt, as its download
    URL; a later attempt's under `<run_id>/attempt-<n>/`, so that no attempt ever touches another's files.
    """
    return f"{run_id}/{filename}" if attempt == 1 else f"{run_id}/attempt-{attempt}/{filename}"


class AuditEntry(models.Model):
    """Who did what to a parser or its runs, and when: created, changed (which fields), ran, cancelled, deleted.

    Entries outlive what they are about: the parser and the user are kept by name, and the parser's id
    stays (no database constraint) after the parser is deleted. Values are never recorded, only names:
    a changed environment variable appears as `environment.NAME`.
    """

    class Action(models.TextChoices):
        CREATED = "created", "created"
        CHANGED = "changed", "changed"
        DELETED = "deleted", "deleted"
        RAN = "ran", "ran"
        CANCELLED = "cancelled", "cancelled"

    class Source(models.TextChoices):
        ADMIN = "admin", "admin"
        API = "api", "API"
        COMMAND = "command", "command"

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    parser = models.ForeignKey(
        Parser, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit_entries"
    )
    parser_name = models.CharField(max_length=200)
    run_id = models.UUIDField(null=True, blank=True)
    fields = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-time", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["parser", "-time"])]

    def __str__(self):
        return f"{self.username} {self.action} {self.parser_name}"
