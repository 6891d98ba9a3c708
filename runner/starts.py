"""How a run's process starts: cold, a fresh interpreter exec'd by the jail's command; or warm, a fork of a zygote.

Either start works with any jail that offers its hooks (runner/subprocess_jail.py, runner/bwrap_jail.py):
a cold start asks the jail for its command line, a warm start for the request that makes a fork what
the jail would have made it (runner/sandbox/zygote.py). Both hand the supervisor a child with the same
interface (runner/supervisor.py: Child).
"""

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager

from runner.jail import ProcessJail
from runner.outcome import Limits
from runner.supervisor import SandboxRun
from runner.warm import WarmChild, Zygote, zygote_for

# A warm start's zygote keeps these from its start; a run's whole environment comes with its request.
ZYGOTE_VARIABLES = ("PATH", "LANG", "MALLOC_ARENA_MAX")


class ColdStart:
    """A fresh interpreter for each run: the jail's command, in a session of its own."""

    def workdir_parent(self, jail: ProcessJail, limits: Limits) -> str | None:
        """Where the run's working directory goes: None, the usual temporary directory."""
        return None

    def for_run(self, jail: ProcessJail, run: SandboxRun) -> "ColdStart":
        return self

    def resources(self, jail: ProcessJail, run: SandboxRun) -> AbstractContextManager[object]:
        """What the jail makes for each cold run and removes after it (bwrap: its scratch tmpfs)."""
        return jail.cold_resources(run)

    def sandbox_user(self, jail: ProcessJail, run: SandboxRun) -> int | None:
        return jail.sandbox_user(run)

    def start(
        self,
        jail: ProcessJail,
        run: SandboxRun,
        *,
        pipes: Mapping[str, int],
        limits_json: str,
        environment: dict[str, str],
    ) -> "ColdChild":
        """Start the sandbox's process with the bootstrap.

        The run's cgroups' entries go with it: the bootstrap joins them first (they are in `limits_json`).
        """
        command = jail.command(run, result_fd=pipes["result"], lifeline_fd=pipes["lifeline"], limits_json=limits_json)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=pipes["log"],
            stderr=pipes["log"],
            pass_fds=(pipes["result"], pipes["lifeline"], *(run.cgroup.entry_fds if run.cgroup else ())),
            cwd=run.workdir,
            env=environment,
            start_new_session=True,
            **jail.user_switch(run.uid),
        )
        return ColdChild(process)


class ColdChild:
    """A sandbox started by exec: the worker's own child process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid
        self.returncode: int | None = None
        self.cpu_seconds = 0.0
        self.pidfd: int | None = None
        self.zygote_lost = False  # a cold child has no zygote

    def exit_fd(self) -> int | None:
        """A descriptor that wakes the loop when the child exits, where the kernel offers pidfds."""
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return None
        return self.pidfd

    def exited(self) -> bool:
        # WNOWAIT leaves the child unreaped, so its process group id cannot be reused before kill_group().
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Wait for the child and keep the CPU time it used, which tells a CPU-limit kill from others."""
        _, status, usage = os.wait4(self.pid, 0)
        self.process.returncode = self.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        if self.pidfd is not None:
            os.close(self.pidfd)


class WarmStart:
    """A fork of this worker's zygote, which has imported `preload` already (runner/warm.py).

    The fork sets itself up as the jail's cold command would (session, environment, working directory,
    rlimits, and the jail's namespaces and user) before the script runs. A jail whose zygote lives in a
    jail of its own (bwrap) has its runs' directories where that jail sees them, and its runs start
    cold where no run's jail can be made inside the zygote's.
    """

    def __init__(self, preload: Iterable[str] = (), runs_at_once: int = 16) -> None:
        self.preload = tuple(preload)
        self.runs_at_once = runs_at_once  # of the worker process: what its zygote's process budget is sized for

    def zygote(self, jail: ProcessJail, limits: Limits) -> Zygote:
        """The zygote for this jail, started on first use (or when the last one died)."""
        environment = {
            name: value for name, value in jail.environment("", "UTC", None).items() if name in ZYGOTE_VARIABLES
        }
        zygote_jail = jail.zygote_jail(limits, runs_at_once=self.runs_at_once)
        return zygote_for(python=jail.python, modules=self.preload, environment=environment, jail=zygote_jail)

    def workdir_parent(self, jail: ProcessJail, limits: Limits) -> str | None:
        """Runs' directories live where a jailed zygote sees them (unless runs must start cold)."""
        if not jail.jails_zygote:
            return None
        zygote = self.zygote(jail, limits)
        return zygote.jail.runs_dir if zygote.jails_work else None

    def for_run(self, jail: ProcessJail, run: SandboxRun) -> "WarmStart | ColdStart":
        """This start, with the run's zygote chosen; or a cold start where that zygote cannot jail a run."""
        if not jail.jails_zygote:
            return self  # the zygote is asked for when the run starts
        run.zygote = self.zygote(jail, run.limits)
        if not run.zygote.jails_work:  # the zygote warned when it started
            run.zygote = None
            return ColdStart()
        return self

    def resources(self, jail: ProcessJail, run: SandboxRun) -> AbstractContextManager[object]:
        return contextlib.nullcontext()  # a fork makes its own (runner/sandbox/self_jail.py)

    def sandbox_user(self, jail: ProcessJail, run: SandboxRun) -> int | None:
        return jail.fork_user(run)

    def start(
        self,
        jail: ProcessJail,
        run: SandboxRun,
        *,
        pipes: Mapping[str, int],
        limits_json: str,
        environment: dict[str, str],
    ) -> WarmChild:
        """Ask the zygote for a fork and send it the run's request (the jail's part of it from the jail)."""
        zygote = run.zygote or self.zygote(jail, run.limits)
        limits = {**json.loads(limits_json), "cgroup_fds": []}  # the fork joins the cgroup itself
        request = jail.fork_request(run, zygote=zygote, limits=limits, environment=environment)
        return zygote.spawn(
            request=request,
            log_w=pipes["log"],
            result_w=pipes["result"],
            lifeline_r=pipes["lifeline"],
            cgroup_fds=run.cgroup.entry_fds if run.cgroup else (),
        )
