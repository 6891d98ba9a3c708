"""`rundramatiq`, with as many threads as the host's run slots need (PARSEQ_WORKER_SLOTS; README: Scale).

A run's thread mostly waits on its sandbox, so threads, not cores, say how many runs a host takes
at once: the slots are shared among the processes (a process per core unless --processes says).
"""

import math

from django.conf import settings
from django_dramatiq.management.commands import rundramatiq


class Command(rundramatiq.Command):
    help = "Run Parseq's workers: PARSEQ_WORKER_SLOTS runs at once on this host, shared among the processes."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(threads=None)
        for action in parser._actions:  # argparse has no other way to reword an option's help
            if action.dest == "threads":
                action.help = "Threads per process; unset, PARSEQ_WORKER_SLOTS shared among the processes"

    def handle(self, *args, processes, threads, **options):
        threads = threads or threads_per_process(slots=settings.WORKER_SLOTS, processes=processes)
        super().handle(*args, processes=processes, threads=threads, **options)


def threads_per_process(*, slots, processes):
    """Each process's share of the host's slots, rounded up: the host takes at least `slots` runs at once."""
    return max(1, math.ceil(slots / max(1, processes)))
