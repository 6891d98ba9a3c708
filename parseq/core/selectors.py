"""Read-only questions about Parseq's state."""

import hashlib
import uuid
from datetime import timedelta

from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate, TruncHour

from parseq.core.models import AuditEntry, Parser, Run, ScriptVersion


def parsers_with_last_run():
    """Parsers annotated with the status and creation time of their newest run."""
    newest = Run.objects.filter(parser=OuterRef("pk")).order_by("-created_time")
    return Parser.objects.annotate(
        last_run_status=Subquery(newest.values("status")[:1]),
        last_run_time=Subquery(newest.values("created_time")[:1]),
    )


def with_current_version(parsers):
    """`parsers` annotated with the number of their current script version (`current_script_version`)."""
    latest = ScriptVersion.objects.filter(parser=OuterRef("pk")).order_by("-number")
    return parsers.annotate(current_script_version=Subquery(latest.values("number")[:1]))


def script_versions_of(*, parser):
    """A parser's script versions, newest first, without their sources (a list shows them)."""
    return parser.script_versions.defer("source").select_related(None).order_by("-number")


def success_rate(*, parser, last=20):
    """(succeeded, counted) over the parser's last `last` runs that completed or failed."""
    statuses = list(
        parser.runs.filter(status__in=[Run.Status.COMPLETED, Run.Status.ERROR]).values_list("status", flat=True)[:last]
    )
    return statuses.count(Run.Status.COMPLETED), len(statuses)


def recent_finished(*, parser, last=50):
    """The parser's last `last` runs that started and ended, oldest first (for its history chart)."""
    runs = parser.runs.filter(started_time__isnull=False, finished_time__isnull=False).order_by("-created_time")
    fields = ["run_id", "parser_id", "status", "created_time", "started_time", "finished_time"]
    return list(reversed(runs.only(*fields)[:last]))


def daily_success(*, parser, now, days=30):
    """{day: (succeeded, counted)} over the parser's runs that completed or failed in the last `days` days."""
    per_day = (
        parser.runs.filter(
            created_time__gte=now - timedelta(days=days), status__in=[Run.Status.COMPLETED, Run.Status.ERROR]
        )
        .annotate(day=TruncDate("created_time"))
        .values("day")
        .annotate(counted=Count("pk"), succeeded=Count("pk", filter=Q(status=Run.Status.COMPLETED)))
        .order_by("day")
    )
    return {row["day"]: (row["succeeded"], row["counted"]) for row in per_day}


def hourly_runs(*, now, hours=24):
    """{hour: {status: count}} of the runs created in the last `hours` hours (for the dashboard's chart)."""
    per_hour = (
        Run.objects.filter(created_time__gte=now - timedelta(hours=hours))
        .annotate(hour=TruncHour("created_time"))
        .values("hour", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    counts = {}
    for row in per_hour:
        counts.setdefault(row["hour"], {})[row["status"]] = row["count"]
    return counts


def live_fingerprint(*, scope):
    """What changes whenever a run in `scope` ("runs", "parser:<id>", "run:<uuid>") is added, changes or goes.

    Pages compare it to the one they were drawn with, to know when to redraw. None for a malformed scope.
    """
    runs = Run.objects.all()
    kind, _, key = scope.partition(":")
    if scope == "runs":
        return all_runs_fingerprint()
    try:
        if kind == "parser":
            runs = runs.filter(parser_id=int(key))
        elif kind == "run":
            runs = runs.filter(pk=uuid.UUID(key))
        else:
            return None
    except ValueError:
        return None
    latest = runs.aggregate(count=Count("pk"), changed=Max("updated_time"))
    changed = latest["changed"].isoformat() if latest["changed"] else ""
    return f"{latest['count']}/{changed}"


def all_runs_fingerprint():
    """live_fingerprint of every run, from two indexes rather than a count of a million rows: the newest change
    of a run, and the newest audit entry (a person's deletion of a run or a parser writes one). Retention's
    deletions of old runs alone leave it as it was: the newest runs, which the lists show first, stay.
    """
    changed = Run.objects.aggregate(changed=Max("updated_time"))["changed"]
    audited = AuditEntry.objects.aggregate(newest=Max("pk"))["newest"]
    # Hashed: those who may read runs need not learn how many entries the audit trail has.
    return hashlib.sha256(f"{changed.isoformat() if changed else ''}/{audited or 0}".encode()).hexdigest()[:16]


# The search box of the run list takes a run by the first digits of its id from this many on.
ID_PREFIX_DIGITS = 4
MAX_SEARCH_WORDS = 10


def runs_matching(*, runs, text):
    """`runs` that match every word of `text`: the word starts the run's id, or is in its parser's name or its error.

    Each through an index: an id's first digits are a range of ids, a name's parsers are looked up among the
    parsers first, and an error is searched by its trigrams (migration 0014, on PostgreSQL).
    """
    for word in text.split()[:MAX_SEARCH_WORDS]:
        named = Parser.objects.filter(name__icontains=word).values_list("pk", flat=True)
        matches = Q(parser_id__in=list(named)) | (Q(error__icontains=word) & ~Q(error=""))
        digits = word.replace("-", "").lower()
        if ID_PREFIX_DIGITS <= len(digits) <= 32 and all(digit in "0123456789abcdef" for digit in digits):
            matches |= Q(pk__gte=uuid.UUID(digits.ljust(32, "0")), pk__lte=uuid.UUID(digits.ljust(32, "f")))
        runs = runs.filter(matches)
    return runs


FAILING_SHOWN = 10


def dashboard(*, now):
    """The admin index: runs of the last 24 h by status, the runs in progress, and parsers whose last run failed."""
    failing = parsers_with_last_run().filter(last_run_status=Run.Status.ERROR).order_by("name")
    counts = dict(
        Run.objects.filter(created_time__gte=now - timedelta(hours=24))
        .values_list("status")
        .annotate(count=Count("pk"))
        .values_list("status", "count")
    )
    return {
        "last_day": [(status, counts.get(status, 0)) for status in Run.Status.values],
        "in_progress": Run.objects.filter(status__in=Run.ACTIVE_STATUSES).select_related("parser")[:50],
        # Bounded: the page links the rest (the runs in error) rather than growing with them.
        "failing": list(failing[:FAILING_SHOWN]),
        "failing_more": max(0, failing.count() - FAILING_SHOWN),
    }
