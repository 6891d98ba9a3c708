"""`/healthz`: whether this Parseq can serve and run, and what it runs scripts with.

Above the apps (it asks core, the broker and the scheduler), as urls.py is.
"""

import pika
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from parseq.core import execution
from parseq.scheduling.selectors import scheduler_is_active


@require_safe
def healthz(request):
    healthy, checks = health()
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


def health():
    """(healthy, {component: "ok" or the reason it is not}, plus which sandbox runs scripts and the scheduler)."""
    checks = {"database": _database_health(), "broker": _broker_health()}
    healthy = all(value == "ok" for value in checks.values())
    info = {
        "sandbox": execution.SANDBOX_DESCRIPTIONS[execution.sandbox_backend()],
        "run_limits": execution.run_limits_description(),
    }
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
