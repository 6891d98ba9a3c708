"""Read-only questions about Parseq's state."""

import pika
from django.conf import settings
from django.db import connection
from django.db.models import OuterRef, Subquery

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


SANDBOX_DESCRIPTIONS = {
    "bwrap": "bwrap",
    "docker": "docker",
    "subprocess": "subprocess (weaker: no filesystem, process or network isolation)",
}


def health():
    """(healthy, {component: "ok" or the reason it is not}, plus which sandbox runs scripts and the scheduler)."""
    checks = {"database": _database_health(), "broker": _broker_health()}
    healthy = all(value == "ok" for value in checks.values())
    info = {"sandbox": SANDBOX_DESCRIPTIONS[services.sandbox_backend()]}
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
