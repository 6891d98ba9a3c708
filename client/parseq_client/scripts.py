"""Parser scripts on disk and on the server: push, check, diff, and trying one locally.

A file's parser is the one named after it: `parsers/http_cat.py` is the parser `http_cat`.
"""

import difflib
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from parseq_client.connection import ServerProblem


class LocalProblem(Exception):
    """A file or an argument that cannot be used as it is (exit status 2)."""


@dataclass(frozen=True)
class Script:
    path: str
    name: str
    text: str

    @property
    def sha256(self):
        """The SHA-256 the server stores this script with (as it does: UTF-8, without a byte order mark)."""
        return hashlib.sha256(self.text.removeprefix("\ufeff").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Refusal:
    """A reason a script is not taken, printed as compilers print theirs: `file:line: reason`."""

    path: str
    line: int | None
    reason: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"

    def as_dict(self):
        return {"file": self.path, "line": self.line, "reason": self.reason}


def scripts_in(paths):
    """The scripts at `paths` (files, or directories of .py files) and the refusals of those that cannot be read."""
    scripts, refusals, seen = [], [], {}
    for path in _files(paths):
        script, refusal = _read(path)
        if refusal:
            refusals.append(refusal)
        elif script.name in seen:
            refusals.append(Refusal(path, None, f"{seen[script.name]} is the parser {script.name} already"))
        else:
            seen[script.name] = path
            scripts.append(script)
    return scripts, refusals


def _files(paths):
    for path in paths:
        if os.path.isdir(path):
            # A directory's parsers: its .py files, not those named like helpers (_util.py, __init__.py) or hidden.
            names = sorted(n for n in os.listdir(path) if n.endswith(".py") and not n.startswith(("_", ".")))
            if not names:
                raise LocalProblem(f"{path}: no .py files in this directory")
            yield from (os.path.join(path, name) for name in names)
        else:
            yield path


def _read(path):
    if not path.endswith(".py"):
        return None, Refusal(path, None, "not a .py file: a parser script is a .py file named after its parser")
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        return None, Refusal(path, None, f"cannot be read: {error.strerror}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, Refusal(path, content[: error.start].count(b"\n") + 1, "the script is not valid UTF-8 text")
    return Script(path=path, name=Path(path).stem, text=text), None


def find_parser(server, name):
    """The parser named `name` on the server (a dict as the API shows it), or None."""
    for parser in server.get("/api/parsers/", name=name)["results"]:
        if parser["name"] == name:
            return parser
    return None


def parser_named(server, name):
    parser = find_parser(server, name)
    if parser is None:
        raise ServerProblem(f"no parser named {name} on {server.url}")
    return parser


def verdict_on(server, script, parser):
    """The server's check of `script`, as a new version of `parser` (its rules), or for a new parser."""
    body = {"script_text": script.text}
    if parser is not None:
        return server.post(f"/api/parsers/{parser['id']}/check/", body)
    return server.post("/api/parsers/check/", {**body, "name": script.name})


def refusals_of(script, verdict):
    return [Refusal(script.path, problem["line"], problem["reason"]) for problem in verdict["problems"]]


@dataclass
class Change:
    """What pushing one script does (or would do) to its parser."""

    script: Script
    parser: dict | None
    saved: dict | None = None

    @property
    def unchanged(self):
        return self.parser is not None and self.parser.get("script_sha256") == self.script.sha256

    def describe(self, *, dry_run):
        if self.unchanged:
            return "unchanged", self.parser["script_version"]
        if dry_run:
            return ("would update", None) if self.parser else ("would create", None)
        return ("updated" if self.parser else "created"), self.saved["script_version"]

    def as_dict(self, *, dry_run):
        action, version = self.describe(dry_run=dry_run)
        parser = self.saved or self.parser or {}
        return {
            "file": self.script.path,
            "name": self.script.name,
            "action": action,
            "version": version,
            "id": parser.get("id"),
        }


def push(server, out, paths, *, message, dry_run):
    """Make each script its parser's current version; nothing is saved unless the server would take every one."""
    scripts, refusals = scripts_in(paths)
    changes = [Change(script, find_parser(server, script.name)) for script in scripts]
    for change in changes:
        if not change.unchanged:
            refusals += refusals_of(change.script, verdict_on(server, change.script, change.parser))
    if not refusals and not dry_run:
        for change in changes:
            if not change.unchanged:
                change.saved, refusal = _save(server, change, message=message)
                refusals += [refusal] if refusal else []
    for refusal in refusals:
        out.line(str(refusal))
    for change in changes:
        if change.saved or change.unchanged or (dry_run and not refusals):
            action, version = change.describe(dry_run=dry_run)
            out.line(f"{action} {change.script.name}" + (f" (version {version})" if version else ""))
    out.data(
        {
            "changes": [c.as_dict(dry_run=dry_run) for c in changes if c.saved or c.unchanged or dry_run],
            "refused": [refusal.as_dict() for refusal in refusals],
        }
    )
    if refusals and not any(change.saved for change in changes):
        out.note("nothing was pushed: every script must pass the server's checks first")
    return 1 if refusals else 0


def _save(server, change, *, message):
    body = {"script_text": change.script.text, "script_message": message}
    try:
        if change.parser:
            return server.patch(f"/api/parsers/{change.parser['id']}/", body), None
        return server.post("/api/parsers/", {"name": change.script.name, **body}), None
    except ServerProblem as problem:
        if problem.status != 400:
            raise
        return None, Refusal(change.script.path, None, str(problem))


def check(server, out, paths):
    """The server's verdict on each script, as a new version of its parser or as a new parser."""
    scripts, refusals = scripts_in(paths)
    verdicts = []
    for script in scripts:
        verdict = verdict_on(server, script, find_parser(server, script.name))
        verdicts.append({"file": script.path, "name": script.name, **verdict})
        found = refusals_of(script, verdict)
        refusals += found
        for refusal in found:
            out.line(str(refusal))
        if not found:
            out.line(f"{script.path}: ok")
    for refusal in refusals:
        if not any(refusal.path == verdict["file"] for verdict in verdicts):
            out.line(str(refusal))
    out.data({"scripts": verdicts, "refused": [r.as_dict() for r in refusals if not _judged(r, verdicts)]})
    return 1 if refusals else 0


def _judged(refusal, verdicts):
    return any(refusal.path == verdict["file"] for verdict in verdicts)


def diff(server, out, name, path):
    """The server's current script of `name` against the file at `path`: exit status 1 when they differ."""
    local, refusals = scripts_in([path])
    if refusals:
        raise LocalProblem(str(refusals[0]))
    parser = parser_named(server, name)
    remote = server.call("GET", f"/api/parsers/{parser['id']}/script/").body.decode("utf-8", errors="replace")
    label = f"{name} (version {parser['script_version']} on the server)"
    lines = difflib.unified_diff(
        remote.removeprefix("\ufeff").splitlines(keepends=True),
        local[0].text.removeprefix("\ufeff").splitlines(keepends=True),
        fromfile=label,
        tofile=path,
    )
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    same = parser["script_sha256"] == local[0].sha256
    if not out.as_json and text:
        out.stdout.write(text)
        out.stdout.flush()
    out.data({"name": name, "file": path, "version": parser["script_version"], "same": same, "diff": text})
    return 0 if same else 1


def try_locally(out, path, *, out_dir, runner_options):
    """Run the script here as a worker would, with Parseq's runner (`python -m runner`); its exit status."""
    home = parseq_home()
    out_dir = out_dir or tempfile.mkdtemp(prefix=f"parseq-test-{Path(path).stem}-")
    python = home / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), "-m", "runner", path, "--out", out_dir]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")]))}
    if not out.as_json:
        out.note(f"running {path} as a worker would; its files go to {out_dir}")
        return subprocess.call([*command, *runner_options], env=env)
    finished = subprocess.run([*command, *runner_options], env=env, capture_output=True)
    files = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    out.data(
        {
            "file": path,
            "ok": finished.returncode == 0,
            "exit_status": finished.returncode,
            "out": out_dir,
            "files": files,
            "log": finished.stdout.decode("utf-8", errors="replace"),
            "summary": finished.stderr.decode("utf-8", errors="replace").strip(),
        }
    )
    return finished.returncode


def parseq_home():
    """The Parseq checkout whose runner `parseq test` uses: PARSEQ_HOME, else the one this client came from."""
    given = os.environ.get("PARSEQ_HOME")
    home = Path(given) if given else Path(__file__).resolve().parents[2]
    if not (home / "runner" / "__main__.py").is_file():
        raise LocalProblem(
            "parseq test runs scripts with Parseq's runner, which is not here: use the client of a Parseq "
            "checkout (`make run` installs it in .venv), or set PARSEQ_HOME to a checkout"
        )
    return home
