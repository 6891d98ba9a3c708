"""How runs look in the admin: status badges and live durations (as safe HTML), times, sizes, log tails."""

from django.utils import timezone
from django.utils.html import format_html

LOG_TAIL_LINES = 200
PREVIEWABLE_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_PREVIEW_BYTES = 5 * 1024 * 1024


def status_badge(run):
    """A coloured badge; the live script finds runs by `data-run-id` and knows active ones by `data-status`."""
    return format_html(
        '<span class="parseq-status parseq-status-{}" data-run-id="{}" data-status="{}">{}</span>',
        run.status,
        run.run_id,
        run.status,
        run.get_status_display(),
    )


def plain_status_badge(status):
    return format_html('<span class="parseq-status parseq-status-{}">{}</span>', status, status) if status else "-"


def duration(run):
    """ "12.3 s" for a finished run; "running for 12 s" for a running one, which the live script keeps counting."""
    if run.started_time is None:
        return "-"
    if run.finished_time is None:
        seconds = max(0, int((timezone.now() - run.started_time).total_seconds()))
        return format_html(
            '<span class="parseq-running-for" data-elapsed="{}">running for {}</span>', seconds, human_seconds(seconds)
        )
    return human_seconds((run.finished_time - run.started_time).total_seconds())


def human_seconds(seconds):
    if seconds < 60:
        return f"{seconds:.1f} s" if isinstance(seconds, float) else f"{seconds} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def human_size(size):
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return None  # unreachable: MiB is the last unit


def is_previewable(entry):
    return entry["content_type"] in PREVIEWABLE_IMAGES and entry["size"] <= MAX_PREVIEW_BYTES


def log_tail(text):
    """The end of a log, where the cause usually is: (the last LOG_TAIL_LINES lines as text, how many, of how many)."""
    lines = text.splitlines()
    shown = lines[-LOG_TAIL_LINES:]
    return "\n".join(shown), len(shown), len(lines)


def moment(value):
    """A time to the second, in the server's timezone, named: schedules are about seconds."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def short_id(run):
    """The first 8 hex digits of a run's id: unique enough to tell runs apart in a list, short enough to read."""
    return str(run.run_id)[:8]


def last_line(text):
    """The last line of an error: what went wrong, after the traceback that led there."""
    return text.splitlines()[-1] if text else ""
