"""The supervision every process-based sandbox shares, whichever jail it is in and however it starts.

One run's life: its own user and cgroup are prepared, its process is started (runner/starts.py: a
fresh interpreter or a fork of the warm zygote) with a log pipe, a result pipe and a lifeline, and
the parent follows it with one selector loop: it keeps the log up to its limit, reads the JSON/base64
result protocol (runner/protocol.py), enforces the wall-clock deadline and the disk limit, asks about
cancellation, and kills the child's whole process group when the run ends, however it ends. What
happened, with what the run's cgroup counted, becomes the run's Outcome.

The jail (runner/subprocess_jail.py, runner/bwrap_jail.py) and the start are parameters: this module
imports neither.
"""

import json
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runner import cgroups, syscall_filter
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
)
from runner.protocol import LimitExceeded, ProtocolViolation, ResultReader, ScriptReportedError, format_size
from runner.sandbox_user import kill_all_processes_of, remove_files_of
from runner.warm import Zygote, ZygoteError

READ_SIZE = 64 * 1024
# Once the child has exited, how long stragglers may keep its pipes open.
DRAIN_SECONDS = 2.0
# Where no filesystem holds the disk limit, how often the supervisor measures what a run wrote.
DISK_CHECK_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 0.5
Networks = tuple[Any, ...]  # IPv4Network | IPv6Network | str, as runner.run_script takes them


class SandboxSetupError(Exception):
    """The sandbox cannot be prepared on this machine; the message says how to fix it."""


@dataclass
class SandboxRun:
    """One run's state, from its request to its clean-up; the backends themselves keep none.

    The first fields are the request (runner.run_script); the rest are filled in as the run is prepared.
    """

    script_path: str  # the copy in `workdir`
    display_name: str
    workdir: str
    out_dir: str
    limits: Limits
    timezone: str = "UTC"
    variables: Mapping[str, str] = field(default_factory=dict)
    network: str = "internet"
    allowed_networks: Networks = ()
    refused_networks: Networks = ()
    extra_ports: tuple[int, ...] = ()
    restricted_modules: Iterable[str] | None = None
    cancelled: Callable[[], bool] = lambda: False
    # Told each part of the output that the log keeps, as it comes (a live view of the log).
    log_sink: Callable[[bytes], None] | None = None
    # Where the sandbox finds the egress proxy, while one serves it.
    egress_socket: str | None = None
    # A cold bwrap run's scratch tmpfs (runner/bwrap_jail.py), as root.
    scratch_dir: str | None = None
    # The warm zygote whose jail the run is forked in (bwrap), chosen before the run's user.
    zygote: Zygote | None = None
    uid: int | None = None  # the run's own user, when the worker is root
    cgroup: cgroups.RunCgroup | None = None


class Child(Protocol):
    """The run's process as the supervisor sees it: runner/starts.py's ColdChild, runner/warm.py's WarmChild."""

    returncode: int | None
    cpu_seconds: float
    zygote_lost: bool

    def exit_fd(self) -> int | None: ...
    def exited(self) -> bool: ...
    def kill_group(self) -> None: ...
    def reap(self) -> None: ...


class Jail(Protocol):
    """What the supervisor asks of a jail (runner/subprocess_jail.py, runner/bwrap_jail.py)."""

    name: str
    python: str
    # A wrapper (bwrap) exits with 128 + N when the process it runs dies of signal N.
    wrapper_reports_signals: bool

    def environment(self, workdir: str, timezone: str, egress_socket: str | None) -> dict[str, str]: ...
    def disk_usage(self, run: SandboxRun) -> Callable[[], int] | None: ...


class Start(Protocol):
    """How a run's process starts (runner/starts.py): a fresh interpreter, or a fork of the warm zygote."""

    def sandbox_user(self, jail: Any, run: SandboxRun) -> int | None: ...
    def start(
        self, jail: Any, run: SandboxRun, *, pipes: Mapping[str, int], limits_json: str, environment: dict[str, str]
    ) -> Child: ...


def run_in_sandbox(run: SandboxRun, jail: Jail, start: Start) -> Outcome:
    """Prepare the run's user and cgroup, run in them, and clean both up however the run ends."""
    if not os.access(jail.python, os.X_OK):
        missing = f"the sandbox interpreter {jail.python} does not exist; run `make sandbox`"
        return Outcome(SANDBOX_ERROR, error=missing)
    try:
        run.uid = start.sandbox_user(jail, run)
        run.cgroup = run_cgroup(run.limits)
    except SandboxSetupError as error:
        return Outcome(SANDBOX_ERROR, error=str(error))
    try:
        return start_and_follow(run, jail, start)
    finally:
        if run.cgroup is not None:
            run.cgroup.remove()
        if run.uid is not None:
            remove_files_of(run.uid)


def run_cgroup(limits: Limits) -> cgroups.RunCgroup | None:
    """The run's own cgroup where the host has them (runner/cgroups.py), else None: the rlimits hold alone."""
    if not cgroups.availability()[0]:
        return None
    try:
        return cgroups.RunCgroup(memory_bytes=limits.memory_bytes, processes=limits.processes)
    except OSError as error:
        raise SandboxSetupError(f"could not make the run's cgroup: {error}") from None


def start_and_follow(run: SandboxRun, jail: Jail, start: Start) -> Outcome:
    """Start the run's process with its three pipes, then follow it to its outcome.

    The log and result pipes' write ends, and the lifeline's read end, are the child's alone once it
    has started: the parent closes its copies, so their end-of-file means the child is gone. The
    lifeline's write end stays open here until the run ends; when the worker dies, the bootstrap sees
    its end-of-file and kills the run's process group.
    """
    try:
        limits_json = child_limits(
            run.limits, own_uid=run.uid is not None, restricted_modules=run.restricted_modules, cgroup=run.cgroup
        )
    except syscall_filter.FilterError as error:
        return Outcome(SANDBOX_ERROR, error=str(error))
    log_r, log_w = os.pipe()
    result_r, result_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    try:
        child = start.start(
            jail,
            run,
            pipes={"log": log_w, "result": result_w, "lifeline": lifeline_r},
            limits_json=limits_json,
            # The parser's own variables never replace the ones the sandbox sets.
            environment={**run.variables, **jail.environment(run.workdir, run.timezone, run.egress_socket)},
        )
    except (OSError, ZygoteError) as error:
        for fd in (log_r, result_r, lifeline_w):
            os.close(fd)
        return Outcome(SANDBOX_ERROR, error=f"could not start the sandbox: {error}")
    finally:
        for fd in (log_w, result_w, lifeline_r):
            os.close(fd)
        if run.cgroup is not None:
            run.cgroup.close_entry_fds()
    try:
        supervisor = Supervisor(
            child,
            log_r,
            result_r,
            run,
            wrapper_reports_signals=jail.wrapper_reports_signals,
            disk_usage=jail.disk_usage(run),
        )
        return supervisor.supervise()
    finally:
        os.close(lifeline_w)


def child_limits(
    limits: Limits,
    *,
    own_uid: bool,
    restricted_modules: Iterable[str] | None = None,
    cgroup: cgroups.RunCgroup | None = None,
    pids_limited: bool = False,
) -> str:
    """What the bootstrap applies to itself before the script, as its LIMITS_JSON.

    The rlimits, the RestrictedPython policy, the seccomp filter, and the descriptors to join the
    run's cgroup by (`cgroup`, a cgroups.RunCgroup) with the process limit it holds; `pids_limited`:
    something else holds that limit for all of the run's processes (a container's pids limit).
    """
    return json.dumps(
        {
            "restricted": sorted(restricted_modules) if restricted_modules is not None else None,
            "seccomp": syscall_filter.program(),
            "cgroup_fds": cgroup.entry_fds if cgroup else [],
            "pids": limits.processes if cgroup or pids_limited else None,
            "memory": [limits.memory_bytes, format_size(limits.memory_bytes)],
            "file_size": [limits.file_bytes, format_size(limits.file_bytes)],
            "disk": [limits.disk_bytes, format_size(limits.disk_bytes)],
            "open_files": limits.open_files,
            "processes": limits.processes if own_uid else None,
            "cpu": limits.cpu_seconds,
        }
    )


def secret_holdback(variables: Mapping[str, str]) -> int:
    """How many bytes before a cut may hold the start of a variable's value, in any form (URL-encoded: 3 x)."""
    return max((3 * len(str(value).encode()) for value in variables.values()), default=0)


def feeding_failure(feed: Callable[[bytes], None], chunk: bytes) -> tuple[str, str] | None:
    """Give `chunk` to `feed` (the result reader's, or the log's); the (status, error) of what it broke, or None."""
    try:
        feed(chunk)
    except ScriptReportedError as error:
        return SCRIPT_ERROR, str(error)
    except LimitExceeded as error:
        return LIMIT_EXCEEDED, f"limit exceeded: {error}"
    except ProtocolViolation as error:
        return PROTOCOL_ERROR, f"protocol violation: {error}"
    except OSError as error:
        return SANDBOX_ERROR, f"could not store a result file: {error}"
    return None


def memory_breach(limits: Limits) -> str:
    """What a run whose processes together outgrew the memory limit is told (its cgroup's, or its container's)."""
    return f"memory limit {format_size(limits.memory_bytes)} exceeded (all of the run's processes together)"


def named_breach(status: str, error: str, *, breach: str | None) -> tuple[str, str]:
    """A failed run's status and error, led by the limit its processes broke (`breach`), unless the script saw
    it and the bootstrap named it already.
    """
    if breach and not error.startswith(breach.split(" (")[0]):
        return LIMIT_EXCEEDED, f"{breach}\n\n{error}"
    return status, error


class LogCollector:
    """Keeps the first `limit` bytes of the script's output and counts the rest; `sink` is told what it keeps.

    When output is dropped, the last `holdback` bytes kept go too (secret_holdback).
    """

    def __init__(self, limit: int, sink: Callable[[bytes], None] | None = None, holdback: int = 0) -> None:
        self.limit = limit
        self.sink = sink
        self.holdback = holdback
        self.kept = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = max(self.limit - len(self.kept), 0)
        self.kept += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)
        if self.sink is not None and room and chunk:
            self.sink(chunk[:room])

    def text(self) -> str:
        kept, dropped = bytes(self.kept), self.dropped
        if dropped and self.holdback:
            # A variable's value cut in two by the limit would escape the masking of secrets: what may be
            # the start of one goes too.
            cut = max(len(kept) - self.holdback, 0)
            kept, dropped = kept[:cut], dropped + len(kept) - cut
        text = kept.decode("utf-8", errors="replace")
        if dropped:
            text += f"\n[log truncated: {dropped} more bytes dropped, the limit is {format_size(self.limit)}]\n"
        return text


class Supervisor:
    """Follows one child until it exits or breaks a limit, then cleans up after it."""

    def __init__(
        self,
        child: Child,
        log_fd: int,
        result_fd: int,
        run: SandboxRun,
        *,
        wrapper_reports_signals: bool = False,
        disk_usage: Callable[[], int] | None = None,
    ) -> None:
        self.child = child
        self.cgroup = run.cgroup
        self.cancelled = run.cancelled
        self.next_cancel_check = 0.0
        self.disk_usage = disk_usage
        self.next_disk_check = 0.0
        self.uid = run.uid
        self.wrapper_reports_signals = wrapper_reports_signals
        self.limits = run.limits
        self.log = LogCollector(run.limits.log_bytes, sink=run.log_sink, holdback=secret_holdback(run.variables))
        self.result = ResultReader(run.out_dir, run.limits)
        self.selector = selectors.DefaultSelector()
        self.selector.register(log_fd, selectors.EVENT_READ, self.log.feed)
        self.selector.register(result_fd, selectors.EVENT_READ, self.result.feed)
        self.failure: tuple[str, str] | None = None

    def supervise(self) -> Outcome:
        """Follow the child to its end, then kill what is left of it, read what it left, and judge."""
        deadline = time.monotonic() + self.limits.wall_time
        try:
            self.follow(deadline)
        finally:
            self.kill_group()
            self.drain(time.monotonic() + DRAIN_SECONDS)
            self.child.reap()
            for key in list(self.selector.get_map().values()):
                os.close(key.fd)
            self.selector.close()
        return self.outcome()

    def follow(self, deadline: float) -> None:
        """Read the pipes until the child exits, the deadline passes, a limit breaks or the run is cancelled."""
        exit_fd = self.child.exit_fd()
        if exit_fd is not None:
            self.selector.register(exit_fd, selectors.EVENT_READ, None)
        try:
            while not self.child.exited():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.failure = (TIMEOUT, f"timed out after {self.limits.wall_time:g} s")
                    return
                # Without a descriptor that wakes it on the child's exit, the loop polls for it.
                if not self.read_ready(timeout=min(remaining, DISK_CHECK_SECONDS if exit_fd is not None else 0.05)):
                    return
                if self.disk_full():
                    self.failure = (LIMIT_EXCEEDED, f"disk limit {format_size(self.limits.disk_bytes)} exceeded")
                    return
                if self.cancel_requested():
                    self.failure = (CANCELLED, "cancelled")
                    return
        finally:
            if exit_fd is not None:
                self.selector.unregister(exit_fd)

    def disk_full(self) -> bool:
        if self.disk_usage is None or time.monotonic() < self.next_disk_check:
            return False
        self.next_disk_check = time.monotonic() + DISK_CHECK_SECONDS
        return self.disk_usage() > self.limits.disk_bytes

    def cancel_requested(self) -> bool:
        if time.monotonic() < self.next_cancel_check:
            return False
        self.next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
        return bool(self.cancelled())

    def read_ready(self, timeout: float) -> bool:
        """Read what is ready; False once a limit or the protocol is broken."""
        for key, _ in self.selector.select(timeout=timeout):
            if key.data is None:
                continue
            chunk = os.read(key.fd, READ_SIZE)
            if not chunk:
                self.selector.unregister(key.fd)
                os.close(key.fd)
                continue
            if self.failure is not None and key.data is not self.log.feed:
                continue
            self.failure = feeding_failure(key.data, chunk)
            if self.failure is not None:
                return False
        return True

    def kill_group(self) -> None:
        """Kill the child's process group and, when it has a user id of its own, every process of that user.

        The second catches what left the group with setsid(), as a daemon would.
        """
        self.child.kill_group()
        if self.uid is not None:
            kill_all_processes_of(self.uid)

    def drain(self, deadline: float) -> None:
        """Read what the child left in its pipes, in case it exited right after writing."""
        while self.selector.get_map() and time.monotonic() < deadline:
            self.read_ready(timeout=max(deadline - time.monotonic(), 0))

    def outcome(self) -> Outcome:
        log = self.log.text()
        status, error = self.failure or self.final_status()
        if status in (SCRIPT_ERROR, PROTOCOL_ERROR):
            status, error = named_breach(status, error, breach=self.cgroup_breach())
        if status != COMPLETED:
            self.result.discard()
            return Outcome(status, log=log, error=error)
        return Outcome(COMPLETED, log=log, files=list(self.result.files))

    def cgroup_breach(self) -> str | None:
        """The limit the run's cgroup says was hit (the kernel killed a process, or refused a fork), or None."""
        if self.cgroup is None:
            return None
        if self.cgroup.memory_exceeded():
            return memory_breach(self.limits)
        if self.cgroup.processes_exceeded():
            return f"process limit {self.limits.processes} (processes and threads) exceeded"
        return None

    def final_status(self) -> tuple[str, str]:
        """The status of a run that broke no limit while it ran: a result, or how its process ended without one."""
        try:
            self.result.finish()
        except ProtocolViolation as error:
            return PROTOCOL_ERROR, f"protocol violation: {error}"
        if self.result.done:
            return COMPLETED, ""
        if self.child.zygote_lost:
            return SANDBOX_ERROR, "the sandbox was lost: the warm start's zygote exited during the run"
        code = self.child.returncode
        assert code is not None  # reap() has set it
        if self.wrapper_reports_signals and code > 128:
            code = 128 - code
        cpu_limit = self.limits.cpu_seconds
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and self.child.cpu_seconds >= cpu_limit):
            return LIMIT_EXCEEDED, f"CPU time limit {cpu_limit} s exceeded"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if code == -signal.SIGKILL:
            # Under a wrapper the CPU time of the jail is not ours to read: name the likely limit.
            how += f" (SIGKILL: most likely its CPU time limit of {cpu_limit} s)"
        see_log = " (see the log)" if self.log.kept else ""
        return PROTOCOL_ERROR, f"the script's process {how} before parse() returned a result{see_log}"
