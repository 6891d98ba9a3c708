"""Schedules as triggers, computed against an explicit clock: intervals, one-offs, cron, DST."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.test import SimpleTestCase

from parseq.core.triggers import cron_trigger, first_due, parser_trigger, validate_cron, validate_timezone

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def parser(**fields):
    defaults = {"enabled": True, "scheduled_time": None, "repeat_after": None, "cron": "", "cron_timezone": ""}
    return SimpleNamespace(**{**defaults, **fields})


def fire_times(trigger, *, after, count):
    times, previous = [], None
    moment = trigger.get_next_fire_time(previous, after)
    while moment is not None and len(times) < count:
        times.append(moment.astimezone(UTC))
        moment = trigger.get_next_fire_time(moment, moment)
    return times


def utc(*args):
    return datetime(*args, tzinfo=UTC)


class ParserTriggerTests(SimpleTestCase):
    def trigger(self, **fields):
        return parser_trigger(parser(**fields), default_timezone="UTC")

    def test_an_interval_fires_at_the_first_run_and_then_every_interval(self):
        trigger = self.trigger(scheduled_time=NOW + timedelta(seconds=5), repeat_after=timedelta(seconds=3))

        times = fire_times(trigger, after=NOW, count=3)

        self.assertEqual(times, [NOW + timedelta(seconds=s) for s in (5, 8, 11)])

    def test_an_interval_that_started_in_the_past_continues_from_now_without_catching_up(self):
        started = NOW - timedelta(minutes=10, seconds=30)
        trigger = self.trigger(scheduled_time=started, repeat_after=timedelta(minutes=1))

        self.assertEqual(first_due(trigger, now=NOW), NOW + timedelta(seconds=30))

    def test_a_one_off_fires_once(self):
        trigger = self.trigger(scheduled_time=NOW + timedelta(seconds=2))

        self.assertEqual(fire_times(trigger, after=NOW, count=5), [NOW + timedelta(seconds=2)])

    def test_a_one_off_whose_time_passed_is_still_due_until_a_run_for_it_exists(self):
        passed = NOW - timedelta(seconds=20)
        trigger = self.trigger(scheduled_time=passed)

        self.assertEqual(first_due(trigger, now=NOW), passed)
        self.assertIsNone(first_due(trigger, now=NOW, last_due=passed))

    def test_a_disabled_parser_or_one_without_a_time_has_no_trigger(self):
        self.assertIsNone(self.trigger(enabled=False, scheduled_time=NOW, repeat_after=timedelta(hours=1)))
        self.assertIsNone(self.trigger(enabled=False, cron="* * * * *"))
        self.assertIsNone(self.trigger())

    def test_a_cron_expression_uses_its_own_timezone_and_the_first_run_as_its_earliest(self):
        trigger = self.trigger(cron="30 6 * * *", cron_timezone="Europe/Berlin", scheduled_time=utc(2026, 12, 1))

        self.assertEqual(fire_times(trigger, after=NOW, count=2), [utc(2026, 12, 1, 5, 30), utc(2026, 12, 2, 5, 30)])

    def test_a_cron_expression_without_a_timezone_uses_the_default_one(self):
        trigger = parser_trigger(parser(cron="0 9 * * *"), default_timezone="Asia/Tokyo")

        self.assertEqual(fire_times(trigger, after=NOW, count=1), [utc(2026, 11, 29, 0, 0)])


class CronMeaningTests(SimpleTestCase):
    def test_day_of_week_numbers_follow_cron_where_sunday_is_zero_or_seven(self):
        # 2026-11-29 is a Sunday, 2026-11-30 a Monday.
        for field, first in [("0", utc(2026, 11, 29, 9)), ("7", utc(2026, 11, 29, 9)), ("1", utc(2026, 11, 30, 9))]:
            with self.subTest(day_of_week=field):
                trigger = cron_trigger(f"0 9 * * {field}", timezone=UTC)
                self.assertEqual(fire_times(trigger, after=NOW, count=1), [first])

    def test_ranges_steps_and_names_of_days_mean_what_they_mean_to_cron(self):
        weekdays = fire_times(cron_trigger("0 9 * * 1-5", timezone=UTC), after=NOW, count=5)
        every_other = fire_times(cron_trigger("0 9 * * */2", timezone=UTC), after=NOW, count=4)
        named = fire_times(cron_trigger("0 9 * * SAT,sun", timezone=UTC), after=NOW, count=2)

        self.assertEqual([d.weekday() for d in weekdays], [0, 1, 2, 3, 4])
        self.assertEqual([d.isoweekday() % 7 for d in every_other], [0, 2, 4, 6])  # Sun, Tue, Thu, Sat
        self.assertEqual([d.isoweekday() for d in named], [7, 6])  # NOW is a Saturday after 09:00

    def test_a_day_of_month_and_a_day_of_week_together_mean_either(self):
        # Cron: on the 1st of the month, and on every Monday.
        times = fire_times(cron_trigger("0 9 1 * mon", timezone=UTC), after=NOW, count=3)

        self.assertEqual(times, [utc(2026, 11, 30, 9), utc(2026, 12, 1, 9), utc(2026, 12, 7, 9)])

    def test_an_unknown_macro_is_refused_as_one_naming_the_known_ones(self):
        with self.assertRaisesRegex(ValidationError, r"'@often' is not a macro; the macros are @yearly, .*@hourly"):
            validate_cron("@often")

    def test_macros_are_understood(self):
        self.assertEqual(fire_times(cron_trigger("@daily", timezone=UTC), after=NOW, count=1), [utc(2026, 11, 29)])
        self.assertEqual(fire_times(cron_trigger("@hourly", timezone=UTC), after=NOW, count=1), [utc(2026, 11, 28, 12)])


class DaylightSavingTests(SimpleTestCase):
    """Europe/Berlin: summer time starts 2026-03-29 at 02:00 (to 03:00) and ends 2026-10-25 at 03:00 (to 02:00)."""

    def test_a_daily_time_that_clocks_skip_runs_once_an_hour_later_in_wall_time(self):
        trigger = cron_trigger("30 2 * * *", timezone=BERLIN)

        times = fire_times(trigger, after=utc(2026, 3, 27, 12), count=3)

        # 02:30 CET on the 28th, the non-existent 02:30 on the 29th as 03:30 CEST, 02:30 CEST on the 30th.
        self.assertEqual(times, [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)])

    def test_a_daily_time_that_clocks_repeat_runs_once(self):
        trigger = cron_trigger("30 2 * * *", timezone=BERLIN)

        times = fire_times(trigger, after=utc(2026, 10, 24, 12), count=2)

        # 02:30 CEST on the 25th only (not 02:30 CET an hour later), then 02:30 CET on the 26th.
        self.assertEqual(times, [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)])

    def test_an_hourly_schedule_runs_every_real_hour_through_both_changes(self):
        trigger = cron_trigger("0 * * * *", timezone=BERLIN)

        autumn = fire_times(trigger, after=utc(2026, 10, 24, 23, 30), count=4)
        spring = fire_times(trigger, after=utc(2026, 3, 28, 23, 30), count=3)

        self.assertEqual(autumn, [utc(2026, 10, 25, h) for h in (0, 1, 2, 3)])
        self.assertEqual(spring, [utc(2026, 3, 29, h) for h in (0, 1, 2)])

    def test_a_fixed_local_time_moves_in_utc_when_summer_time_starts(self):
        trigger = cron_trigger("0 9 * * *", timezone=BERLIN)

        times = fire_times(trigger, after=utc(2026, 3, 28), count=2)

        self.assertEqual(times, [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7)])


class ScheduleValidationTests(SimpleTestCase):
    def test_bad_cron_expressions_are_refused_with_the_reason(self):
        cases = {
            "* * *": "it has 3 field(s), not five",
            "61 * * * *": "higher than the maximum value (59)",
            "0 0 * * 8": "'8' is not a day of the week",
            "0 0 * * fri-mon": "runs backwards",
            "": "it has 0 field(s), not five",
        }
        for expression, reason in cases.items():
            with self.subTest(expression=expression), self.assertRaises(ValidationError) as refused:
                validate_cron(expression)
            self.assertIn(reason, refused.exception.messages[0])

    def test_good_cron_expressions_pass(self):
        for expression in ["*/5 * * * *", "30 6 * * mon-fri", "0 0 1,15 * *", "@weekly", "0 12 * jan-mar 0,6"]:
            with self.subTest(expression=expression):
                validate_cron(expression)

    def test_unknown_timezones_are_refused(self):
        validate_timezone("Europe/Berlin")
        for name in ["Mars/Olympus", "../etc/passwd", ""]:
            with self.subTest(name=name), self.assertRaises(ValidationError):
                validate_timezone(name)


class ScheduleLimitTests(SimpleTestCase):
    def test_a_cron_expression_that_never_comes_due_is_refused(self):
        with self.assertRaises(ValidationError) as refused:
            validate_cron("0 0 31 2 *")

        self.assertIn("never comes due", refused.exception.messages[0])

    def test_a_schedule_beyond_the_last_date_has_no_next_run_instead_of_failing(self):
        trigger = parser_trigger(
            parser(scheduled_time=datetime(2000, 1, 1, tzinfo=UTC), repeat_after=timedelta(days=999_999_999)),
            default_timezone="UTC",
        )

        self.assertIsNone(first_due(trigger, now=NOW))
