"""Scrapyd, the reference self-hosted runner, on the same trivial job as Parseq's benchmark.

Usage: .venv/bin/python bench/scrapyd_bench.py [--runs N] [--jobs N] [--quick] [--out PATH]
       .venv/bin/python bench/scrapyd_bench.py --sleepers N [--sleep S] [--out PATH]

Installs bench/scrapyd-requirements.txt into its own virtualenv (bench/.venv-scrapyd/, made once and
reused), builds a one-spider Scrapy project as an egg, then starts Scrapyd twice on a free loopback
port: with its default poll_interval (5 s) and with 0.1 s. For each it measures
  latency:    N jobs one after another, schedule.json until listjobs.json shows the job finished;
  throughput: --jobs jobs scheduled at once, until all are finished.
Prints a table and writes JSON (bench/results/scrapyd.json by default) for the main benchmark to
merge. Measures, asserts nothing. --quick is a smoke run (3 latency jobs, 5 throughput jobs).

--sleepers is bench/scale.py's scenario for Scrapyd, with its defaults (poll_interval 5 s, max_proc
cores x 4): N jobs of a spider that sleeps S seconds (30) as if waiting on the network, all scheduled
at once; due → running and the makespan (bench/results/scrapyd_scale.json by default).

The spider yields one item from start() and makes no request: the nearest Scrapy has to Parseq's
trivial parser, `def parse(): return {'a.txt': b'a'}`. Scrapyd keeps its default max_proc
(0, so cores x max_proc_per_cpu 4); items_dir is set so the item is written to disk, as Parseq
stores the parser's file.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import requests
from processes import Process, free_port

BENCH = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(BENCH, ".venv-scrapyd")
REQUIREMENTS = os.path.join(BENCH, "scrapyd-requirements.txt")
STAMP = os.path.join(VENV, ".installed")
DEFAULT_OUT = os.path.join(BENCH, "results", "scrapyd.json")
SCALE_OUT = os.path.join(BENCH, "results", "scrapyd_scale.json")
PROJECT, SPIDER = "parseqbench", "trivial"
CONFIGS = {"scrapyd_default": 5.0, "scrapyd_poll_0.1": 0.1}
POLL_EVERY = 0.02  # how often the client asks listjobs.json
JOB_TIMEOUT = 120  # seconds: a job that takes longer means Scrapyd is broken, not slow

SLEEPER = "sleeper"
SLEEPER_SOURCE = """\
import time

import scrapy


class SleeperSpider(scrapy.Spider):
    name = "sleeper"

    async def start(self):
        time.sleep(float(self.seconds))  # as if waiting on the network: each job is a process of its own
        yield {"slept": self.seconds}
"""

SPIDER_SOURCE = """\
import scrapy


class TrivialSpider(scrapy.Spider):
    name = "trivial"

    async def start(self):
        # No request: one output straight away, like Parseq's `return {'a.txt': b'a'}`.
        yield {"name": "a.txt", "body": "a"}
"""

SETUP_SOURCE = f'''\
from setuptools import find_packages, setup

setup(
    name="{PROJECT}",
    version="1.0",
    packages=find_packages(),
    entry_points={{"scrapy": ["settings = {PROJECT}.settings"]}},
)
'''

SETTINGS_SOURCE = f'''\
BOT_NAME = "{PROJECT}"
SPIDER_MODULES = ["{PROJECT}.spiders"]
'''


def base_python():
    """Parseq runs parsers on the system's Python 3.11, so Scrapyd's jobs get the same interpreter."""
    for candidate in ("/usr/bin/python3.11", shutil.which("python3.11")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def venv_python():
    return os.path.join(VENV, "bin", "python")


def ensure_venv():
    """Make the virtualenv unless one from the same requirements and interpreter is already there."""
    python = base_python()
    with open(REQUIREMENTS) as f:
        wanted = f"{python}\n{f.read()}"
    with contextlib.suppress(FileNotFoundError), open(STAMP) as f:
        if f.read() == wanted:
            return
    shutil.rmtree(VENV, ignore_errors=True)
    print(f"creating {VENV} with {python}", flush=True)
    subprocess.run([python, "-m", "venv", VENV], check=True)
    # pip's output only matters when it fails: the mirror setup makes it warn about every package.
    run_quietly([venv_python(), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS])
    with open(STAMP, "w") as f:
        f.write(wanted)


def run_quietly(command, cwd=None):
    """Run a setup step, showing its output only if it fails."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def build_egg(workdir):
    """Write the Scrapy project and package it the way scrapyd-deploy would: setup.py bdist_egg."""
    source = os.path.join(workdir, "project")
    write(os.path.join(source, "setup.py"), SETUP_SOURCE)
    write(os.path.join(source, PROJECT, "__init__.py"), "")
    write(os.path.join(source, PROJECT, "settings.py"), SETTINGS_SOURCE)
    write(os.path.join(source, PROJECT, "spiders", "__init__.py"), "")
    write(os.path.join(source, PROJECT, "spiders", "trivial.py"), SPIDER_SOURCE)
    write(os.path.join(source, PROJECT, "spiders", "sleeper.py"), SLEEPER_SOURCE)
    dist = os.path.join(workdir, "dist")
    run_quietly([venv_python(), "setup.py", "--quiet", "bdist_egg", "--dist-dir", dist], cwd=source)
    (egg,) = os.listdir(dist)
    return os.path.join(dist, egg)


def scrapyd_conf(port, poll_interval):
    return textwrap.dedent(f"""\
        [scrapyd]
        bind_address = 127.0.0.1
        http_port = {port}
        poll_interval = {poll_interval}
        items_dir = items
        """)


@contextlib.contextmanager
def running_scrapyd(workdir, poll_interval):
    """Scrapyd in workdir (it reads ./scrapyd.conf and keeps eggs, logs, dbs there), stopped whatever happens."""
    port = free_port()
    write(os.path.join(workdir, "scrapyd.conf"), scrapyd_conf(port, poll_interval))
    # Own session, so that stopping it also stops any job it started.
    scrapyd = os.path.join(VENV, "bin", "scrapyd")
    process = Process([scrapyd], log_path=os.path.join(workdir, "scrapyd.out"), cwd=workdir)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        client.wait_ready(process)
        yield client
    finally:
        process.stop(grace=15)


class Client:
    """The Scrapyd API calls the benchmark needs; each raises unless Scrapyd answers status ok."""

    def __init__(self, url):
        self.url = url
        self.session = requests.Session()

    def call(self, method, endpoint, **kwargs):
        response = self.session.request(method, f"{self.url}/{endpoint}", timeout=30, **kwargs)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "ok":
            raise RuntimeError(f"{endpoint}: {body}")
        return body

    def wait_ready(self, process, timeout=60):
        def answers():
            with contextlib.suppress(requests.ConnectionError):
                return self.call("GET", "daemonstatus.json")
            return None

        return process.wait_until(answers, timeout=timeout, message="scrapyd to answer")

    def deploy(self, egg):
        with open(egg, "rb") as f:
            self.call("POST", "addversion.json", data={"project": PROJECT, "version": "1"}, files={"egg": f})
        # Schedule calls without a version look up the spider list for version None: fill that cache now
        # (one `scrapy list` run) rather than inside the first measured job.
        spiders = self.call("GET", "listspiders.json", params={"project": PROJECT})["spiders"]
        if sorted(spiders) != sorted([SPIDER, SLEEPER]):
            raise RuntimeError(f"the egg holds spiders {spiders}, not {SPIDER!r} and {SLEEPER!r}")

    def schedule(self, spider=SPIDER, **arguments):
        return self.call("POST", "schedule.json", data={"project": PROJECT, "spider": spider, **arguments})["jobid"]

    def jobs(self):
        """{job id: (state, listjobs entry)} for this project."""
        body = self.call("GET", "listjobs.json", params={"project": PROJECT})
        return {job["id"]: (state, job) for state in ("pending", "running", "finished") for job in body[state]}


def wait_finished(client, job_ids, started, *, timeout=JOB_TIMEOUT, poll_every=POLL_EVERY):
    """Poll until every job is finished; return {id: (seconds to running or None, seconds to finished, entry)}."""
    to_running, done = {}, {}
    deadline = time.monotonic() + timeout
    while len(done) < len(job_ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(job_ids) - len(done)} jobs not finished after {timeout} s")
        time.sleep(poll_every)
        jobs, now = client.jobs(), time.perf_counter()
        for job_id in job_ids:
            state, entry = jobs.get(job_id, ("pending", None))
            if state == "running":
                to_running.setdefault(job_id, now - started)
            elif state == "finished" and job_id not in done:
                done[job_id] = (to_running.get(job_id), now - started, entry)
    return done


def process_seconds(entry):
    """How long Scrapyd says the job's own process ran: interpreter, Scrapy and the spider."""
    start, end = (datetime.datetime.fromisoformat(entry[key]) for key in ("start_time", "end_time"))
    return (end - start).total_seconds()


def check_item(workdir, job_id):
    """Make sure the spider did run: its one item must be in the job's feed file."""
    path = os.path.join(workdir, "items", PROJECT, SPIDER, f"{job_id}.jl")
    with open(path) as f:
        if json.loads(f.readline()) != {"name": "a.txt", "body": "a"}:
            raise RuntimeError(f"unexpected item in {path}")


def measure_latency(client, runs):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        job_id = client.schedule()
        samples.append(wait_finished(client, [job_id], started)[job_id])
    return samples


def measure_throughput(client, count):
    started = time.perf_counter()
    job_ids = [client.schedule() for _ in range(count)]
    done = wait_finished(client, job_ids, started)
    return max(finished for _, finished, _ in done.values())


def measure_sleepers(workdir, egg, count, seconds):
    """`count` sleeping jobs scheduled at once on Scrapyd with its defaults: how soon each ran, and the makespan."""
    os.makedirs(workdir)
    with running_scrapyd(workdir, CONFIGS["scrapyd_default"]) as client:
        client.deploy(egg)
        slots = max_proc(workdir)
        started = time.perf_counter()
        job_ids = [client.schedule(SLEEPER, seconds=str(seconds)) for _ in range(count)]
        scheduled = time.perf_counter() - started
        expected = math.ceil(count / (slots or 1)) * (seconds + 10)
        done = wait_finished(client, job_ids, started, timeout=expected + 600, poll_every=1)
    to_running = sorted(running for running, _, _ in done.values() if running is not None)
    return {
        "jobs": count,
        "sleep_seconds": seconds,
        "max_proc": slots,
        "scheduling_s": round(scheduled, 1),
        "due_to_running_s": {
            "p50": round(statistics.median(to_running), 1),
            "p95": round(to_running[max(0, math.ceil(len(to_running) * 0.95) - 1)], 1),
            "max": round(to_running[-1], 1),
        },
        "makespan_s": round(max(finished for _, finished, _ in done.values()), 1),
    }


def max_proc(workdir):
    """The number of job slots, as Scrapyd logs it when it starts (its default is cores x 4)."""
    with open(os.path.join(workdir, "scrapyd.out")) as f:
        found = re.search(r"started: max_proc=(\d+)", f.read())
    return int(found.group(1)) if found else None


def percentiles(seconds):
    """Median and nearest-rank p95, in ms, as bench/runner_overhead.py reports them."""
    if not seconds:
        return None
    seconds = sorted(seconds)
    p95 = seconds[max(0, math.ceil(len(seconds) * 0.95) - 1)]
    return {"p50": round(statistics.median(seconds) * 1000, 1), "p95": round(p95 * 1000, 1)}


def bench_config(workdir, egg, poll_interval, runs, jobs):
    os.makedirs(workdir)
    with running_scrapyd(workdir, poll_interval) as client:
        client.deploy(egg)
        # One unmeasured job: loads the egg and Scrapy from disk once, and proves the spider runs.
        warmup = client.schedule()
        wait_finished(client, [warmup], time.perf_counter())
        check_item(workdir, warmup)
        samples = measure_latency(client, runs)
        elapsed = measure_throughput(client, jobs)
    return {
        "latency_ms": percentiles([finished for _, finished, _ in samples]),
        "to_running_ms": percentiles([running for running, _, _ in samples if running is not None]),
        "process_ms": percentiles([process_seconds(entry) for _, _, entry in samples]),
        "runs": runs,
        "throughput_per_s": round(jobs / elapsed, 2),
        "throughput_s": round(elapsed, 2),
        "jobs": jobs,
        "poll_interval_s": poll_interval,
        "max_proc": max_proc(workdir),
    }


def machine(load_at_start):
    """What the numbers were measured on; the load average shows whether something else was running."""
    code = "import platform, scrapy, scrapyd; print(platform.python_version(), scrapyd.__version__, scrapy.__version__)"
    found = subprocess.run([venv_python(), "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return {
        "cores": os.cpu_count(),
        "python": found[0],
        "scrapyd": found[1],
        "scrapy": found[2],
        "platform": platform.platform(),
        "loadavg_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def print_table(results):
    print(
        f"{'config':18} {'p50 ms':>8} {'p95 ms':>8} {'run p50':>8} {'proc p50':>8} {'jobs':>5} {'s':>6} {'jobs/s':>7}"
    )
    for name in CONFIGS:
        r = results[name]
        running = r["to_running_ms"]["p50"] if r["to_running_ms"] else float("nan")
        print(
            f"{name:18} {r['latency_ms']['p50']:8.0f} {r['latency_ms']['p95']:8.0f} {running:8.0f} "
            f"{r['process_ms']['p50']:8.0f} {r['jobs']:5} {r['throughput_s']:6.2f} {r['throughput_per_s']:7.2f}"
        )
    print("p50/p95: schedule.json to finished; run: to running; proc: the job's process as Scrapyd timed it")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="sequential jobs for latency (default 10)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs scheduled at once for throughput (default 20)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 latency jobs, 5 throughput jobs")
    parser.add_argument("--sleepers", type=int, help="instead: this many sleeping jobs at once (bench/scale.py's)")
    parser.add_argument("--sleep", type=int, default=30, help="seconds each sleeper sleeps (default 30)")
    parser.add_argument("--out", help=f"JSON results (default {DEFAULT_OUT}, or {SCALE_OUT} with --sleepers)")
    args = parser.parse_args()
    args.out = args.out or (SCALE_OUT if args.sleepers else DEFAULT_OUT)
    if args.quick:
        args.runs, args.jobs = 3, 5
    return args


def main():
    args = parse_args()
    # A plain SIGTERM would skip the finally blocks that stop Scrapyd and its jobs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began, load_at_start = time.perf_counter(), os.getloadavg()[0]
    ensure_venv()
    results = {}
    with tempfile.TemporaryDirectory(prefix="scrapyd-bench-") as tempdir:
        egg = build_egg(tempdir)
        if args.sleepers:
            results["sleepers"] = measure_sleepers(os.path.join(tempdir, "sleepers"), egg, args.sleepers, args.sleep)
            print(json.dumps(results["sleepers"]))
        for name, poll_interval in () if args.sleepers else CONFIGS.items():
            print(f"{name}: poll_interval {poll_interval} s, {args.runs} + {args.jobs} jobs", flush=True)
            results[name] = bench_config(os.path.join(tempdir, name), egg, poll_interval, args.runs, args.jobs)
    results["machine"] = machine(load_at_start)
    if not args.sleepers:
        print_table(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
