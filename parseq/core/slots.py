"""How many runs a worker process takes at once, and the few database connections they share (README: Scale)."""

import logging
import resource

from parseq.database import DatabaseTurns

logger = logging.getLogger(__name__)
# A worker process's runs take turns on this many database connections, however many run at once.
DATABASE_CONNECTIONS = 4
# What a run holds open in the worker (its pipes, its egress socket, its cgroup's files), at most.
DESCRIPTORS_PER_RUN = 16


class WorkerSlots:
    """The runs a worker process takes at once (its threads), and the few database connections they share.

    A run's thread mostly waits on its sandbox; hundreds may run in one process. Each uses the database
    only for a turn (a claim, a record), on one of DATABASE_CONNECTIONS connections kept for the turns:
    PostgreSQL's max_connections is shared by every host (parseq/database.py: DatabaseTurns).
    """

    def __init__(self, *, runs=16):
        self.runs = runs
        self.turns = DatabaseTurns(size=DATABASE_CONNECTIONS)

    def open(self, *, runs):
        """Size this process for `runs` at once (its sandboxes' process budget, its open files' limit), and
        keep its turns' connections open between turns.
        """
        self.runs = runs
        self.turns.open()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 256 + runs * DESCRIPTORS_PER_RUN
        if soft != resource.RLIM_INFINITY and soft < wanted:
            higher = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (higher, hard))
            if higher < wanted:
                logger.warning("%d open files at most here (%d runs at once may need %d)", hard, runs, wanted)

    def close(self):
        self.turns.close()

    def database_turn(self):
        return self.turns.turn()


slots = WorkerSlots()
