"""What the process jails share (runner/subprocess_jail.py, runner/bwrap_jail.py): the hooks a start and the
supervisor call on them, the sandbox's environment, where its interpreter lives, and the run's own user id as root.
"""

import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from runner.outcome import Limits
from runner.sandbox_user import SANDBOX_UIDS, chown_tree, unreachable_parent
from runner.supervisor import SandboxRun, SandboxSetupError
from runner.warm import Zygote


class ProcessJail(Protocol):
    """A jail a process is started in, cold or warm (runner/starts.py): a hook for each start's needs."""

    name: str
    python: str
    # A wrapper (bwrap) exits with 128 + N when the process it runs dies of signal N.
    wrapper_reports_signals: bool
    # Whether a warm start's zygote lives in a jail of its own, where its runs' directories must be.
    jails_zygote: bool

    def isolates_network(self) -> bool: ...
    def egress_socket(self, workdir: str) -> str:
        """Where the sandbox finds the egress proxy's socket, seen from inside."""
        ...

    def environment(self, workdir: str, timezone: str, egress_socket: str | None) -> dict[str, str]: ...
    def disk_usage(self, run: SandboxRun) -> Callable[[], int] | None:
        """How the supervisor measures what the run wrote, where no filesystem holds the disk limit."""
        ...

    # A cold start's hooks.
    def cold_resources(self, run: SandboxRun) -> AbstractContextManager[object]: ...
    def sandbox_user(self, run: SandboxRun) -> int | None: ...
    def command(self, run: SandboxRun, *, result_fd: int, lifeline_fd: int, limits_json: str) -> list[str]: ...
    def user_switch(self, uid: int | None) -> dict[str, Any]: ...

    # A warm start's hooks.
    def zygote_jail(self, limits: Limits, *, runs_at_once: int) -> Any: ...
    def fork_user(self, run: SandboxRun) -> int | None: ...
    def fork_request(
        self, run: SandboxRun, *, zygote: Zygote, limits: dict[str, Any], environment: dict[str, str]
    ) -> dict[str, Any]: ...


def environment(python: str, workdir: str, timezone: str, egress_socket: str | None) -> dict[str, str]:
    """The sandbox's whole environment, before the parser's own variables (which never replace these)."""
    variables = {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": timezone,
        "HOME": workdir,
        "TMPDIR": workdir,
        # glibc reserves 64 MiB of address space per thread arena; that would count against the memory limit.
        "MALLOC_ARENA_MAX": "2",
    }
    if egress_socket:
        variables["PARSEQ_EGRESS_SOCKET"] = egress_socket
    return variables


def interpreter_paths(python: str) -> list[str]:
    """The sandbox environment, and the Python it was made from when that lives outside /usr."""
    venv = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    paths = [venv]
    base = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not base.startswith("/usr/") and base != "/usr" and not base.startswith(venv):
        paths.append(base)
    return paths


def own_user(workdir: str) -> int | None:
    """A user id of its own for this run when the worker is root (None otherwise); it gets the run's directory."""
    if os.geteuid() != 0:
        return None
    blocked = unreachable_parent(workdir)
    if blocked:
        raise SandboxSetupError(
            f"the sandbox's user cannot enter {blocked}, on the way to its working directory; "
            "make it traversable (chmod o+x) or point TMPDIR elsewhere"
        )
    uid = random.choice(SANDBOX_UIDS)  # noqa: S311 - uniqueness, not secrecy
    chown_tree(workdir, uid, uid)
    return uid
