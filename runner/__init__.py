"""Parseq's sandbox runner: runs one parser script in a fresh, short-lived process.

It imports nothing from Django, so the worker, the CLI (`python -m runner`) and
the tests use it alike. See README: Isolation.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network

from runner.backend import Backend
from runner.bwrap_jail import BwrapJail, bwrap_works
from runner.cgroups import availability as cgroups_availability
from runner.docker_backend import DockerBackend
from runner.names import filename_problem
from runner.outcome import (
    CANCELLED,
    COMPLETED,
    LIMIT_EXCEEDED,
    PROTOCOL_ERROR,
    SANDBOX_ERROR,
    SCRIPT_ERROR,
    TIMEOUT,
    Limits,
    Outcome,
    ResultFile,
)
from runner.starts import ColdStart, WarmStart
from runner.subprocess_jail import SubprocessJail
from runner.supervisor import SandboxRun
from runner.warm import ZygoteError

Sandbox = Backend | DockerBackend
# Each backend's sandbox for an interpreter: a jail and a start (runner/backend.py), or Docker's own.
BACKENDS: dict[str, Callable[[str], Sandbox]] = {
    "subprocess": lambda python: Backend(SubprocessJail(python), ColdStart()),
    "bwrap": lambda python: Backend(BwrapJail(python), ColdStart()),
    "docker": DockerBackend,
}
# The backends with a warm start, and their sandbox for an interpreter, the modules its zygote preloads
# and how many runs the process may have at once (what the zygote's process budget is sized for).
WARM_BACKENDS: dict[str, Callable[[str, Iterable[str], int], Sandbox]] = {
    "subprocess": lambda python, preload, at_once: Backend(SubprocessJail(python), WarmStart(preload, at_once)),
    "bwrap": lambda python, preload, at_once: Backend(BwrapJail(python), WarmStart(preload, at_once)),
}
WORKDIR_PREFIX = "parseq-run-"

__all__ = [
    "BACKENDS",
    "CANCELLED",
    "COMPLETED",
    "LIMIT_EXCEEDED",
    "NO_BACKEND",
    "PROTOCOL_ERROR",
    "SANDBOX_ERROR",
    "SCRIPT_ERROR",
    "TIMEOUT",
    "WORKDIR_PREFIX",
    "Limits",
    "Outcome",
    "ResultFile",
    "best_backend",
    "bwrap_works",
    "cgroups_availability",
    "filename_problem",
    "run_script",
]


NO_BACKEND = (
    "no sandbox is safe enough here: bubblewrap cannot make a jail, and the subprocess backend hides the host's "
    "sockets (/run, /tmp) only from a worker running as root; install bubblewrap, run the worker as root, "
    "or choose the subprocess backend explicitly (PARSEQ_SANDBOX=subprocess, --backend subprocess) to accept that"
)


def best_backend() -> str | None:
    """The strongest backend that works here: bwrap; else, as root, the subprocess backend; else None (NO_BACKEND)."""
    if bwrap_works():
        return "bwrap"
    return "subprocess" if os.geteuid() == 0 else None


def _never() -> bool:
    return False


Networks = Iterable[IPv4Network | IPv6Network | str]


def run_script(
    script_path: str,
    out_dir: str,
    *,
    python: str,
    backend: str | None = "subprocess",  # None: best_backend() found none (NO_BACKEND)
    limits: Limits | None = None,
    timezone: str = "UTC",
    variables: Mapping[str, str] | None = None,
    network: str = "internet",
    allowed_networks: Networks = (),
    refused_networks: Networks = (),
    extra_ports: Iterable[int] = (),
    restricted_modules: Iterable[str] | None = None,
    cancelled: Callable[[], bool] | None = None,
    warm: bool = False,
    preload: Iterable[str] = (),
    runs_at_once: int = 16,
    log_sink: Callable[[bytes], None] | None = None,
) -> Outcome:
    """Run the script at `script_path` in a sandbox; on success its files are in `out_dir`.

    The script gets a fresh working directory, which is also its HOME, and which
    is deleted when the run ends; `variables` are added to its environment, and
    `network` is "internet" or "none" ("none" needs bwrap, docker, or a subprocess worker running as
    root). With "internet", every backend that isolates the network sends requests through the egress
    proxy, which also lets through the `allowed_networks` (networks, or CIDR texts) that
    runner.addresses refuses otherwise, and keeps out the `refused_networks` it would let through;
    requests go to ports 80 and 443, and the `extra_ports`.
    With `restricted_modules`, the script runs under the RestrictedPython policy and may import only
    those. `cancelled`, a callable, is asked about twice a second whether to stop: once it answers true,
    the sandbox is killed and the outcome is CANCELLED. `log_sink` is called, in this thread, with each
    part of the script's output the log keeps, as it comes.
    With `warm` (subprocess and bwrap), the sandbox is a fork of a zygote that has imported the modules
    in `preload` already (runner/starts.py, runner/warm.py); `runs_at_once`, how many runs this process may
    have at the same time, sizes the process budget the zygote's runs share (runner/bwrap_jail.py). Never raises
    for anything the script does: every failure is an Outcome with a
    status and an error for the user.
    """
    limits = limits or Limits()
    started = time.monotonic()
    if backend is None:
        return Outcome(SANDBOX_ERROR, error=NO_BACKEND)
    if warm and backend not in WARM_BACKENDS:
        return Outcome(SANDBOX_ERROR, error=f"a warm start needs the subprocess or bwrap backend, not {backend}")
    sandbox = WARM_BACKENDS[backend](python, preload, runs_at_once) if warm else BACKENDS[backend](python)
    try:
        parent = sandbox.workdir_parent(limits)
    except ZygoteError as error:
        return Outcome(SANDBOX_ERROR, error=f"could not start the sandbox: {error}")
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=parent, ignore_cleanup_errors=True) as workdir:
        script_copy = os.path.join(workdir, "script.py")
        shutil.copyfile(script_path, script_copy)
        run = SandboxRun(
            script_path=script_copy,
            display_name=os.path.basename(script_path),
            workdir=workdir,
            out_dir=out_dir,
            limits=limits,
            timezone=timezone,
            variables=variables or {},
            network=network,
            allowed_networks=tuple(allowed_networks),
            refused_networks=tuple(refused_networks),
            extra_ports=tuple(extra_ports),
            restricted_modules=restricted_modules,
            cancelled=cancelled or _never,
            log_sink=log_sink,
        )
        outcome = sandbox.run(run)
    outcome.duration = time.monotonic() - started
    return outcome
