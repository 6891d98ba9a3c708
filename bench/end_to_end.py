"""Parseq measured end to end: real gunicorn, rundramatiq and runscheduler processes on PostgreSQL and RabbitMQ.

Usage:
    .venv/bin/python bench/end_to_end.py [--quick] [--only lateness|auth] [--out bench/results/end_to_end.json]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and RabbitMQ on 127.0.0.1:5672 (guest).
It drops and recreates the database `parseq_bench` and the RabbitMQ vhost `parseq-bench` (falling
back to `/`, with a warning, when rabbitmqctl cannot make it), works in a temporary PARSEQ_VAR_DIR,
and kills every process it started, however it ends. The database is left for a look afterwards.

What it measures (timings come from the runs' rows, written by the worker with the same clock
as this process's time.time(); nothing is polled through the API, which would load the web process):

- latency: one trivial run at a time, API POST → `running` (started_time) and → `completed`
  (finished_time), with the steps in between, and the same sandbox run by runner.run_script in
  this process (what of `running → completed` is the sandbox's);
- throughput: trivial runs posted by 4 client threads as fast as the API answers, from the first
  POST to the last finished_time, for rundramatiq's default (a process per core, 8 threads) and
  the compose stack's (2 processes of 2 threads);
- cold start: latency and throughput again with PARSEQ_WARM_START=false, where each run is a
  new interpreter instead of a fork of the worker's zygote;
- schedule lateness: parsers all due at the same second, fired by `manage.py runscheduler`:
  created_time - scheduled_for with no worker running (the scheduler alone), then with
  rundramatiq's default running them, created_time and started_time - scheduled_for;
- download: a large result streamed through /<run_id>/<filename> from gunicorn (1 sync worker),
  in MiB/s, and the web worker's peak memory (VmHWM) before and after;
- worker memory: the rundramatiq worker process's VmHWM before and after storing a 50 MiB result
  (then the download's result, produced by a real run too);
- database connections: `rundramatiq --processes 4 --threads 8` running 32 runs that sleep 5 s,
  pg_stat_activity sampled every 0.1 s by the workers' PGAPPNAME;
- authentication: 300 API triggers (POST /api/parsers/{id}/run/) with HTTP Basic, whose password has
  the default hash (PBKDF2), then 300 with the same user's token, one client sending one after another
  on a kept-alive connection; on a web whose Basic cache is on (PARSEQ_BASIC_AUTH_CACHE_SECONDS
  default), then on one where it is off (0), as before the cache. No worker runs meanwhile.

The API's web server is gunicorn as the compose stack runs it (3 workers of 4 threads), warmed up
first. The machine is likely shared: the JSON says how busy it was before, and where its CPU time
went meanwhile (PostgreSQL, RabbitMQ, other processes), as a warning about the figures.

--quick shrinks every count, for a smoke run of about a minute. --only lateness measures the schedule
lateness alone (a couple of minutes), into end_to_end_lateness.json; --only auth the authentication alone
(a couple of minutes), into end_to_end_auth.json. Prints a table and writes JSON.
Measures, asserts nothing; it stops with the services' logs if a service dies or runs never end.
"""

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests
from processes import CpuWatch, Process, ProcessExited, TimedOut, consumers, free_port, fresh_vhost, wait_until

REPOSITORY = Path(__file__).resolve().parents[1]
MANAGE = [sys.executable, str(REPOSITORY / "manage.py")]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
DATABASE = "parseq_bench"
DATABASE_SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
BROKER = "amqp://guest:guest@127.0.0.1:5672"
VHOST = "parseq-bench"
QUEUE = "runs"
MIB = 1024 * 1024

TRIVIAL = "def parse():\n    return {'a.txt': b'a'}\n"
SLEEPER = "import time\n\n\ndef parse():\n    time.sleep({seconds})\n    return {{}}\n"
SIZED = "def parse():\n    return {{'result.bin': bytes({size})}}\n"
# A process per core (rundramatiq's default) of 8 threads each: django_dramatiq's default, and Parseq's before
# PARSEQ_WORKER_SLOTS (whose hundreds of threads bench/scale.py measures). Kept so that figures compare over time.
DEFAULT_THREADS = 8
COMPOSE_WORKER = (2, 2)  # deploy/docker-compose.yaml's worker before PARSEQ_WORKER_SLOTS
# Every run in a new interpreter, as before the warm start (README: Isolation, Warm start).
COLD_ENV = {"PARSEQ_WARM_START": "false"}
# The API's web server as deploy/docker-compose.yaml runs it: GUNICORN_WORKERS x GUNICORN_THREADS.
API_WEB = ["--workers", "3", "--threads", "4"]
CLIENT_THREADS = 4
WARM_UP_RUNS = 3
DOWNLOADS = 3


@dataclass(frozen=True)
class Sizes:
    latency_runs: int
    throughput_runs: int
    due_parsers: int
    download_mib: int
    stored_mib: int
    long_runs: int
    long_run_seconds: int
    auth_triggers: int


FULL = Sizes(
    latency_runs=100,
    throughput_runs=500,
    due_parsers=50,
    download_mib=200,
    stored_mib=50,
    long_runs=32,
    long_run_seconds=5,
    auth_triggers=300,
)
QUICK = Sizes(
    latency_runs=20,
    throughput_runs=50,
    due_parsers=10,
    download_mib=20,
    stored_mib=50,
    long_runs=8,
    long_run_seconds=5,
    auth_triggers=30,
)


# ---------------------------------------------------------------- numbers


def percentile(values, fraction):
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def summary(values, scale=1.0):
    """n, min, p50, p95 and max of `values` times `scale` (1000 turns seconds into milliseconds)."""
    scaled = [value * scale for value in values]
    return {
        "n": len(scaled),
        "min": round(min(scaled), 3),
        "p50": round(statistics.median(scaled), 3),
        "p95": round(percentile(scaled, 0.95), 3),
        "max": round(max(scaled), 3),
    }


def stamp(moment):
    return moment.timestamp() if moment else math.nan


# ---------------------------------------------------------------- services and settings


def prepare_broker():
    """The broker URL: an empty vhost of the bench's own, so tests using `/` and the bench never share a queue."""
    try:
        fresh_vhost(VHOST)
    except (OSError, subprocess.SubprocessError) as error:  # no rabbitmqctl, or no right to use it
        print(f"WARNING: cannot make RabbitMQ vhost {VHOST!r} ({error}); using '/', shared with any tests running")
        return f"{BROKER}/%2F", "/"
    return f"{BROKER}/{VHOST}", VHOST


def recreate_database():
    connection = psycopg2.connect(dbname="postgres", **DATABASE_SERVER)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    connection.close()
    return version


def make_directories():
    """A root holding the var directory (Parseq makes it private), a world-writable TMPDIR and the logs."""
    root = Path(tempfile.mkdtemp(prefix="parseq-bench-"))
    # A sandbox running as a user of its own must reach its temporary directory under this root.
    root.chmod(0o755)
    tmp = root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    (root / "logs").mkdir()
    return root


def parseq_env(root, broker_url):
    """The environment of every Parseq process of the bench: production settings, quiet plain logs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PGAPPNAME", "DRAMATIQ_NPROCS", "DRAMATIQ_NTHREADS", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DATABASE_URL=f"postgres://{DATABASE_SERVER['user']}@{DATABASE_SERVER['host']}:{DATABASE_SERVER['port']}/{DATABASE}",
        PARSEQ_BROKER_URL=broker_url,
        PARSEQ_VAR_DIR=str(root / "var"),
        TMPDIR=str(root / "tmp"),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PARSEQ_LOG_FORMAT="plain",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="parseq.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def setup_django(env):
    """Django in this process, on the bench's database and var directory: for parsers, users and reading runs."""
    os.environ.update(env)
    sys.path.insert(0, str(REPOSITORY))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


class Bench:
    """What the phases share: the settings, the services started (stopped in any case), the API."""

    def __init__(self, root, env, broker_url):
        self.root, self.env, self.broker_url = root, env, broker_url
        self.services = []

    def start(self, name, argv, extra_env=None):
        # In a session of its own: a whole group (dramatiq's parent and its forked worker processes, gunicorn's
        # master and workers) stops at once. Sandboxes start their own and die with their worker (lifeline).
        log_path = self.root / "logs" / f"{name}.log"
        service = Process(argv, name=name, log_path=log_path, env={**self.env, **(extra_env or {})}, cwd=REPOSITORY)
        self.services.append(service)
        return service

    def stop(self, service):
        service.stop()
        self.services.remove(service)

    def stop_all(self):
        for service in list(reversed(self.services)):
            try:
                self.stop(service)
            except Exception as error:  # noqa: BLE001 - the others must be stopped all the same
                print(f"WARNING: could not stop {service.name}: {error}")

    def check_alive(self):
        for service in self.services:
            service.check_alive()

    def start_worker(self, name, *, processes=None, threads=None, extra_env=None):
        """`manage.py rundramatiq`, once each of its processes consumes the runs queue; no option: its defaults."""
        options = []
        if processes:
            options += ["--processes", str(processes)]
        if threads:
            options += ["--threads", str(threads)]
        worker = self.start(name, [*MANAGE, "rundramatiq", *options], extra_env)
        expected = processes or os.cpu_count()
        wait_until(
            lambda: worker.check_alive() or consumers(self.broker_url, QUEUE) >= expected,
            timeout=60,
            interval=0.2,
            message=f"{expected} consumer(s) of {name}",
        )
        return worker

    def start_web(self, name, options, extra_env=None):
        """gunicorn parseq.wsgi on a free loopback port, once /healthz answers; returns it and its base URL."""
        port = free_port()
        argv = [GUNICORN, "parseq.wsgi", "--bind", f"127.0.0.1:{port}", "--no-control-socket", *options]
        web = self.start(name, argv, extra_env)
        url = f"http://127.0.0.1:{port}"

        def answers():
            web.check_alive()
            try:
                return requests.get(f"{url}/healthz", timeout=5).status_code in (200, 503)
            except requests.ConnectionError:
                return False

        wait_until(answers, timeout=30, interval=0.1, message=f"{name} to answer")
        return web, url


class Api:
    """Staff calls to the REST API, one HTTP session per client thread; with a token, or another Authorization."""

    def __init__(self, url, token=None, *, authorization=None):
        self.url = url
        self.headers = {"Authorization": authorization or f"Token {token}"}
        self.local = threading.local()

    def trigger(self, parser_id):
        """POST /api/parsers/{id}/run/: (run id, wall time just before sending, wall time of the 202)."""
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        sent = time.time()
        response = self.local.session.post(f"{self.url}/api/parsers/{parser_id}/run/", headers=self.headers, timeout=60)
        answered = time.time()
        if response.status_code != 202:
            raise RuntimeError(f"POST run of parser {parser_id}: {response.status_code} {response.text[:500]}")
        return response.json()["run_id"], sent, answered

    def warm_up(self, connections=12, rounds=10):
        """Rounds of concurrent GETs until one answers fast throughout; the slowest answer of each round, in ms.

        Each gunicorn worker loads the URLconf and the API's views on its first request (no --preload,
        as in the compose stack): a cost of the first request only, which the bench does not measure.
        """

        def get(_):
            started = time.perf_counter()
            requests.get(f"{self.url}/api/parsers/", headers=self.headers, timeout=60).raise_for_status()
            return time.perf_counter() - started

        slowest = []
        with ThreadPoolExecutor(connections) as pool:
            while len(slowest) < rounds and (not slowest or slowest[-1] > 0.1):
                slowest.append(max(pool.map(get, range(connections))))
        return [round(seconds * 1000) for seconds in slowest]


def create_user_token():
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("bench", is_staff=True, is_superuser=True)
    return Token.objects.create(user=user).key


def create_parser(name, source, **fields):
    from django.core.files.base import ContentFile

    from parseq.core.models import Parser

    # Through the ORM, as the tests do: the upload's checks are not what is measured.
    return Parser.objects.create(name=name, script=ContentFile(source.encode(), name=f"{name}.py"), **fields)


def wait_for_runs(bench, run_ids, *, timeout, interval):
    """Poll the database until none of `run_ids` is enqueued or running; their rows by run id (as strings)."""
    from parseq.core.models import Run

    def finished():
        bench.check_alive()
        return not Run.objects.filter(pk__in=run_ids, status__in=Run.ACTIVE_STATUSES).exists()

    try:
        wait_until(finished, timeout=timeout, interval=interval, message=f"{len(run_ids)} run(s) to end")
    except TimedOut:
        counts = {}
        for status in Run.objects.filter(pk__in=run_ids).values_list("status", flat=True):
            counts[status] = counts.get(status, 0) + 1
        raise TimeoutError(f"runs not ended in {timeout} s, by status: {counts}") from None
    return {str(run.pk): run for run in Run.objects.filter(pk__in=run_ids)}


def outcomes(runs):
    """How the runs ended, and the first error, if any: a benchmark of failing runs measures nothing."""
    ended = {}
    for run in runs:
        ended[run.status] = ended.get(run.status, 0) + 1
    errors = [run.error for run in runs if run.status != "completed"]
    return {"statuses": ended, "first_error": errors[0][-500:] if errors else None}


# ---------------------------------------------------------------- phases


def measure_latency(bench, api, parser, count):
    """One run at a time on an idle worker: each is triggered once the previous one has ended."""
    triggers = []
    for number in range(WARM_UP_RUNS + count):
        run_id, sent, answered = api.trigger(parser.pk)
        # Polled often, so that the next run starts soon; the timings come from the row, not from this loop.
        wait_for_runs(bench, [run_id], timeout=60, interval=0.01)
        if number >= WARM_UP_RUNS:  # the first runs of a worker process pay for its imports and connections
            triggers.append((run_id, sent, answered))
        time.sleep(0.05)  # the worker closes its connections after each message: not part of the next run
    runs = wait_for_runs(bench, [run_id for run_id, _, _ in triggers], timeout=10, interval=0.1)
    rows = [(runs[run_id], sent, answered) for run_id, sent, answered in triggers]
    return {
        "runs": count,
        "trigger_to_running_ms": summary([stamp(run.started_time) - sent for run, sent, _ in rows], 1000),
        "trigger_to_completed_ms": summary([stamp(run.finished_time) - sent for run, sent, _ in rows], 1000),
        "api_answer_ms": summary([answered - sent for _, sent, answered in rows], 1000),
        "trigger_to_created_ms": summary([stamp(run.created_time) - sent for run, sent, _ in rows], 1000),
        "created_to_running_ms": summary(
            [stamp(run.started_time) - stamp(run.created_time) for run, _, _ in rows], 1000
        ),
        "running_to_completed_ms": summary(
            [stamp(run.finished_time) - stamp(run.started_time) for run, _, _ in rows], 1000
        ),
        **outcomes(runs.values()),
    }


def measure_sandbox_alone(bench, parser, count, warm=True):
    """runner.run_script in this process, with what a worker passes for `parser`: the sandbox's share of a run."""
    from django.conf import settings

    import runner
    from parseq.core import execution
    from parseq.core.validation import allowed_modules

    times = []
    with tempfile.TemporaryDirectory(dir=bench.root / "tmp") as tempdir:
        script = Path(tempdir) / "trivial.py"
        script.write_text(TRIVIAL)
        for _ in range(WARM_UP_RUNS + count):
            started = time.perf_counter()
            outcome = runner.run_script(
                str(script),
                tempfile.mkdtemp(dir=tempdir),
                python=settings.SANDBOX_PYTHON,
                backend=execution.sandbox_backend(),
                limits=execution.run_limits(parser=parser),
                timezone=settings.TIME_ZONE,
                variables=parser.environment,
                network=parser.network,
                restricted_modules=allowed_modules() if parser.restricted else None,
                cancelled=lambda: False,
                warm=warm and execution.warm_start(backend=execution.sandbox_backend()),
                preload=execution.warm_preload(),
            )
            times.append(time.perf_counter() - started)
            if not outcome.ok:
                raise RuntimeError(f"the sandbox alone: {outcome.error}")
    return summary(times[WARM_UP_RUNS:], 1000)


def measure_throughput(bench, api, parser, count, label):
    """`count` runs posted by a few client threads at once; runs/s from the first POST to the last finished_time."""
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        triggers = list(pool.map(lambda _: api.trigger(parser.pk), range(count)))
    runs = wait_for_runs(bench, [run_id for run_id, _, _ in triggers], timeout=max(300, count), interval=0.2)
    first_sent = min(sent for _, sent, _ in triggers)
    last_answered = max(answered for _, _, answered in triggers)
    last_finished = max(stamp(run.finished_time) for run in runs.values())
    return {
        "worker": label,
        "runs": count,
        "client_threads": CLIENT_THREADS,
        "runs_per_second": round(count / (last_finished - first_sent), 2),
        "seconds": round(last_finished - first_sent, 2),
        "api_triggers_per_second": round(count / (last_answered - first_sent), 2),
        "api_answer_ms": summary([answered - sent for _, sent, answered in triggers], 1000),
        "trigger_to_completed_ms": summary(
            [stamp(runs[run_id].finished_time) - sent for run_id, sent, _ in triggers], 1000
        ),
        **outcomes(runs.values()),
    }


def start_scheduler(bench):
    """`manage.py runscheduler`, once it holds the leadership (its advisory lock is in pg_locks)."""
    from parseq.scheduling.coordination import coordinator_for_database

    scheduler = bench.start("scheduler", [*MANAGE, "runscheduler"])
    coordinator = coordinator_for_database()
    wait_until(
        lambda: scheduler.check_alive() or coordinator.leader_exists(), timeout=30, message="the scheduler to lead"
    )
    return scheduler


def schedule_at_once(bench, count, prefix):
    """`count` one-off parsers due at the same whole second; their runs once the scheduler has made them all."""
    from django_apscheduler.models import DjangoJob

    from parseq.core.models import Run
    from parseq.scheduling.jobs import job_id

    # A whole second a few seconds ahead: time to create the parsers and for the scheduler to store their jobs.
    due = datetime.fromtimestamp(math.ceil(time.time()) + 5, tz=UTC)
    parsers = [create_parser(f"{prefix}_{number}", TRIVIAL, scheduled_time=due) for number in range(count)]
    job_ids = [job_id(parser.pk) for parser in parsers]

    def jobs_stored():
        stored = DjangoJob.objects.filter(id__in=job_ids).count()
        return stored if stored == count or time.time() >= due.timestamp() else 0

    stored = wait_until(jobs_stored, timeout=10, interval=0.02, message="the scheduler to store the jobs")
    margin = due.timestamp() - time.time()  # >0: every job was stored before it came due

    def all_made():
        bench.check_alive()
        found = list(Run.objects.filter(parser__in=parsers))
        return found if len(found) == count else None

    runs = wait_until(all_made, timeout=60, interval=0.1, message=f"{count} scheduled runs")
    created = sorted(stamp(run.created_time) for run in runs)
    return runs, {
        "parsers": count,
        "jobs_stored_before_due": stored == count and margin > 0,
        "jobs_stored_seconds_before_due": round(margin, 3),
        "created_minus_due_ms": summary([moment - due.timestamp() for moment in created], 1000),
        # The scheduler fires due jobs one after another in its thread: the cost of each.
        "ms_per_run_fired": round((created[-1] - created[0]) / max(1, count - 1) * 1000, 1),
    }


def measure_lateness_alone(bench, count):
    """The scheduler with no worker running: how late it creates the runs when nothing else competes for the CPU."""
    from parseq.core.models import Run

    scheduler = start_scheduler(bench)
    runs, figures = schedule_at_once(bench, count, "alone")
    bench.stop(scheduler)
    # Never to run: the next worker drops their messages, as it drops those of any run no longer enqueued.
    Run.objects.filter(pk__in=[run.pk for run in runs]).update(status=Run.Status.CANCELLED)
    return figures


def measure_lateness(bench, count, label):
    """The scheduler with workers running: when the runs are created, and when they start."""
    scheduler = start_scheduler(bench)
    runs, figures = schedule_at_once(bench, count, "due")
    ended = wait_for_runs(bench, [str(run.pk) for run in runs], timeout=120, interval=0.1).values()
    bench.stop(scheduler)
    due_at = stamp(runs[0].scheduled_for)
    return {
        "worker": label,
        **figures,
        "started_minus_due_ms": summary([stamp(run.started_time) - due_at for run in ended], 1000),
        "finished_minus_due_ms": summary([stamp(run.finished_time) - due_at for run in ended], 1000),
        **outcomes(ended),
    }


def run_once(bench, api, parser, timeout=300):
    run_id, sent, _ = api.trigger(parser.pk)
    run = wait_for_runs(bench, [run_id], timeout=timeout, interval=0.05)[run_id]
    if run.status != "completed":
        raise RuntimeError(f"run of {parser.name} ended {run.status}: {run.error[-1000:]}")
    return run, sent


def mib(kib):
    return round(kib / 1024, 1) if kib is not None else None


def measure_results(bench, api, sizes, trivial):
    """The worker's peak memory storing a large result, then that result streamed by gunicorn's one sync worker."""
    limit = str(max(sizes.download_mib, sizes.stored_mib) + 56)
    # Results this large need the limits raised (100 MiB by default); a single worker process, so that
    # its VmHWM is the one that stored the result.
    worker = bench.start_worker(
        "worker-1x1",
        processes=1,
        threads=1,
        extra_env={"PARSEQ_RESULT_SIZE_LIMIT_MB": limit, "PARSEQ_FILE_SIZE_LIMIT_MB": limit},
    )
    for _ in range(WARM_UP_RUNS):  # what any run loads (the runner, storage) is in the baseline
        small, _ = run_once(bench, api, trivial)
    before = worker.peak_memory()
    stored_parser = create_parser("stored", SIZED.format(size=sizes.stored_mib * MIB))
    stored_run, stored_sent = run_once(bench, api, stored_parser)
    after_stored = worker.peak_memory()
    big_parser = create_parser("download", SIZED.format(size=sizes.download_mib * MIB))
    big_run, big_sent = run_once(bench, api, big_parser)
    after_big = worker.peak_memory()
    bench.stop(worker)
    worker_memory = {
        "worker": "rundramatiq --processes 1 --threads 1",
        "result_mib": sizes.stored_mib,
        "vmhwm_before_mib": [mib(kib) for kib in before.values()],
        "vmhwm_after_mib": [mib(kib) for kib in after_stored.values()],
        "run_seconds": round(stamp(stored_run.finished_time) - stamp(stored_run.started_time), 2),
        "trigger_to_completed_seconds": round(stamp(stored_run.finished_time) - stored_sent, 2),
        "large_result_mib": sizes.download_mib,
        "vmhwm_after_large_result_mib": [mib(kib) for kib in after_big.values()],
        "run_seconds_large_result": round(stamp(big_run.finished_time) - stamp(big_run.started_time), 2),
    }
    download = measure_download(bench, small, big_run, sizes.download_mib)
    download["trigger_to_completed_seconds_of_the_run"] = round(stamp(big_run.finished_time) - big_sent, 2)
    return worker_memory, download


def stream(url):
    """Read a whole download in 1 MiB pieces, as a client saving it would: (bytes, seconds)."""
    started = time.perf_counter()
    received = 0
    with requests.get(url, stream=True, timeout=120) as response:
        response.raise_for_status()
        for piece in response.iter_content(MIB):
            received += len(piece)
    return received, time.perf_counter() - started


def measure_download(bench, small_run, big_run, size_mib):
    web, url = bench.start_web("web-download", ["--workers", "1", "--worker-class", "sync"])
    stream(f"{url}/{small_run.run_id}/a.txt")  # the download view's code is loaded before the baseline
    before = web.peak_memory()
    speeds = []
    for _ in range(DOWNLOADS):
        received, seconds = stream(f"{url}/{big_run.run_id}/result.bin")
        if received != size_mib * MIB:
            raise RuntimeError(f"downloaded {received} bytes of {size_mib} MiB")
        speeds.append(received / MIB / seconds)
    after = web.peak_memory()
    bench.stop(web)
    return {
        "web": "gunicorn parseq.wsgi --workers 1 --worker-class sync",
        "size_mib": size_mib,
        "downloads": DOWNLOADS,
        "mib_per_second": {
            "p50": round(statistics.median(speeds), 1),
            "min": round(min(speeds), 1),
            "max": round(max(speeds), 1),
        },
        "vmhwm_before_mib": [mib(kib) for kib in before.values()],
        "vmhwm_after_mib": [mib(kib) for kib in after.values()],
    }


class ConnectionSampler(threading.Thread):
    """Samples the workers' connections in pg_stat_activity every 0.1 s, on a connection of its own."""

    QUERY = (
        "SELECT pid, state, EXTRACT(EPOCH FROM clock_timestamp() - state_change), left(query, 100)"
        " FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
    )

    def __init__(self, application_name):
        super().__init__(daemon=True)
        self.application_name = application_name
        self.samples = []  # (wall time, [(pid, state, seconds in that state, its last query)])
        self.stopping = threading.Event()

    def run(self):
        connection = psycopg2.connect(dbname=DATABASE, application_name="parseq-bench-sampler", **DATABASE_SERVER)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not self.stopping.is_set():
                    cursor.execute(self.QUERY, [DATABASE, self.application_name])
                    rows = [(pid, state, float(age or 0), query) for pid, state, age, query in cursor.fetchall()]
                    self.samples.append((time.time(), rows))
                    self.stopping.wait(0.1)
        finally:
            connection.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)


def measure_connections(bench, api, sizes):
    """Many long runs on 4 processes of 8 threads: how many database connections the workers hold meanwhile."""
    application_name = "parseq-bench-workers"
    worker = bench.start_worker("worker-4x8", processes=4, threads=8, extra_env={"PGAPPNAME": application_name})
    parser = create_parser("sleeper", SLEEPER.format(seconds=sizes.long_run_seconds), timeout=120)
    sampler = ConnectionSampler(application_name)
    sampler.start()
    triggers = [api.trigger(parser.pk) for _ in range(sizes.long_runs)]
    runs = wait_for_runs(
        bench, [run_id for run_id, _, _ in triggers], timeout=sizes.long_run_seconds + 120, interval=0.2
    )
    time.sleep(2)  # and after: the idle workers should hold nothing
    sampler.stop()
    bench.stop(worker)
    return connection_figures(sampler.samples, list(runs.values()), sizes) | outcomes(runs.values())


def connection_figures(samples, runs, sizes):
    # Half a second inside both ends: the last runs claimed are still storing their settings, the first
    # finished already recording their outcome; in between, every run is in its sandbox.
    all_running_from = max(stamp(run.started_time) for run in runs) + 0.5
    all_running_until = min(stamp(run.finished_time) for run in runs) - 0.5
    during = [rows for moment, rows in samples if all_running_from <= moment <= all_running_until]
    last_finished = max(stamp(run.finished_time) for run in runs)
    after = [rows for moment, rows in samples if moment > last_finished + 1]  # 1 s to close them
    idle_ages = [age for _, rows in samples for _, state, age, _ in rows if state != "active"]
    busiest = max(during, key=len, default=[])
    return {
        "worker": "rundramatiq --processes 4 --threads 8",
        "runs": sizes.long_runs,
        "run_sleep_seconds": sizes.long_run_seconds,
        "all_running_at_once_seconds": round(max(0.0, all_running_until - all_running_from), 2),
        "samples": len(samples),
        "connections_per_sample": summary([len(rows) for _, rows in samples]),
        "connections_per_sample_while_all_running": summary([len(rows) for rows in during]) if during else None,
        # What the connections were doing in the busiest sample while every run was in its sandbox.
        "busiest_sample_while_all_running": [
            {"state": state, "seconds_in_state": round(age, 3), "query": query} for _, state, age, query in busiest
        ],
        "max_idle_age_seconds": round(max(idle_ages), 3) if idle_ages else 0.0,
        "distinct_connections_seen": len({row[0] for _, rows in samples for row in rows}),
        "connections_after_the_runs": max((len(rows) for rows in after), default=None),
    }


def measure_auth(bench, count):
    """API triggers with HTTP Basic against the same with a token, with the web's Basic cache on and then off.

    The user's password has the default hash (PBKDF2, what production stores); one client sends the
    triggers one after another on a kept-alive connection, so each figure is a request's own cost.
    """
    import base64

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import get_hasher
    from rest_framework.authtoken.models import Token

    from parseq.core.models import Run

    password = secrets.token_urlsafe(16)
    user = get_user_model().objects.create_user("bench-auth", password=password, is_staff=True, is_superuser=True)
    token = Token.objects.create(user=user).key
    basic = "Basic " + base64.b64encode(f"{user.username}:{password}".encode()).decode()
    parser = create_parser("auth", TRIVIAL)
    hasher = get_hasher()
    results = {
        "triggers": count,
        "client": "one client, one request after another, kept-alive connection",
        "password_hasher": f"{hasher.algorithm}, {getattr(hasher, 'iterations', '?')} iterations",
        "one_password_check_ms": password_check_ms(user, password),
    }
    for label, cache_seconds in (("cache_on", None), ("cache_off", "0")):
        extra_env = {"PARSEQ_BASIC_AUTH_CACHE_SECONDS": cache_seconds} if cache_seconds else {}
        web, url = bench.start_web(f"web-auth-{label}", API_WEB, extra_env)
        Api(url, token).warm_up()
        results[label] = {
            "basic_auth_cache_seconds": cache_seconds or "default (60)",
            "basic": timed_triggers(Api(url, authorization=basic), parser, count),
            "token": timed_triggers(Api(url, token), parser, count),
        }
        bench.stop(web)
    # Never to run: no worker consumes them here, and the next worker drops the messages of runs no longer enqueued.
    Run.objects.filter(parser=parser).update(status=Run.Status.CANCELLED)
    return results


def password_check_ms(user, password, times=5):
    """The median time of one `check_password` in this process, in ms: the hash a Basic request without cache pays."""
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        if not user.check_password(password):
            raise RuntimeError("the bench user's password does not check")
        durations.append(time.perf_counter() - started)
    return round(statistics.median(durations) * 1000, 1)


def timed_triggers(api, parser, count):
    """`count` POST /api/parsers/{id}/run/, one after another: the wall time, and each request's time in ms."""
    triggers = [api.trigger(parser.pk) for _ in range(count)]
    first_sent, last_answered = triggers[0][1], triggers[-1][2]
    return {
        "wall_seconds": round(last_answered - first_sent, 2),
        "per_second": round(count / (last_answered - first_sent), 1),
        "answer_ms": summary([answered - sent for _, sent, answered in triggers], 1000),
    }


# ---------------------------------------------------------------- report


def load_average():
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure here."""
    with open("/proc/loadavg") as file:
        return [float(value) for value in file.read().split()[:3]]


def cpu_ticks():
    """The machine's CPU time since it booted, from /proc/stat: (busy seconds, seconds stolen by the hypervisor)."""
    with open("/proc/stat") as file:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, file.readline().split()[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def busy_share(seconds=1.0):
    """How busy the machine's CPUs were over the next `seconds`, from 0 to 1 (the load average lags a minute)."""
    first = cpu_ticks()[0]
    time.sleep(seconds)
    return (cpu_ticks()[0] - first) / seconds / os.cpu_count()


def cpu_shares(ticks_before, ticks_after, used):
    """Where the machine's CPU time went during the bench: its processes, PostgreSQL, RabbitMQ, anything else."""
    busy_seconds = ticks_after[0] - ticks_before[0]
    others = {kind: seconds for kind, seconds in used.items() if kind.startswith("other")}
    seen_elsewhere = used["postgresql"] + used["rabbitmq"] + sum(others.values())
    return {
        "machine_busy": round(busy_seconds, 1),
        # A virtual machine's CPUs wait while the host runs others: time missing from every figure here.
        "stolen_by_the_hypervisor": round(ticks_after[1] - ticks_before[1], 1),
        "postgresql": round(used["postgresql"], 1),
        "rabbitmq": round(used["rabbitmq"], 1),
        # At least this much: what lived less than a second and was reaped by init is not seen.
        "other_processes": round(sum(others.values()), 1),
        "other_processes_top": {kind: round(seconds, 1) for kind, seconds in Counter(others).most_common(5)},
        # The rest of the busy time: the bench's processes and sandboxes (many end as orphans of init, as
        # bwrap's jails do, which the watch cannot attribute), with whatever else it did not see.
        "bench_and_unattributed": round(busy_seconds - seen_elsewhere, 1),
        "bench_seen": round(used["bench"], 1),
        "orphans_seen": round(used["orphans"], 1),
    }


def python_start_ms(runs=20):
    """The median start of a bare `python -I -c pass`, the sandbox's interpreter, in ms: how fast the machine is now.

    A shared virtual machine's speed changes from hour to hour; bench/runner_overhead.py's first line measures the
    same, so that figures taken at different times can be compared.
    """
    python = str(REPOSITORY / ".venv-sandbox" / "bin" / "python")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-I", "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


class Conditions:
    """How fast the machine was, and what else it did while the bench ran: the figures' context."""

    def __init__(self):
        self.load_before, self.busy_share_before = load_average(), busy_share()
        if self.busy_share_before > 0.25:
            print(f"WARNING: the CPUs were {self.busy_share_before:.0%} busy before the bench: figures will be skewed")
        self.python_start_before = python_start_ms()
        self.ticks_before = cpu_ticks()
        self.watch = CpuWatch()
        self.watch.start()

    def finish(self):
        return {
            "cpu_busy_share_before": round(self.busy_share_before, 3),
            "load_average_before": self.load_before,
            "load_average_after": load_average(),
            "cpu_seconds": cpu_shares(self.ticks_before, cpu_ticks(), self.watch.stop()),
            "python_start_ms_before": self.python_start_before,
            "python_start_ms_after": python_start_ms(),
        }


def machine(postgresql_version, vhost):
    from parseq.core.models import Run

    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    backends = sorted({value for value in Run.objects.values_list("parser_settings__sandbox", flat=True) if value})
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": postgresql_version,
        "rabbitmq_vhost": vhost,
        "worker_user": "root" if os.geteuid() == 0 else "not root",
        "sandbox_backends_used": backends,
    }


def row(what, figures=None, unit="ms", other=""):
    if figures is None:
        return (what, "", "", other, unit)
    return (what, f"{figures['p50']:.0f}", f"{figures['p95']:.0f}", other or f"max {figures['max']:.0f}", unit)


def table_rows(results):
    if "latency" not in results:  # --only lateness, --only auth
        return (lateness_rows(results) if "lateness" in results else []) + auth_rows(results)
    latency = results["latency"]
    rows = [
        row("trigger (API POST) → running", latency["trigger_to_running_ms"]),
        row("trigger (API POST) → completed", latency["trigger_to_completed_ms"]),
        row("  API answer (202)", latency["api_answer_ms"]),
        row("  created → running (broker, claim)", latency["created_to_running_ms"]),
        row("  running → completed (sandbox, store)", latency["running_to_completed_ms"]),
        row("  the sandbox alone (runner.run_script, same settings)", latency["sandbox_alone_ms"]),
    ]
    for figures in results["throughput"]:
        rows.append(
            row(
                f"throughput, {figures['runs']} runs, {figures['worker']}",
                None,
                "runs/s",
                f"{figures['runs_per_second']:.1f}",
            )
        )
        rows.append(row("  trigger → completed under that load", figures["trigger_to_completed_ms"]))
        rows.append(row("  API triggers accepted", None, "per s", f"{figures['api_triggers_per_second']:.1f}"))
        rows.append(row("  API answer (202) under that load", figures["api_answer_ms"]))
    cold = results["latency_cold"]
    rows += [
        row("cold start: trigger → running", cold["trigger_to_running_ms"]),
        row("cold start: trigger → completed", cold["trigger_to_completed_ms"]),
        row("  running → completed (sandbox, store)", cold["running_to_completed_ms"]),
        row("  the sandbox alone (runner.run_script, cold)", cold["sandbox_alone_ms"]),
    ]
    throughput = results["throughput_cold"]
    rows.append(
        row(
            f"throughput, {throughput['runs']} runs, cold start", None, "runs/s", f"{throughput['runs_per_second']:.1f}"
        )
    )
    rows.append(row("  trigger → completed under that load", throughput["trigger_to_completed_ms"]))
    rows += lateness_rows(results)
    download, memory, connections = results["download"], results["worker_memory"], results["connections"]
    rows += [
        row(
            f"download {download['size_mib']} MiB, gunicorn 1 sync worker",
            None,
            "MiB/s",
            f"{download['mib_per_second']['p50']:.0f}",
        ),
        row(
            "  gunicorn worker VmHWM before → after",
            None,
            "MiB",
            arrow(download["vmhwm_before_mib"], download["vmhwm_after_mib"]),
        ),
        row(
            f"worker VmHWM storing a {memory['result_mib']} MiB result",
            None,
            "MiB",
            arrow(memory["vmhwm_before_mib"], memory["vmhwm_after_mib"]),
        ),
        row(
            f"DB connections per sample, {connections['runs']} long runs (4x8)",
            connections["connections_per_sample"],
            "conns",
        ),
        row("  while every run is in its sandbox", connections["connections_per_sample_while_all_running"], "conns"),
        row("  max idle age of a worker connection", None, "s", f"{connections['max_idle_age_seconds']:.2f}"),
    ]
    return rows + auth_rows(results)


def auth_rows(results):
    if "auth" not in results:
        return []
    auth = results["auth"]
    rows = []
    for label, cache in (("cache_on", "Basic cache on"), ("cache_off", "Basic cache off (0)")):
        for kind, name in (("basic", "HTTP Basic"), ("token", "token")):
            figures = auth[label][kind]
            what = f"{auth['triggers']} API triggers, {name}, {cache}: per request"
            rows.append(row(what, figures["answer_ms"], other=f"{figures['wall_seconds']:.1f} s in all"))
    hash_check = f"  one password check ({auth['password_hasher']})"
    rows.append(row(hash_check, None, "ms", f"{auth['one_password_check_ms']}"))
    return rows


def lateness_rows(results):
    lateness, alone = results["lateness"], results["lateness_scheduler_alone"]
    return [
        row(
            f"schedule lateness, {alone['parsers']} due at once, no worker: created - due",
            alone["created_minus_due_ms"],
        ),
        row("  the scheduler's time per run fired", None, "ms", f"{alone['ms_per_run_fired']:.0f}"),
        row(
            f"schedule lateness, {lateness['parsers']} due at once, with workers: created - due",
            lateness["created_minus_due_ms"],
        ),
        row("  started - due", lateness["started_minus_due_ms"]),
    ]


def arrow(before, after):
    return f"{'+'.join(map(str, before))} → {'+'.join(map(str, after))}"


def print_table(results):
    info = results["machine"]
    print(
        f"\nParseq end to end: {info['cores']} cores ({info['cpu_model']}), Python {info['python']}, "
        f"PostgreSQL {info['postgresql']}, sandbox {', '.join(info['sandbox_backends_used'])}"
    )
    rows = [("what", "p50", "p95", "max/other", "unit"), *table_rows(results)]
    width = max(len(line[0]) for line in rows)
    for what, p50, p95, other, unit in rows:
        print(f"{what:<{width}}  {p50:>7}  {p95:>7}  {other:>17}  {unit}")
    print(
        f"wall time {results['wall_time_seconds']:.0f} s; load average (1, 5, 15 min) before "
        f"{results['load_average_before']}, after {results['load_average_after']}"
    )
    print(
        f"bare `python -I -c pass` start: {results['python_start_ms_before']} ms before, "
        f"{results['python_start_ms_after']} ms after (bench/runner_overhead.py's first line: the machine's speed)"
    )
    cpu = results["cpu_seconds"]
    print(
        f"CPU seconds meanwhile: {cpu['machine_busy']} busy in all: PostgreSQL {cpu['postgresql']}, "
        f"RabbitMQ {cpu['rabbitmq']}, other processes at least {cpu['other_processes']} {cpu['other_processes_top']}, "
        f"the bench and what could not be attributed {cpu['bench_and_unattributed']}; "
        f"stolen by the hypervisor {cpu['stolen_by_the_hypervisor']}"
    )


# ---------------------------------------------------------------- main


def run_phases(bench, sizes):
    api_web, api_url = bench.start_web("web-api", API_WEB)
    api = Api(api_url, create_user_token())
    trivial = create_parser("trivial", TRIVIAL)
    results = {"api_web_warm_up_slowest_ms": api.warm_up()}
    results["lateness_scheduler_alone"] = measure_lateness_alone(bench, sizes.due_parsers)
    worker = bench.start_worker("worker-default", threads=DEFAULT_THREADS)
    results["latency"] = measure_latency(bench, api, trivial, sizes.latency_runs)
    results["latency"]["sandbox_alone_ms"] = measure_sandbox_alone(bench, trivial, sizes.latency_runs)
    label = f"rundramatiq ({os.cpu_count()} processes x {DEFAULT_THREADS} threads)"
    results["throughput"] = [measure_throughput(bench, api, trivial, sizes.throughput_runs, label)]
    results["lateness"] = measure_lateness(bench, sizes.due_parsers, label)
    bench.stop(worker)
    processes, threads = COMPOSE_WORKER
    worker = bench.start_worker("worker-compose", processes=processes, threads=threads)
    label = f"compose's worker until PARSEQ_WORKER_SLOTS ({processes} processes x {threads} threads)"
    results["throughput"].append(measure_throughput(bench, api, trivial, sizes.throughput_runs, label))
    bench.stop(worker)
    results["latency_cold"], results["throughput_cold"] = measure_cold_start(bench, api, sizes, trivial)
    results["worker_memory"], results["download"] = measure_results(bench, api, sizes, trivial)
    results["connections"] = measure_connections(bench, api, sizes)
    bench.stop(api_web)
    results["auth"] = measure_auth(bench, sizes.auth_triggers)
    return results


def measure_cold_start(bench, api, sizes, trivial):
    """Latency and throughput again, on a worker of rundramatiq's default whose runs start cold."""
    worker = bench.start_worker("worker-cold", threads=DEFAULT_THREADS, extra_env=COLD_ENV)
    latency = measure_latency(bench, api, trivial, sizes.latency_runs)
    latency["sandbox_alone_ms"] = measure_sandbox_alone(bench, trivial, sizes.latency_runs, warm=False)
    label = f"rundramatiq ({os.cpu_count()} processes x {DEFAULT_THREADS} threads), cold start"
    throughput = measure_throughput(bench, api, trivial, sizes.throughput_runs, label)
    bench.stop(worker)
    return latency, throughput


def run_lateness_phases(bench, sizes):
    """--only lateness: the two lateness phases of run_phases, on a worker of rundramatiq's default."""
    results = {"lateness_scheduler_alone": measure_lateness_alone(bench, sizes.due_parsers)}
    worker = bench.start_worker("worker-default", threads=DEFAULT_THREADS)
    label = f"rundramatiq ({os.cpu_count()} processes x {DEFAULT_THREADS} threads)"
    results["lateness"] = measure_lateness(bench, sizes.due_parsers, label)
    bench.stop(worker)
    return results


def run_auth_phase(bench, sizes):
    """--only auth: API triggers with HTTP Basic against a token, Basic's cache on and off."""
    return {"auth": measure_auth(bench, sizes.auth_triggers)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument(
        "--only",
        choices=["lateness", "auth"],
        help="only the schedule lateness, or only authentication (default --out: end_to_end_<that>.json)",
    )
    parser.add_argument("--out")
    arguments = parser.parse_args()
    sizes = QUICK if arguments.quick else FULL
    phases = {"lateness": run_lateness_phases, "auth": run_auth_phase, None: run_phases}[arguments.only]
    default_out = f"end_to_end_{arguments.only}.json" if arguments.only else "end_to_end.json"
    out = Path(arguments.out or REPOSITORY / "bench" / "results" / default_out)
    started = time.monotonic()
    conditions = Conditions()
    broker_url, vhost = prepare_broker()
    postgresql_version = recreate_database()
    root = make_directories()
    env = parseq_env(root, broker_url)
    setup_django(env)
    bench = Bench(root, env, broker_url)
    try:
        results = phases(bench, sizes)
    except (ProcessExited, TimedOut, TimeoutError, RuntimeError):
        for service in bench.services:
            print(
                f"===== {service.name} (last lines of {service.log_path}) =====\n{service.log_tail()}", file=sys.stderr
            )
        raise
    finally:
        bench.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    results = {
        "quick": arguments.quick,
        "only": arguments.only,
        "sizes": sizes.__dict__,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(postgresql_version, vhost),
        **conditions.finish(),
        **results,
        "wall_time_seconds": round(time.monotonic() - started, 1),
    }
    print_table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
