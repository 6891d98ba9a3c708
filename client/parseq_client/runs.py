"""Runs: starting one, listing them, following a log as it is printed, downloading a run's files."""

import os
import re
import time

from parseq_client.connection import ServerProblem
from parseq_client.scripts import LocalProblem, parser_named

ACTIVE = ("enqueued", "running")
FOLLOW_INTERVAL_SECONDS = 0.5
RUN_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
# A result file's name as the script contract allows it: no path, no leading dot (checked again here: never
# trust a server with where a file lands).
PLAIN_NAME = re.compile(r"[^/\\\x00.][^/\\\x00]{0,254}")


def run_id_of(text):
    if not RUN_ID.fullmatch(text):
        raise LocalProblem(f"not a run id: {text!r} (a UUID, as `parseq runs` lists them)")
    return text.lower()


def start(server, out, name, *, environment, timeout, follow):
    """Run the parser `name` now, with these variables and timeout for this run only; with `follow`, to its end."""
    parser = parser_named(server, name)
    body = {}
    if environment:
        body["environment"] = dict(environment)
    if timeout is not None:
        body["timeout"] = timeout
    run = server.post(f"/api/parsers/{parser['id']}/run/", body)
    if not follow:
        out.line(run["run_id"])
        out.data(run)
        out.note(f"enqueued; follow it with: parseq logs {run['run_id']} --follow")
        return 0
    out.note(f"run {run['run_id']} of {name}")
    return finish(server, out, run["run_id"])


def finish(server, out, run_id):
    """Follow a run's log to its end, then say how it ended: exit status 0 for completed, 1 otherwise."""
    run = follow(server, out, run_id)
    out.data(run)
    out.note(ending(run))
    return 0 if run["status"] == "completed" else 1


def follow(server, out, run_id, *, interval=FOLLOW_INTERVAL_SECONDS):
    """Print the run's log as it grows, from the start, until the run has ended; the run as it ended."""
    offset, since = 0, time.monotonic()
    while True:
        answer = server.call("GET", f"/api/runs/{run_id}/log", query={"offset": offset})
        status = answer.headers.get("X-Run-Status", "")
        if answer.body:
            out.log(answer.body)
        # The run's final log replaces the live one: past its end, nothing more to print.
        offset = max(offset, int(answer.headers.get("X-Log-Size") or offset + len(answer.body)))
        if status not in ACTIVE:
            return server.get(f"/api/runs/{run_id}/")
        out.progress(f"{status}…", since=since)
        time.sleep(interval)


def ending(run):
    """One line on how a run ended."""
    took = f" in {run['duration']:.1f} s" if run.get("duration") is not None else ""
    if run["status"] == "completed":
        files = ", ".join(f"{file['name']} ({file['size']} bytes)" for file in run["files"]) or "no files"
        return f"completed{took}: {files}"
    reason = (run.get("error") or "").strip().splitlines()
    return f"{run['status']}{took}" + (f": {reason[-1]}" if reason else "")


def show_log(server, out, run_id, *, follow_it):
    if follow_it:
        return finish(server, out, run_id)
    answer = server.call("GET", f"/api/runs/{run_id}/log")
    out.log(answer.body) if not out.as_json else None
    status = answer.headers.get("X-Run-Status", "")
    out.data({"run_id": run_id, "status": status, "log": answer.body.decode("utf-8", errors="replace")})
    return 0


def listing(server, out, name, *, status, limit):
    """The newest runs, of one parser or all, in one status or any."""
    query = {"status": status, "page_size": limit}
    if name:
        query["parser"] = parser_named(server, name)["id"]
    runs = server.get("/api/runs/", **query)["results"]
    rows = [
        (r["run_id"], r["parser_name"], r["status"], r["trigger"], _moment(r["created_time"]), _took(r)) for r in runs
    ]
    header = ("RUN", "PARSER", "STATUS", "TRIGGER", "CREATED (UTC)", "TOOK")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows] if rows else []:
        out.line("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not rows:
        out.note("no runs")
    out.data(runs)
    return 0


def _moment(text):
    # 2026-12-01T05:03:04.123456Z, as the API gives it, to the second
    return (text or "")[:19].replace("T", " ")


def _took(run):
    return f"{run['duration']:.1f} s" if run.get("duration") is not None else "-"


def download(server, out, run_id, *, directory, force):
    """A run's result files, or its error.txt, into `directory`; an existing file is replaced only with `force`."""
    run = server.get(f"/api/runs/{run_id}/")
    if run["status"] in ACTIVE:
        raise LocalProblem(f"run {run_id} is {run['status']}: nothing to download yet (parseq logs {run_id} --follow)")
    wanted = [(file["name"], file["url"]) for file in run["files"]]
    if not wanted and run.get("error_url"):
        wanted = [("error.txt", run["error_url"])]
    if not wanted:
        raise LocalProblem(f"run {run_id} ended {run['status']} with no files")
    for name, _ in wanted:
        if not PLAIN_NAME.fullmatch(name):
            raise ServerProblem(f"the server named a file {name!r}, which is no plain file name; not writing it")
        if os.path.exists(os.path.join(directory, name)) and not force:
            raise LocalProblem(f"{os.path.join(directory, name)} exists: --force replaces it")
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, url in wanted:
        path = os.path.join(directory, name)
        size = server.download(url, path)
        written.append({"name": name, "path": path, "size": size})
        out.line(f"{path} ({size} bytes)")
    out.data({"run_id": run_id, "status": run["status"], "files": written})
    if run["status"] != "completed":
        out.note(f"run {run_id} ended {run['status']}: error.txt says why")
    return 0
