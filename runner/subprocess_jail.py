"""The subprocess jail: the bootstrap in a child process of its own session with a scrubbed environment.

As root it also gets a user id of its own and a network namespace of its own whose only way out is
the egress proxy, as in the bwrap jail, with the host's socket places (/run, /tmp...) covered: a cold
child makes them with runner/sandbox/self_jail.py before it becomes the bootstrap, a warm fork with
the same functions (runner/sandbox/zygote.py).
"""

import contextlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from runner import jail
from runner.egress import EGRESS_SOCKET
from runner.outcome import Limits
from runner.sandbox import BOOTSTRAP, DIRECTORY, SELF_JAIL
from runner.sandbox.self_jail import HOST_SOCKET_PLACES
from runner.sandbox_user import bytes_written
from runner.supervisor import SandboxRun
from runner.warm import Zygote

HIDDEN_PREFIXES = tuple(f"{place}/" for place in HOST_SOCKET_PLACES)


class SubprocessJail:
    name = "subprocess"
    wrapper_reports_signals = False
    jails_zygote = False  # a warm start's zygote runs plainly, as the worker's child

    def __init__(self, python: str) -> None:
        self.python = os.path.abspath(python)  # not realpath: a venv's python must stay in its venv

    def isolates_network(self) -> bool:
        return os.geteuid() == 0

    def egress_socket(self, workdir: str) -> str:
        return os.path.join(workdir, EGRESS_SOCKET)

    def environment(self, workdir: str, timezone: str, egress_socket: str | None) -> dict[str, str]:
        return jail.environment(self.python, workdir, timezone, egress_socket)

    def kept_paths(self, workdir: str) -> list[str]:
        """What the sandbox must still see below the host's socket places it hides.

        Its directory, and where they are below those places (a checkout in /tmp), its Python and the
        sandbox code's own directory.
        """
        needed = [*jail.interpreter_paths(self.python), DIRECTORY]
        return [workdir, *(path for path in needed if path.startswith(HIDDEN_PREFIXES))]

    def cold_resources(self, run: SandboxRun) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def sandbox_user(self, run: SandboxRun) -> int | None:
        return jail.own_user(run.workdir)

    def fork_user(self, run: SandboxRun) -> int | None:
        return jail.own_user(run.workdir)  # the fork becomes it (runner/sandbox/self_jail.py: become_user)

    def disk_usage(self, run: SandboxRun) -> Callable[[], int]:
        """How to measure what the run has written, for the disk limit (polled: no quota holds it here)."""
        return lambda: bytes_written(run.workdir, run.uid)

    def command(self, run: SandboxRun, *, result_fd: int, lifeline_fd: int, limits_json: str) -> list[str]:
        """A cold start's command line: the bootstrap, behind self_jail.py as root."""
        arguments = [run.script_path, run.display_name, str(result_fd), str(lifeline_fd), limits_json]
        interpreter = [self.python, "-I", "-B", BOOTSTRAP, *arguments]
        if run.uid is None:
            return interpreter
        # Root makes the namespaces (runner/sandbox/self_jail.py), then becomes the sandbox's user for good.
        settings = json.dumps({"uid": run.uid, "keep": self.kept_paths(run.workdir)})
        return [self.python, "-I", "-B", SELF_JAIL, settings, *interpreter]

    def user_switch(self, uid: int | None) -> dict[str, Any]:
        """Popen's arguments to become `uid`: none, the command does it itself."""
        return {}

    def zygote_jail(self, limits: Limits, *, runs_at_once: int) -> None:
        return None

    def fork_request(
        self, run: SandboxRun, *, zygote: Zygote, limits: dict[str, Any], environment: dict[str, str]
    ) -> dict[str, Any]:
        """A warm fork's request: what command() would make of a cold child (runner/sandbox/zygote.py)."""
        return {
            "script": run.script_path,
            "display_name": run.display_name,
            "limits": limits,
            "environment": environment,
            "cwd": run.workdir,
            "uid": run.uid,
            "own_network": run.uid is not None,
            "hide_host_paths": self.kept_paths(run.workdir) if run.uid is not None else None,
        }
