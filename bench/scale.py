"""Many parsers due at once, each waiting as if on the network: how many run at a time on one worker host.

Usage:
    .venv/bin/python bench/scale.py [--quick] [--parsers N] [--sleep S] [--threads T ...] [--out FILE]

Issue 22's first measurement, before anything changes: N parsers whose script sleeps S seconds are
all due at the same moment (their runs inserted in one statement, as the scheduler does), and one
`rundramatiq` worker host runs them, with rundramatiq's default (a process per core, 8 threads each)
and then with the thread counts given (`--threads 32 64`). From the runs' rows: due → running and
due → completed (p50, p95, max), how many ran at once at most, the makespan, lost or doubled runs
(attempts); from /proc/meminfo: the host's memory used at the peak against before, per run running.

The default is the issue's scenario, 1,000 parsers sleeping 30 s (over half an hour with the default
threads: this is what the issue is about); --quick is 100 sleeping 5 s. Uses the database and vhost of
bench/end_to_end.py, and stops what it started however it ends. Measures, asserts nothing.
"""

import argparse
import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from end_to_end import (
    REPOSITORY,
    SLEEPER,
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
    wait_for_runs,
)

MIB = 1024 * 1024


def memory_used_bytes():
    """The host's memory in use (MemTotal - MemAvailable)."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


class MemoryPeak(threading.Thread):
    """The highest memory use of the host, sampled every 0.2 s until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = memory_used_bytes()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.2):
            self.peak = max(self.peak, memory_used_bytes())

    def stop(self):
        self.stopped.set()
        self.join()
        return self.peak


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


def measure(bench, parsers, *, label, processes, threads, sleep_seconds):
    worker = bench.start_worker(label, processes=processes, threads=threads)
    memory_before = memory_used_bytes()
    peak = MemoryPeak()
    peak.start()
    due, run_ids = due_at_once(parsers)
    runs = list(wait_for_runs(bench, run_ids, timeout=max(600, len(run_ids) * sleep_seconds), interval=1).values())
    peak_bytes = peak.stop()
    bench.stop(worker)
    at_once = most_at_once(runs)
    growth = peak_bytes - memory_before
    return {
        "worker": label,
        "processes": processes or os.cpu_count(),
        "threads": threads or 8,
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


def print_table(results):
    print(f"{results['parsers']} parsers due at once, each sleeping {results['sleep_seconds']} s; seconds")
    header = f"{'worker':28} {'at once':>8} {'running p95':>12} {'running max':>12} {'makespan':>9} {'MiB/run':>8}"
    print(header)
    for row in results["rows"]:
        print(
            f"{row['worker']:28} {row['most_at_once']:8} {row['due_to_running_s']['p95']:12} "
            f"{row['due_to_running_s']['max']:12} {row['makespan_s']:9} {row['mib_per_run_at_once'] or '-':>8}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 parsers sleeping 5 s")
    parser.add_argument("--parsers", type=int)
    parser.add_argument("--sleep", type=int)
    parser.add_argument("--threads", type=int, nargs="*", default=[], help="thread counts to try besides the default")
    parser.add_argument("--no-default", action="store_true", help="only the thread counts given")
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
    try:
        parsers = [create_parser(f"sleeper_{n}", SLEEPER.format(seconds=sleep_seconds)) for n in range(count)]
        if not arguments.no_default:
            rows.append(
                measure(bench, parsers, label="default", processes=None, threads=None, sleep_seconds=sleep_seconds)
            )
        for threads in arguments.threads:
            label = f"{os.cpu_count()} processes x {threads} threads"
            rows.append(
                measure(bench, parsers, label=label, processes=None, threads=threads, sleep_seconds=sleep_seconds)
            )
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
