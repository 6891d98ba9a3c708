"""Many parsers due at once, each waiting as if on the network: how many run at a time on one worker host.

Usage:
    .venv/bin/python bench/scale.py [--quick] [--parsers N] [--sleep S] [--slots N ...] [--threads T ...]
                                    [--no-default] [--out FILE]

N parsers whose script sleeps S seconds are all due at the same moment (their runs inserted in one
statement, as the scheduler does), and one `rundramatiq` worker host runs them: with its default
(PARSEQ_WORKER_SLOTS sized from memory, shared among a process per core), then with the slot counts
given (`--slots 64 512`), then with the thread counts per process given (`--threads 8`: 8 was
rundramatiq's default before PARSEQ_WORKER_SLOTS). From the runs' rows: due → running and due →
completed (p50, p95, max), how many ran at once at most, the makespan, lost or doubled runs (attempts);
from /proc/meminfo: the host's memory used at the peak against before, per run running; from
pg_stat_activity: the most database connections the worker host had open at once.

The default is the issue's scenario, 1,000 parsers sleeping 30 s (over half an hour with the default
threads: this is what the issue is about); --quick is 100 sleeping 5 s. Uses the database and vhost of
bench/end_to_end.py, and stops what it started however it ends. Measures, asserts nothing.
"""

import argparse
import json
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from end_to_end import (
    REPOSITORY,
    SLEEPER,
    TRIVIAL,
    Bench,
    create_parser,
    make_directories,
    outcomes,
    parseq_env,
    percentile,
    prepare_broker,
    recreate_database,
    setup_django,
    stamp,
    start_scheduler,
    wait_for_runs,
)
from processes import wait_until

MIB = 1024 * 1024


def memory_used_bytes():
    """The host's memory in use (MemTotal - MemAvailable)."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


def database_connections(cursor):
    """The connections to this database other than the bench's own (the worker host's: nothing else uses it)."""
    cursor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return cursor.fetchone()[0]


class Peaks(threading.Thread):
    """The highest memory use of the host and the most database connections, sampled every 0.2 s until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.memory = memory_used_bytes()
        self.connections = 0
        self.stopped = threading.Event()

    def run(self):
        from django.db import connections

        with connections["default"].cursor() as cursor:  # this thread's own connection
            while not self.stopped.wait(0.2):
                self.memory = max(self.memory, memory_used_bytes())
                self.connections = max(self.connections, database_connections(cursor))
        connections["default"].close()

    def stop(self):
        self.stopped.set()
        self.join()
        return self


def due_at_once(parsers):
    """One run of each parser, all due now, inserted in one statement and sent once it commits."""
    from django.db import transaction
    from django.utils import timezone

    from parseq.core import services
    from parseq.core.models import Run

    due = timezone.now()
    runs = [Run(parser=parser, trigger=Run.Trigger.SCHEDULE, scheduled_for=due) for parser in parsers]
    with transaction.atomic():
        services.create_runs(runs=runs, if_refused="wait")
    return due, [run.run_id for run in runs]


def most_at_once(runs):
    """The most runs whose sandboxes were running at the same moment (from their started and finished times)."""
    events = sorted([(stamp(run.started_time), 1) for run in runs] + [(stamp(run.finished_time), -1) for run in runs])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def seconds_summary(values):
    return {
        "p50": round(percentile(values, 0.5), 2),
        "p95": round(percentile(values, 0.95), 2),
        "max": round(max(values), 2),
    }


def measure(bench, parsers, *, label, sleep_seconds, slots=None, threads=None):
    """One worker host with `slots` (PARSEQ_WORKER_SLOTS) or `threads` a process, or its defaults, runs one run
    of each parser, all due at once.
    """
    from django.conf import settings

    from parseq.worker.management.commands.rundramatiq import threads_per_process

    extra_env = {"PARSEQ_WORKER_SLOTS": str(slots)} if slots else None
    worker = bench.start_worker(label, threads=threads, extra_env=extra_env)
    memory_before = memory_used_bytes()
    peaks = Peaks()
    peaks.start()
    due, run_ids = due_at_once(parsers)
    runs = list(wait_for_runs(bench, run_ids, timeout=max(600, len(run_ids) * sleep_seconds), interval=1).values())
    peaks.stop()
    bench.stop(worker)
    at_once = most_at_once(runs)
    growth = peaks.memory - memory_before
    processes = os.cpu_count()
    return {
        "worker": label,
        "processes": processes,
        "threads": threads or threads_per_process(slots=slots or settings.WORKER_SLOTS, processes=processes),
        "most_database_connections": peaks.connections,
        "runs": len(runs),
        **outcomes(runs),
        "rerun": sum(1 for run in runs if run.attempt > 1),
        "due_to_running_s": seconds_summary([stamp(run.started_time) - due.timestamp() for run in runs]),
        "due_to_completed_s": seconds_summary([stamp(run.finished_time) - due.timestamp() for run in runs]),
        "most_at_once": at_once,
        "makespan_s": round(max(stamp(run.finished_time) for run in runs) - due.timestamp(), 1),
        "host_memory_growth_mib": round(growth / MIB, 1),
        "mib_per_run_at_once": round(growth / MIB / at_once, 1) if at_once else None,
    }


def process_usage(pid):
    """CPU seconds (its own and its threads') and resident memory (MiB) of process `pid`, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return cpu_seconds, rss_kib / 1024


def measure_scheduler(bench, *, parsers, due, script):
    """`parsers` parsers with schedules, `due` of them due at the same second a minute ahead, the others on cron
    schedules at other times: how late `runscheduler` creates the due runs, and its CPU and memory. No worker:
    the runs wait enqueued (their messages are dropped with the bench's vhost).
    """
    from django.utils import timezone
    from django_apscheduler.models import DjangoJob

    from parseq.core.models import Parser, Run

    began = timezone.now()
    due_at = began.replace(microsecond=0) + timedelta(seconds=90)
    later = [
        Parser(name=f"cron_{n}", script=script, cron=f"{n % 60} {(due_at.hour + 1 + n % 20) % 24} * * *")
        for n in range(parsers - due)
    ]
    now_due = [Parser(name=f"due_{n}", script=script, scheduled_time=due_at) for n in range(due)]
    Parser.objects.bulk_create(later + now_due)
    scheduler = start_scheduler(bench)
    wait_until(
        lambda: DjangoJob.objects.count() >= parsers,
        timeout=85,
        interval=0.5,
        message=f"the scheduler to store {parsers} jobs",
    )
    loading_s = round((timezone.now() - began).total_seconds(), 1)
    loaded_before_due = timezone.now() < due_at
    cpu_before, _ = process_usage(scheduler.pid)
    wait_until(
        lambda: Run.objects.filter(parser__name__startswith="due_").count() >= due,
        timeout=180,
        interval=0.5,
        message=f"{due} runs due",
    )
    cpu_after, rss_mib = process_usage(scheduler.pid)
    bench.stop(scheduler)
    lateness = [
        stamp(run.created_time) - due_at.timestamp() for run in Run.objects.filter(parser__name__startswith="due_")
    ]
    return {
        "parsers": parsers,
        "due_at_once": due,
        "jobs_loaded_s": loading_s,
        "jobs_loaded_before_due": loaded_before_due,
        "created_minus_due_s": seconds_summary(lateness),
        "scheduler_cpu_s_while_due": round(cpu_after - cpu_before, 2),
        "scheduler_rss_mib": round(rss_mib, 1),
    }


def print_table(results):
    print(f"{results['parsers']} parsers due at once, each sleeping {results['sleep_seconds']} s; seconds")
    header = (
        f"{'worker':34} {'at once':>8} {'running p95':>12} {'running max':>12} {'makespan':>9} {'MiB/run':>8} "
        f"{'db conns':>8}  statuses"
    )
    print(header)
    for row in results["rows"]:
        print(
            f"{row['worker']:34} {row['most_at_once']:8} {row['due_to_running_s']['p95']:12} "
            f"{row['due_to_running_s']['max']:12} {row['makespan_s']:9} {row['mib_per_run_at_once'] or '-':>8} "
            f"{row['most_database_connections']:8}  {row['statuses']}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 parsers sleeping 5 s")
    parser.add_argument("--parsers", type=int)
    parser.add_argument("--sleep", type=int)
    parser.add_argument("--slots", type=int, nargs="*", default=[], help="PARSEQ_WORKER_SLOTS to try, besides")
    parser.add_argument("--threads", type=int, nargs="*", default=[], help="threads a process to try, slots aside")
    parser.add_argument("--no-default", action="store_true", help="only the slot and thread counts given")
    parser.add_argument(
        "--scheduler", type=int, metavar="N", help="instead: N parsers with schedules, 1/10 due at once"
    )
    parser.add_argument("--out")
    arguments = parser.parse_args()
    count = arguments.parsers or (100 if arguments.quick else 1000)
    sleep_seconds = arguments.sleep or (5 if arguments.quick else 30)
    out = Path(arguments.out or REPOSITORY / "bench" / "results" / "scale.json")
    broker_url, _ = prepare_broker()
    recreate_database()
    root = make_directories()
    env = parseq_env(root, broker_url)
    setup_django(env)
    bench = Bench(root, env, broker_url)
    rows = []
    if arguments.scheduler:
        try:
            script = create_parser("trivial", TRIVIAL).script.name  # the script every scheduled parser names
            count = arguments.scheduler
            figures = measure_scheduler(bench, parsers=count, due=count // 10, script=script)
        finally:
            bench.stop_all()
        print(json.dumps(figures, indent=2))
        out = Path(arguments.out or REPOSITORY / "bench" / "results" / "scale_scheduler.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        return
    try:
        parsers = [create_parser(f"sleeper_{n}", SLEEPER.format(seconds=sleep_seconds)) for n in range(count)]
        from django.conf import settings

        if not arguments.no_default:
            label = f"default ({settings.WORKER_SLOTS} slots)"
            rows.append(measure(bench, parsers, label=label, sleep_seconds=sleep_seconds))
        for slots in arguments.slots:
            rows.append(measure(bench, parsers, label=f"{slots} slots", slots=slots, sleep_seconds=sleep_seconds))
        for threads in arguments.threads:
            label = f"{os.cpu_count()} processes x {threads} threads"
            rows.append(measure(bench, parsers, label=label, threads=threads, sleep_seconds=sleep_seconds))
    except Exception:
        for service in bench.services:
            print(f"===== {service.name} =====\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        bench.stop_all()
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parsers": count,
        "sleep_seconds": sleep_seconds,
        "cores": os.cpu_count(),
        "rows": rows,
    }
    print_table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
