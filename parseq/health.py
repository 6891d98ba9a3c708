"""`/healthz`: whether this Parseq can serve and run, and what it runs scripts with.

Above the apps (it asks core, the broker and the scheduler), as urls.py is.
"""

import shutil
import uuid

import pika
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe

from parseq.core import execution
from parseq.scheduling.selectors import scheduler_is_active

# Where the storage probe writes (and at once deletes) its file: beside the runs' directories, never one of them.
STORAGE_PROBE_DIRECTORY = "healthz"


@require_safe
def healthz(request):
    healthy, checks = health()
    status = "ok" if healthy else "unavailable"
    if healthy and checks["storage"].startswith("degraded"):
        status = "degraded"  # still serving and running: a warning, not a failure
    return JsonResponse({"status": status, **checks}, status=200 if healthy else 503)


def health():
    """(healthy, {component: "ok" or the reason it is not}, plus which sandbox runs scripts and the scheduler).

    Storage that cannot be written is unhealthy (no run could keep its files); storage low on
    space is `degraded: …` and still healthy.
    """
    checks = {"database": _database_health(), "broker": _broker_health(), "storage": _storage_health()}
    healthy = all(value == "ok" or value.startswith("degraded") for value in checks.values())
    info = {
        "sandbox": execution.SANDBOX_DESCRIPTIONS[execution.sandbox_backend()],
        "run_limits": execution.run_limits_description(),
    }
    if checks["database"] == "ok":
        # Informative, not a failure: the web keeps working while schedulers restart.
        info["scheduler"] = "active" if scheduler_is_active() else "none running"
    return healthy, {**checks, **info}


def _storage_health():
    """Write and delete a small file where results go; on a local disk, also the free space left."""
    probe = f"{STORAGE_PROBE_DIRECTORY}/{uuid.uuid4().hex}"
    try:
        default_storage.delete(default_storage.save(probe, ContentFile(b"parseq health probe\n")))
    except Exception as error:  # noqa: BLE001 - any failure is a reason to report
        return f"unwritable: {type(error).__name__} {error}".strip()
    if isinstance(default_storage, FileSystemStorage):
        free_mib = shutil.disk_usage(default_storage.location).free // (1024 * 1024)
        if free_mib < settings.STORAGE_MIN_FREE_MB:
            return f"degraded: {free_mib} MiB free, under PARSEQ_STORAGE_MIN_FREE_MB ({settings.STORAGE_MIN_FREE_MB})"
    return "ok"


def _database_health():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure is a reason to report
        return f"unreachable: {error}".strip()
    return "ok"


def broker_parameters():
    """How to reach the broker for a quick question: one attempt, answers within 3 s."""
    parameters = pika.URLParameters(settings.BROKER_URL)
    parameters.socket_timeout = 3
    parameters.stack_timeout = (
        3  # the whole AMQP handshake: a frozen broker accepts the TCP connection, then says nothing
    )
    parameters.connection_attempts = 1
    parameters.blocked_connection_timeout = 3
    return parameters


def _broker_health():
    if not settings.BROKER_URL:
        return "ok"
    parameters = broker_parameters()
    try:
        pika.BlockingConnection(parameters).close()
    except Exception as error:  # noqa: BLE001 - any failure is a reason to report
        return f"unreachable at {parameters.host}:{parameters.port}: {type(error).__name__} {error}".strip()
    return "ok"
