"""`/metrics`: Parseq's state in Prometheus's text format, for staff or a scraper holding PARSEQ_METRICS_TOKEN.

Read from the database and the broker at each scrape (a few queries), so every web process
answers the same; nothing is counted in one process's memory.
"""

import hmac
from datetime import timedelta

import pika
from django.conf import settings
from django.db.models import Count, ExpressionWrapper, F, Max, Sum, fields
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from parseq.core.models import Run
from parseq.health import broker_parameters
from parseq.scheduling.selectors import scheduler_is_active

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The window of the duration and lateness figures: recent enough to show how things go now.
RECENT = timedelta(hours=1)
QUEUES = ("runs", "runs.DQ")  # dramatiq's queue of runs, and its dead letters


@require_safe
def metrics(request):
    refusal = _refusal(request)
    if refusal:
        return refusal
    return HttpResponse("".join(_lines()), content_type=CONTENT_TYPE)


def _refusal(request):
    """None for staff or the right bearer token; else a JSON 401 (nobody known) or 403 (not staff)."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme == "Bearer" and hmac.compare_digest(given.encode(), token.encode()):
        return None
    if request.user.is_authenticated and request.user.is_staff:
        return None
    if request.user.is_authenticated:
        return JsonResponse({"detail": "Metrics are for staff.", "code": "permission_denied"}, status=403)
    detail = "Sign in as staff, or send `Authorization: Bearer <PARSEQ_METRICS_TOKEN>`."
    return JsonResponse({"detail": detail, "code": "not_authenticated"}, status=401)


def _lines():
    yield from _metric("parseq_runs", "gauge", "Runs kept, by status and trigger.", _runs_by_status())
    since = timezone.now() - RECENT
    finished = Run.objects.filter(finished_time__gte=since, started_time__isnull=False)
    took = ExpressionWrapper(F("finished_time") - F("started_time"), output_field=fields.DurationField())
    durations = finished.aggregate(count=Count("pk"), total=Sum(took))
    help_text = "Seconds from start to end of the runs that ended in the last hour."
    yield f"# HELP parseq_run_duration_seconds {help_text}\n# TYPE parseq_run_duration_seconds summary\n"
    yield f"parseq_run_duration_seconds_count {durations['count']}\n"
    yield f"parseq_run_duration_seconds_sum {_seconds(durations['total'])}\n"
    reruns = Run.objects.filter(attempt__gt=1).aggregate(runs=Count("pk"), attempts=Sum(F("attempt") - 1))
    yield from _metric(
        "parseq_rerun_runs", "gauge", "Runs kept that ran again after losing a worker.", [("", reruns["runs"])]
    )
    yield from _metric(
        "parseq_reruns",
        "gauge",
        "Extra attempts of the runs kept (one per lost worker).",
        [("", reruns["attempts"] or 0)],
    )
    retries = Run.objects.filter(recording_retries__gt=0).aggregate(runs=Count("pk"), tries=Sum("recording_retries"))
    yield from _metric(
        "parseq_recording_retries",
        "gauge",
        "Failed tries at recording the outcome of the runs kept (the database was unreachable; each was retried).",
        [("", retries["tries"] or 0)],
    )
    yield from _lateness(since)
    active = 1 if scheduler_is_active() else 0
    yield from _metric("parseq_scheduler_active", "gauge", "1 while a scheduler is active.", [("", active)])
    yield from _queues()


def _runs_by_status():
    counts = Run.objects.order_by().values_list("status", "trigger").annotate(count=Count("pk"))
    return [(f'{{status="{status}",trigger="{trigger}"}}', count) for status, trigger, count in counts]


def _lateness(since):
    """How late automatic runs were created after their due time, over the last hour."""
    late = ExpressionWrapper(F("created_time") - F("scheduled_for"), output_field=fields.DurationField())
    due = Run.objects.filter(scheduled_for__gte=since).exclude(status=Run.Status.SKIPPED)
    figures = due.aggregate(count=Count("pk"), total=Sum(late), worst=Max(late))
    help_text = "Seconds between an automatic run's due time and its creation, over the last hour."
    yield f"# HELP parseq_scheduler_lateness_seconds {help_text}\n# TYPE parseq_scheduler_lateness_seconds summary\n"
    yield f"parseq_scheduler_lateness_seconds_count {figures['count']}\n"
    yield f"parseq_scheduler_lateness_seconds_sum {_seconds(figures['total'])}\n"
    worst = "The latest an automatic run was created after its due time, over the last hour."
    yield from _metric("parseq_scheduler_lateness_max_seconds", "gauge", worst, [("", _seconds(figures["worst"]))])


def _queues():
    """Messages waiting in the broker's queues (none with the in-memory broker, which only `runparseq` has)."""
    if not settings.BROKER_URL:
        return
    try:
        with pika.BlockingConnection(broker_parameters()) as connection:
            channel = connection.channel()
            depths = [(q, channel.queue_declare(queue=q, passive=True).method.message_count) for q in QUEUES]
    except Exception:  # noqa: BLE001 - an unreachable broker (or a queue not declared yet) leaves the figure out
        return
    samples = [(f'{{queue="{queue}"}}', depth) for queue, depth in depths]
    yield from _metric("parseq_queue_messages", "gauge", "Messages waiting in the broker's queues.", samples)


def _metric(name, kind, help_text, samples):
    yield f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
    for labels, value in samples:
        yield f"{name}{labels} {value}\n"


def _seconds(delta):
    return round(delta.total_seconds(), 3) if delta else 0
