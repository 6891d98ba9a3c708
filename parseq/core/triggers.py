"""A parser's schedule as APScheduler triggers.

Pure functions of the parser's fields and of the `now` they are given, so that any clock can
test them. Cron expressions mean what they mean to cron: Sunday is 0 (or 7), a day-of-month
and a day-of-week restricted together mean either, and a wall-clock time that a DST change
repeats is due once.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.core.exceptions import ValidationError

CRON_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_HELP = "five fields (minute hour day-of-month month day-of-week), as in '30 6 * * mon-fri', or @daily"


class WallClockCronTrigger(CronTrigger):
    """A cron trigger that fires once at a wall-clock time that the end of summer time repeats.

    APScheduler 3 fires at both occurrences of 02:30 on the night clocks go back; cron runs a job
    that names its hours once. Expressions over every hour keep both, since both are real hours.
    """

    def get_next_fire_time(self, previous_fire_time, now):
        fire_time = super().get_next_fire_time(previous_fire_time, now)
        while fire_time is not None and self._names_hours() and _repeats_a_wall_time(fire_time, self.timezone):
            fire_time = super().get_next_fire_time(fire_time, fire_time)
        return fire_time

    def _names_hours(self):
        hour = next(field for field in self.fields if field.name == "hour")
        return str(hour) != "*"


def _repeats_a_wall_time(moment, zone):
    """True when `moment` is the second occurrence of its local wall-clock time in `zone`."""
    wall = moment.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return first != moment.astimezone(UTC)


def cron_trigger(expression, *, timezone, start_date=None):
    """The trigger of a cron expression in a timezone; ValueError naming the problem if it is not one."""
    macro = expression.strip().lower()
    if macro.startswith("@") and macro not in CRON_MACROS:
        raise ValueError(f"{expression.strip()!r} is not a macro; the macros are {', '.join(CRON_MACROS)}")
    expression = CRON_MACROS.get(macro, expression)
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"it has {len(fields)} field(s), not five")
    minute, hour, day, month, day_of_week = fields
    days = _cron_days_of_week(day_of_week)
    common = {"minute": minute, "hour": hour, "month": month, "timezone": timezone, "start_date": start_date}
    if day != "*" and day_of_week != "*":
        # Cron runs when either day field matches; APScheduler would need both.
        return OrTrigger([WallClockCronTrigger(day=day, **common), WallClockCronTrigger(day_of_week=days, **common)])
    return WallClockCronTrigger(day=day, day_of_week=days, **common)


def _cron_days_of_week(field):
    """Cron's day-of-week field (0 or 7 is Sunday) as APScheduler's day names (where 0 is Monday)."""
    if field == "*":
        return "*"
    days = set()
    for part in field.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first = _cron_day_number(low)
            last = _cron_day_number(high) if high else (6 if step else first)
        if not step.isdigit() and step:
            raise ValueError(f"the day-of-week step {step!r} is not a number")
        if last < first:
            raise ValueError(f"the day-of-week range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, int(step or 1)))
    return ",".join(CRON_DAY_NAMES[day] for day in sorted(days))


def _cron_day_number(text):
    if text in CRON_DAY_NAMES:
        return CRON_DAY_NAMES.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"{text!r} is not a day of the week (0-7 or sun-sat)")


def parser_trigger(parser, *, default_timezone):
    """The trigger of a parser's automatic runs, or None when it has none (disabled, or no schedule)."""
    if not parser.enabled:
        return None
    if parser.cron:
        zone = ZoneInfo(parser.cron_timezone or default_timezone)
        return cron_trigger(parser.cron, timezone=zone, start_date=parser.scheduled_time)
    if parser.scheduled_time is None:
        return None
    if parser.repeat_after:
        return IntervalTrigger(
            seconds=parser.repeat_after.total_seconds(), start_date=parser.scheduled_time, timezone=UTC
        )
    return DateTrigger(run_date=parser.scheduled_time, timezone=UTC)


def first_due(trigger, *, now, last_due=None):
    """When a freshly (re)scheduled trigger is first due: its next time from `now`, after `last_due`.

    A one-off time that has passed stays due (it runs at once, or is recorded as missed) unless
    a run for it exists already: then it never fires again.
    """
    try:
        due = trigger.get_next_fire_time(None, now)
        while due is not None and last_due is not None and due <= last_due:
            due = trigger.get_next_fire_time(due, due)
    except (OverflowError, ValueError):  # the next time lies beyond the last date Python can hold
        return None
    return due


def validate_cron(expression):
    try:
        trigger = cron_trigger(expression, timezone=UTC)
    except (ValueError, TypeError) as error:
        raise ValidationError(f"Not a cron expression: {error}. Use {CRON_HELP}.") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValidationError(f"{expression!r} never comes due (is it a day that does not exist?).")


def validate_timezone(name):
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{name!r} is not a timezone; use a name such as Europe/Berlin or UTC.") from None
