"""Parser scripts on disk and on the server: push, check, diff, and trying one locally.

A file's parser is the one named after it: `parsers/http_cat.py` is the parser `http_cat`.
"""

import difflib
import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from parseq_client.connection import ServerProblem
from parseq_client.problems import CONTROLS, LocalProblem, printable

# The server's limits, checked here first: a larger file is never read whole, nor sent.
MAX_SCRIPT_BYTES = 256 * 1024
MAX_NAME_CHARACTERS = 200


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
        where = f"{printable(self.path)}:{self.line}" if self.line else printable(self.path)
        return f"{where}: {printable(self.reason)}"

    def as_dict(self):
        return {"file": self.path, "line": self.line, "reason": self.reason}


def scripts_in(paths):
    """The scripts at `paths` (files, or directories of .py files) and the refusals of those that cannot be read."""
    scripts, refusals, seen = [], [], {}
    for path, in_directory in _files(paths):
        script, refusal = _read(path, in_directory=in_directory)
        if refusal:
            refusals.append(refusal)
        elif script.name in seen:
            refusals.append(Refusal(path, None, f"{seen[script.name]} is the parser {script.name} already"))
        else:
            seen[script.name] = path
            scripts.append(script)
    return scripts, refusals


def _files(paths):
    """Each file to read, and whether it was found in a directory (rather than named)."""
    for path in paths:
        if os.path.isdir(path):
            # A directory's parsers: its .py files, not those named like helpers (_util.py, __init__.py) or hidden.
            names = sorted(n for n in os.listdir(path) if n.endswith(".py") and not n.startswith(("_", ".")))
            if not names:
                raise LocalProblem(f"{path}: no .py files in this directory")
            yield from ((os.path.join(path, name), True) for name in names)
        else:
            yield path, False


def _read(path, *, in_directory):
    """The script at `path`, or the Refusal that says why it is none."""
    name = Path(path).stem
    if not path.endswith(".py"):
        return None, Refusal(path, None, "not a .py file: a parser script is a .py file named after its parser")
    if in_directory and os.path.islink(path):
        # A checkout's link could point anywhere (~/.ssh/id_rsa): only a file named on the command line is followed.
        return None, Refusal(path, None, "a symbolic link, not followed in a directory: name it to push it")
    if not name.strip() or len(name) > MAX_NAME_CHARACTERS or CONTROLS.search(name):
        reason = f"1 to {MAX_NAME_CHARACTERS} characters, no control characters"
        return None, Refusal(path, None, f"no parser can be named {printable(repr(name))}: {reason}")
    try:
        content = _content(path)
    except OSError as error:
        return None, Refusal(path, None, f"cannot be read: {error.strerror}")
    except ValueError as error:
        return None, Refusal(path, None, str(error))
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, Refusal(path, content[: error.start].count(b"\n") + 1, "the script is not valid UTF-8 text")
    return Script(path=path, name=name, text=text), None


def _content(path):
    """A regular file's bytes, read only up to the server's limit."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a FIFO waits for a writer
        raise ValueError("not a regular file")
    with open(path, "rb") as file:
        content = file.read(MAX_SCRIPT_BYTES + 1)
    if len(content) > MAX_SCRIPT_BYTES:
        raise ValueError(f"the script is larger than the server's limit of {MAX_SCRIPT_BYTES} bytes (256 KiB)")
    return content


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
    """The server's check of `script`, as a new version of `parser` (its rules), or for a new parser.

    A request the server refuses as such (a 400: a NUL in the text, say) is a verdict of that one problem.
    """
    body = {"script_text": script.text}
    path = f"/api/parsers/{parser['id']}/check/" if parser else "/api/parsers/check/"
    try:
        return server.post(path, body if parser else {**body, "name": script.name})
    except ServerProblem as problem:
        if problem.status != 400:
            raise
        return {"valid": False, "problems": [{"line": None, "reason": str(problem)}], "sha256": script.sha256}


def refusals_of(script, verdict):
    return [Refusal(script.path, problem["line"], printable(problem["reason"])) for problem in verdict["problems"]]


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
        verdicts.append({**verdict, "file": script.path, "name": script.name})
        found = refusals_of(script, verdict)
        refusals += found
        if not found:
            out.line(f"{script.path}: ok")
    for refusal in refusals:
        out.line(str(refusal))
    out.data({"scripts": verdicts, "refused": [refusal.as_dict() for refusal in refusals]})
    return 1 if refusals else 0


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
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise LocalProblem(f"{out_dir} is not a directory")
    made = out_dir is None
    out_dir = out_dir or tempfile.mkdtemp(prefix=f"parseq-test-{Path(path).stem}-")
    python = home / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), "-m", "runner", path, "--out", out_dir]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")]))}
    try:
        if not out.as_json:
            out.note(f"running {path} as a worker would; its files go to {out_dir}")
            return subprocess.call([*command, *runner_options], env=env)
        finished = subprocess.run([*command, *runner_options], env=env, capture_output=True)
    finally:
        if made and not os.listdir(out_dir):  # nothing to look at: a usage error, say
            os.rmdir(out_dir)
    kept = os.path.isdir(out_dir)
    files = sorted(os.listdir(out_dir)) if kept else []
    out.data(
        {
            "file": path,
            "ok": finished.returncode == 0,
            "exit_status": finished.returncode,
            "out": out_dir if kept else None,
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
