"""How runs have gone, as charts (parseq/core/charts.py): a parser's last runs and daily success; the last day."""

from datetime import timedelta

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from parseq.core import charts, display, selectors

# Bottom first: what went well under what did not, what is still going on top.
STACK_ORDER = ["completed", "error", "cancelled", "skipped", "running", "enqueued"]
RECENT_RUNS_CHARTED = 50


def parser_charts(*, parser, now=None):
    """The parser page's two charts: its last 50 runs' durations, and its success rate day by day (30 days)."""
    now = now or timezone.now()
    runs = selectors.recent_finished(parser=parser, last=RECENT_RUNS_CHARTED)
    durations = [
        charts.Column(
            segments=[((run.finished_time - run.started_time).total_seconds(), run.status)],
            title=f"{display.short_id(run)}: {run.status}, {display.duration(run)}, {display.moment(run.created_time)}",
            href=reverse("admin:core_run_change", args=[run.run_id]),
        )
        for run in runs
    ]
    by_day = selectors.daily_success(parser=parser, now=now)
    days = [timezone.localdate(now) - timedelta(days=back) for back in range(29, -1, -1)]
    rates = []
    for day in days:
        succeeded, counted = by_day.get(day, (0, 0))
        title = f"{day}: {succeeded} of {counted} succeeded" + (
            f" ({round(100 * succeeded / counted)}%)" if counted else ""
        )
        rates.append(charts.Column(segments=[(100 * succeeded / counted if counted else 0, "rate")], title=title))
    longest = display.human_seconds(charts.tallest(durations))
    return [
        _chart(
            charts.rectangles(durations, slots=RECENT_RUNS_CHARTED),
            label=f"Duration of the last {len(runs)} finished runs, by status (the tallest: {longest})",
        ),
        _chart(
            charts.rectangles(rates, scale_to=100),
            label="Share of runs that succeeded, day by day over 30 days (full height: 100%)",
        ),
    ]


def dashboard_chart(*, now=None):
    """Runs created per hour over the last 24 hours, stacked by status."""
    now = now or timezone.now()
    counts = selectors.hourly_runs(now=now)
    first = timezone.localtime(now).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    columns = []
    for step in range(24):
        hour = first + timedelta(hours=step)
        statuses = counts.get(hour, {})
        parts = ", ".join(f"{statuses[status]} {status}" for status in STACK_ORDER if statuses.get(status))
        title = f"{hour:%Y-%m-%d %H}:00: {parts or 'no runs'}"
        columns.append(charts.Column(segments=[(statuses.get(s, 0), s) for s in STACK_ORDER], title=title))
    most = int(charts.tallest(columns))
    label = f"Runs per hour over the last 24 hours, by status (the tallest: {most} run{'s' if most != 1 else ''})"
    return _chart(charts.rectangles(columns), label=label)


def _chart(bars, *, label):
    context = {"bars": bars, "label": label, "width": charts.WIDTH, "height": charts.HEIGHT}
    return render_to_string("admin/core/charts/bars.html", context)
