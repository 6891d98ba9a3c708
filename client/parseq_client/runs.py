"""Runs: starting one, listing them, following a log as it is printed, downloading a run's files."""

import os
import re
import time

from parseq_client.connection import ServerProblem
from parseq_client.problems import CONTROLS, LocalProblem, printable, seconds
from parseq_client.scripts import parser_named

ACTIVE = ("enqueued", "running")
FOLLOW_INTERVAL_SECONDS = 0.5
RUN_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


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
    if not isinstance(run.get("run_id"), str) or not RUN_ID.fullmatch(run["run_id"]):
        raise ServerProblem(f"the server gave no run id, but {printable(repr(run.get('run_id')))}")
    if not follow:
        out.line(run["run_id"])
        out.data(run)
        out.note(f"enqueued; follow it with: parseq logs {run['run_id']} --follow")
        return 0
    out.note(f"run {run['run_id']} of {name}")
    return finish(server, out, run["run_id"])


def finish(server, out, run_id):
    """Follow a run's log to its end, then say how it ended: exit status 0 for completed, 1 otherwise."""
    try:
        run = follow(server, out, run_id)
    except KeyboardInterrupt:
        out.note(f"stopped following; the run goes on (parseq logs {run_id} --follow)")
        raise
    out.data(run)
    out.note(ending(run))
    return 0 if run["status"] == "completed" else 1


def follow(server, out, run_id, *, interval=FOLLOW_INTERVAL_SECONDS):
    """Print the run's log as it grows, from the start, until the run has ended; the run as it ended.

    A run whose worker was lost runs again, and its new attempt logs afresh: its log is printed from
    its start, after a line that says so.
    """
    offset, attempt, since = 0, None, time.monotonic()
    while True:
        answer = server.call("GET", f"/api/runs/{run_id}/log", query={"offset": offset})
        status, now = answer.headers.get("X-Run-Status", ""), answer.headers.get("X-Run-Attempt")
        if attempt is not None and now != attempt and offset:
            out.note(f"[parseq] the run started again (attempt {printable(now)}); its log from the start:")
            offset, attempt = 0, now
            continue
        attempt = now
        if answer.body:
            out.log(answer.body)
        # The run's final log replaces the live one: past its end, nothing more to print.
        offset = max(offset, _size(answer.headers.get("X-Log-Size"), offset + len(answer.body)))
        if status not in ACTIVE:
            return server.get(f"/api/runs/{run_id}/")
        out.progress(f"{printable(status)}…", since=since)
        time.sleep(interval)


def _size(header, otherwise):
    return int(header) if header and header.isascii() and header.isdigit() else otherwise


def ending(run):
    """One line on how a run ended."""
    took = f" in {seconds(run.get('duration'))}" if seconds(run.get("duration")) != "-" else ""
    if run["status"] == "completed":
        files = ", ".join(f"{file['name']} ({file['size']} bytes)" for file in run["files"]) or "no files"
        return printable(f"completed{took}: {files}")
    reason = str(run.get("error") or "").strip().splitlines()
    return printable(f"{run['status']}{took}" + (f": {reason[-1]}" if reason else ""))


def show_log(server, out, run_id, *, follow_it):
    if follow_it:
        return finish(server, out, run_id)
    answer = server.call("GET", f"/api/runs/{run_id}/log")
    if not out.as_json:
        out.log(answer.body)
    status = printable(answer.headers.get("X-Run-Status", ""))
    out.data({"run_id": run_id, "status": status, "log": answer.body.decode("utf-8", errors="replace")})
    return 0


def listing(server, out, name, *, status, limit):
    """The newest runs, of one parser or all, in one status or any."""
    query = {"status": status, "page_size": limit}
    if name:
        query["parser"] = parser_named(server, name)["id"]
    runs = server.get("/api/runs/", **query)["results"]
    rows = [_row(run) for run in runs]
    header = ("RUN", "PARSER", "STATUS", "TRIGGER", "CREATED (UTC)", "TOOK")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows] if rows else []:
        out.line("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not rows:
        out.note("no runs")
    out.data(runs)
    return 0


def _row(run):
    shown = (run["run_id"], run["parser_name"], run["status"], run["trigger"], _moment(run["created_time"]))
    return (*map(printable, shown), seconds(run.get("duration")))


def _moment(text):
    # 2026-12-01T05:03:04.123456Z, as the API gives it, to the second
    return str(text or "")[:19].replace("T", " ")


def download(server, out, run_id, *, directory, force):
    """A run's result files, or its error.txt, into `directory`; an existing file is replaced only with `force`."""
    run = server.get(f"/api/runs/{run_id}/")
    if run["status"] in ACTIVE:
        raise LocalProblem(f"run {run_id} is {run['status']}: nothing to download yet (parseq logs {run_id} -f)")
    wanted = [(file["name"], file["url"]) for file in run["files"]]
    if not wanted and run.get("error_url"):
        wanted = [("error.txt", run["error_url"])]
    if not wanted:
        raise LocalProblem(f"run {run_id} ended {printable(run['status'])} with no files")
    _check_names([name for name, _ in wanted])
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise LocalProblem(f"{directory} is not a directory")
    for name, _ in wanted:
        if os.path.lexists(os.path.join(directory, name)) and not force:
            raise LocalProblem(f"{os.path.join(directory, name)} exists: --force replaces it")
    os.makedirs(directory, exist_ok=True)
    written, mode = [], _file_mode()
    for name, url in wanted:
        path = os.path.join(directory, name)
        size = server.download(url, path)
        os.chmod(path, mode)
        written.append({"name": name, "path": path, "size": size})
        out.line(f"{path} ({size} bytes)")
    out.data({"run_id": run_id, "status": run["status"], "files": written})
    if run["status"] != "completed":
        out.note(f"run {run_id} ended {printable(run['status'])}: error.txt says why")
    return 0


def _check_names(names):
    """Never trust a server with where a file lands: plain names only, as the script contract has them, once each."""
    for name in names:
        plain = (
            isinstance(name, str)
            and name not in ("", ".", "..")
            and not name.startswith(".")
            and not re.search(r"[/\\]", name)
            and not CONTROLS.search(name)
            and len(name.encode("utf-8", errors="replace")) <= 255
        )
        if not plain:
            raise ServerProblem(f"the server named a file {printable(repr(name))}, no plain file name; not writing it")
    if len(set(names)) < len(names):
        raise ServerProblem("the server named a file twice; not writing either")


def _file_mode():
    """What a new file's mode would be under this process's umask, as other tools write files."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
