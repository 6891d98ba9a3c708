"""The parser and run lists, admin and API, with 10,000 parsers and 1,000,000 runs: how long a page takes.

Usage:
    .venv/bin/python bench/list_pages.py [--quick] [--parsers N] [--runs N] [--requests N] [--out FILE]

A data generator fills a database of the bench's own (parseq_bench_lists, kept between runs and
filled again only when its counts differ): N parsers, and N runs spread over them and over the last
year, in SQL (about a minute for a million). Then each page is asked for --requests times (20) by a
signed-in superuser through Django's test client, in this process, as gunicorn's worker would serve
it: the parser list, the run list, their filters, searches and later pages, admin and API. Prints
p50 and p95 in ms and the queries a page makes; --quick is 1,000 parsers and 100,000 runs. Measures,
asserts nothing.
"""

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from end_to_end import DATABASE_SERVER, REPOSITORY

DATABASE = "parseq_bench_lists"
STATUSES = ["completed"] * 8 + ["error", "cancelled"]  # what a year of runs mostly is
# (label, URL): a page each, the parser's id filled in where the URL asks for one.
PAGES = [
    ("admin: parsers", "/admin/core/parser/"),
    ("admin: parsers, search", "/admin/core/parser/?q=parser_77"),
    ("admin: runs", "/admin/core/run/"),
    ("admin: runs, page 50", "/admin/core/run/?p=50"),
    ("admin: runs, status error", "/admin/core/run/?status__exact=error"),
    ("admin: runs of a parser", "/admin/core/run/?parser__id__exact={parser}"),
    ("admin: runs, search a parser's name", "/admin/core/run/?q=parser_4242"),
    ("admin: runs, search an id's 8 digits", "/admin/core/run/?q={run_prefix}"),
    ("admin: runs, search an error's word", "/admin/core/run/?q=ConnectionError"),
    ("admin: runs, past 7 days", "/admin/core/run/?created_time__gte={week_ago}&created_time__lt={tomorrow}"),
    ("api: parsers", "/api/parsers/"),
    ("api: parsers, search", "/api/parsers/?search=parser_77"),
    ("api: runs", "/api/runs/"),
    ("api: runs, page 50", "/api/runs/?page=50"),
    ("api: runs, status error", "/api/runs/?status=error"),
    ("api: runs of a parser", "/api/runs/?parser={parser}"),
    ("api: runs of a parser, errors", "/api/runs/?parser={parser}&status=error"),
]


def database_url():
    server = DATABASE_SERVER
    return f"postgres://{server['user']}@{server['host']}:{server['port']}/{DATABASE}"


def ensure_database():
    connection = psycopg2.connect(dbname="postgres", **DATABASE_SERVER)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
        if not cursor.fetchone():
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    connection.close()


def setup_django():
    os.environ.update(
        DATABASE_URL=database_url(),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="testserver",
        PARSEQ_VAR_DIR=str(REPOSITORY / "bench" / "results" / "list-pages-var"),
        LOG_LEVEL="ERROR",
        DJANGO_SETTINGS_MODULE="parseq.settings",
    )
    sys.path.insert(0, str(REPOSITORY))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def generate(*, parsers, runs):
    """N parsers (parser_1 …) and N runs over them and over the last year; nothing when the counts are already so."""
    from django.db import connection

    from parseq.core.models import Parser, Run

    if Parser.objects.count() == parsers and Run.objects.count() == runs:
        print(f"kept: {parsers} parsers, {runs} runs")
        return
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE core_run, core_scriptversion, core_parser, core_auditentry CASCADE")
    Parser.objects.bulk_create(
        Parser(name=f"parser_{n}", description=f"scrapes site {n}", script=f"scripts/parser_{n}.py", cron="0 * * * *")
        for n in range(1, parsers + 1)
    )
    first = Parser.objects.order_by("pk").values_list("pk", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO core_run (run_id, parser_id, status, trigger, created_time, updated_time, started_time,
                                  finished_time, error, log, files, attempt, worker, attempts, recording_retries,
                                  script_sha256, parser_settings, parameters)
            SELECT gen_random_uuid(), %(first)s + (g %% %(parsers)s), s.status, 'schedule', t.created, t.created,
                   t.created + interval '1 second', t.created + interval '31 seconds',
                   CASE WHEN s.status = 'error' THEN 'ConnectionError: site ' || (g %% 97) || ' did not answer'
                        ELSE '' END,
                   'fetched 20 pages', '[]', 1, 'bench', '[]', 0, '', '{}', '{}'
            FROM generate_series(1, %(runs)s) AS g,
                 LATERAL (SELECT now() - (g * (365 * 86400.0 / %(runs)s)) * interval '1 second' AS created) AS t,
                 LATERAL (SELECT (%(statuses)s::text[])[1 + (g::bigint * 7919) %% %(kinds)s] AS status) AS s
            """,
            {"first": first, "parsers": parsers, "runs": runs, "statuses": STATUSES, "kinds": len(STATUSES)},
        )
        cursor.execute("ANALYZE core_run")
        cursor.execute("ANALYZE core_parser")
    print(f"generated {parsers} parsers and {runs} runs in {time.monotonic() - began:.0f} s")


def measure(*, requests):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from parseq.core.models import Parser, Run

    user = get_user_model().objects.filter(username="bench").first()
    user = user or get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    today = datetime.now(UTC).date()
    fill = {
        "parser": Parser.objects.filter(name="parser_4242").values_list("pk", flat=True).first() or 1,
        "run_prefix": str(Run.objects.values_list("pk", flat=True).first())[:8],
        "week_ago": today - timedelta(days=7),
        "tomorrow": today + timedelta(days=1),
    }
    rows = []
    for label, url in PAGES:
        url = url.format(**fill)
        seconds = []
        for _ in range(requests):
            with CaptureQueriesContext(connection) as queries:
                began = time.perf_counter()
                response = client.get(url)
                seconds.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")
        ms = sorted(second * 1000 for second in seconds)
        rows.append(
            {
                "page": label,
                "url": url,
                "p50_ms": round(statistics.median(ms), 1),
                "p95_ms": round(ms[max(0, int(len(ms) * 0.95 + 0.5) - 1)], 1),
                "queries": len(queries),
            }
        )
        print(f"{label:40} {rows[-1]['p50_ms']:8} {rows[-1]['p95_ms']:8} {rows[-1]['queries']:4}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 parsers and 100,000 runs")
    parser.add_argument("--parsers", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--out")
    arguments = parser.parse_args()
    parsers = arguments.parsers or (1_000 if arguments.quick else 10_000)
    runs = arguments.runs or (100_000 if arguments.quick else 1_000_000)
    ensure_database()
    setup_django()
    generate(parsers=parsers, runs=runs)
    print(f"{'page':40} {'p50 ms':>8} {'p95 ms':>8} {'queries':>4}")
    rows = measure(requests=arguments.requests)
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parsers": parsers,
        "runs": runs,
        "requests_per_page": arguments.requests,
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "pages": rows,
    }
    out = Path(arguments.out or REPOSITORY / "bench" / "results" / "list_pages.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
