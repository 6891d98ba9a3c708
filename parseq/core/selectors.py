"""Read-only questions about Parseq's state."""

import uuid
from datetime import timedelta

import pika
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, OuterRef, Subquery

import runner
from parseq.core import services
from parseq.core.models import Parser, Run
from parseq.scheduling.selectors import scheduler_is_active


def parsers_with_last_run():
    """Parsers annotated with the status and creation time of their newest run."""
    newest = Run.objects.filter(parser=OuterRef("pk")).order_by("-created_time")
    return Parser.objects.annotate(
        last_run_status=Subquery(newest.values("status")[:1]),
        last_run_time=Subquery(newest.values("created_time")[:1]),
    )


def success_rate(*, parser, last=20):
    """(succeeded, counted) over the parser's last `last` runs that completed or failed."""
    statuses = list(
        parser.runs.filter(status__in=[Run.Status.COMPLETED, Run.Status.ERROR]).values_list("status", flat=True)[:last]
    )
    return statuses.count(Run.Status.COMPLETED), len(statuses)


def live_fingerprint(*, scope):
    """What changes whenever a run in `scope` ("runs", "parser:<id>", "run:<uuid>") is added, changes or goes.

    Pages compare it to the one they were drawn with, to know when to redraw. None for a malformed scope.
    """
    runs = Run.objects.all()
    kind, _, key = scope.partition(":")
    try:
        if kind == "parser":
            runs = runs.filter(parser_id=int(key))
        elif kind == "run":
            runs = runs.filter(pk=uuid.UUID(key))
        elif scope != "runs":
            return None
    except ValueError:
        return None
    latest = runs.aggregate(count=Count("pk"), changed=Max("updated_time"))
    changed = latest["changed"].isoformat() if latest["changed"] else ""
    return f"{latest['count']}/{changed}"


def dashboard(*, now):
    """The admin index: runs of the last 24 h by status, the runs in progress, and parsers whose last run failed."""
    counts = dict(
        Run.objects.filter(created_time__gte=now - timedelta(hours=24))
        .values_list("status")
        .annotate(count=Count("pk"))
        .values_list("status", "count")
    )
    return {
        "last_day": [(status, counts.get(status, 0)) for status in Run.Status.values],
        "in_progress": Run.objects.filter(status__in=Run.ACTIVE_STATUSES).select_related("parser")[:50],
        "failing": parsers_with_last_run().filter(last_run_status=Run.Status.ERROR).order_by("name"),
    }


SANDBOX_DESCRIPTIONS = {
    None: f"none: {runner.NO_BACKEND}",
    "bwrap": "bwrap",
    "docker": "docker",
    "subprocess": "subprocess (weaker: no filesystem, process or network isolation)",
}


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


def health():
    """(healthy, {component: "ok" or the reason it is not}, plus which sandbox runs scripts and the scheduler)."""
    checks = {"database": _database_health(), "broker": _broker_health()}
    healthy = all(value == "ok" for value in checks.values())
    info = {"sandbox": SANDBOX_DESCRIPTIONS[services.sandbox_backend()], "run_limits": run_limits_description()}
    if checks["database"] == "ok":
        # Informative, not a failure: the web keeps working while schedulers restart.
        info["scheduler"] = "active" if scheduler_is_active() else "none running"
    return healthy, {**checks, **info}


def _database_health():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure is a reason to report
        return f"unreachable: {error}".strip()
    return "ok"


def _broker_health():
    if not settings.BROKER_URL:
        return "ok"
    parameters = pika.URLParameters(settings.BROKER_URL)
    parameters.socket_timeout = 3
    parameters.connection_attempts = 1
    parameters.blocked_connection_timeout = 3
    try:
        pika.BlockingConnection(parameters).close()
    except Exception as error:  # noqa: BLE001 - any failure is a reason to report
        return f"unreachable at {parameters.host}:{parameters.port}: {type(error).__name__} {error}".strip()
    return "ok"
