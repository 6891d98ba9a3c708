"""Many long runs at once hold no database connections: PostgreSQL's connection limit does not cap the runs.

A real `rundramatiq` with PARSEQ_WORKER_SLOTS=80 shared by 2 worker processes runs 80 sandboxes at once,
while the test watches the workers' connections in `pg_stat_activity`, recognised by their
`application_name` (libpq takes it from PGAPPNAME).
"""

import logging
import time
import uuid

from django.db import connection

from parseq.core.models import Run
from parseq.core.slots import DATABASE_CONNECTIONS
from tests.helpers import make_parser, requires_postgresql_and_rabbitmq, shows_process_logs_on_failure
from tests.integration.test_rabbitmq_worker import RealWorkerTestCase
from tests.processes import command_lines, kill_groups_of

logger = logging.getLogger(__name__)
PROCESSES = 2
RUNS = SLOTS = 80
# Besides its runs' turns, a worker process's heartbeat, reaper, cancel watcher and live log may each have one.
OWN_THREADS_CONNECTIONS = 4
SLEEP_SECONDS = 15
SAMPLE_SECONDS = 4
SAMPLE_INTERVAL = 0.2


def sandboxes_alive(markers):
    """How many of `markers` (one per run, the sandbox's display name) are on a live process's command line."""
    lines = command_lines()
    return sum(any(marker in line for line in lines) for marker in markers)


@requires_postgresql_and_rabbitmq
class ConnectionContentionTests(RealWorkerTestCase):
    def worker_connections(self, application_name):
        """The workers' connections to the test database now: (pid, state, seconds since its state changed)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, state, EXTRACT(EPOCH FROM clock_timestamp() - state_change) FROM pg_stat_activity"
                " WHERE datname = %s AND application_name = %s",
                [connection.settings_dict["NAME"], application_name],
            )
            return [(pid, state, float(age or 0)) for pid, state, age in cursor.fetchall()]

    @shows_process_logs_on_failure
    def test_eighty_long_runs_on_a_host_of_eighty_slots_take_a_few_database_connections_and_keep_none_idle(self):
        # Given one worker host of 80 slots in 2 processes (no --threads), its connections named for pg_stat_activity
        application_name = f"parseq-contention-{uuid.uuid4().hex[:8]}"
        env = {"PGAPPNAME": application_name, "PARSEQ_WORKER_SLOTS": str(SLOTS)}
        worker = self.start_worker(processes=PROCESSES, threads=None, env=env)
        # And every worker process consuming, so that RabbitMQ hands each one its share of the runs
        self.wait_for(
            lambda: self.consumers() >= PROCESSES, timeout=30, message="2 consumers of the runs queue", worker=worker
        )
        # And 80 parsers whose scripts sleep 15 s, each with its own name to find its sandbox by
        prefix = f"sleeps_{uuid.uuid4().hex}"
        self.addCleanup(kill_groups_of, prefix)  # should a sandbox outlive its worker, it goes with the test
        markers = [f"{prefix}_{number}.py" for number in range(RUNS)]
        source = f"import time\n\ndef parse():\n    time.sleep({SLEEP_SECONDS})\n    return {{}}\n"
        parsers = [make_parser(source, name=marker, filename=marker, timeout=120) for marker in markers]

        # When 80 runs are sent at once
        runs = [Run.objects.create(parser=parser, trigger=Run.Trigger.API) for parser in parsers]
        for run in runs:
            self.enqueue(run)
        seen_during_start, most_during_start = set(), [0]

        def all_running():
            connections = self.worker_connections(application_name)
            seen_during_start.update(pid for pid, _, _ in connections)
            most_during_start[0] = max(most_during_start[0], len(connections))
            running = Run.objects.filter(pk__in=[run.pk for run in runs], status=Run.Status.RUNNING).count()
            return running == RUNS and sandboxes_alive(markers) == RUNS

        # (in time to watch them for SAMPLE_SECONDS before the first of them ends)
        self.wait_for(
            all_running, timeout=SLEEP_SECONDS - SAMPLE_SECONDS - 1, message="80 runs in sandboxes", worker=worker
        )
        # Then the workers' connections went by the name the test looks for, while they claimed the runs
        self.assertTrue(seen_during_start, f"no connection named {application_name} in pg_stat_activity")
        # And 80 threads claiming at once took turns on a few connections: one each would be 80
        self.assertLessEqual(most_during_start[0], PROCESSES * (DATABASE_CONNECTIONS + OWN_THREADS_CONNECTIONS))

        # And, while all 80 sandboxes run, the workers' connections are few, and none is kept open idle
        samples = []
        deadline = time.monotonic() + SAMPLE_SECONDS
        while time.monotonic() < deadline:
            samples.append(self.worker_connections(application_name))
            time.sleep(SAMPLE_INTERVAL)
        self.assertEqual(sandboxes_alive(markers), RUNS, "a sandbox ended before the sampling did")
        most = max(len(sample) for sample in samples)
        report = (
            f"{len(samples)} samples of pg_stat_activity over {SAMPLE_SECONDS} s while {RUNS} runs were running: "
            f"at most {most} worker connection(s) in a sample; samples: {samples}"
        )
        logger.info(report)
        held = [row for sample in samples for row in sample if row[1] != "active" and row[2] > 1]
        self.assertEqual(held, [], f"connections kept open between queries (pid, state, seconds): {report}")
        self.assertLessEqual(most, PROCESSES, report)

        # And all 80 runs complete
        def all_completed():
            others = Run.objects.filter(pk__in=[run.pk for run in runs]).exclude(status=Run.Status.COMPLETED)
            failed = list(others.exclude(status__in=Run.ACTIVE_STATUSES).values_list("pk", "status", "error"))
            if failed:
                raise AssertionError(f"runs that ended otherwise than completed: {failed}")
            return not others.exists()

        self.wait_for(all_completed, timeout=SLEEP_SECONDS + 15, message="80 completed runs", worker=worker)

        # And once they have, the idle workers give their connections back too
        self.wait_for(
            lambda: not self.worker_connections(application_name),
            timeout=5,
            message="the idle workers to close their connections",
            worker=worker,
        )
