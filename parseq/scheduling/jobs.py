"""The one APScheduler job of Parseq: a parser's schedule came due. Its only argument is the parser's id."""

from django.utils import timezone

from parseq.scheduling import services

FIRE = "parseq.scheduling.jobs:fire"
JOB_ID_PREFIX = "parser-"


def job_id(parser_id):
    return f"{JOB_ID_PREFIX}{parser_id}"


def fire(parser_id, *, due_times=None):
    if not due_times:
        raise RuntimeError("fire() needs the times it is due for: APScheduler must run it with the DueTimesExecutor")
    return services.fire_schedule(parser_id=parser_id, due_times=due_times, now=timezone.now())
