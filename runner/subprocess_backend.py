"""Runs the bootstrap in a fresh interpreter, in its own session, and supervises it.

The parent reads the child's log pipe and result pipe with one selector loop,
enforces the wall-clock deadline and kills the child's whole process group when
the run ends, however it ends.
"""

import contextlib
import json
import os
import random
import selectors
import signal
import subprocess
import time

from runner import cgroups, syscall_filter
from runner.egress import EGRESS_SOCKET, behind_egress_proxy
from runner.outcome import (
    CANCELLED,
    COMPLETED,
    LIMIT_EXCEEDED,
    PROTOCOL_ERROR,
    SANDBOX_ERROR,
    SCRIPT_ERROR,
    TIMEOUT,
    Outcome,
)
from runner.protocol import LimitExceeded, ProtocolViolation, ResultReader, ScriptReportedError, format_size
from runner.sandbox_user import (
    SANDBOX_UIDS,
    bytes_written,
    chown_tree,
    kill_all_processes_of,
    remove_files_of,
    unreachable_parent,
)
from runner.self_jail import HOST_SOCKET_PLACES
from runner.warm import ZygoteError, zygote_for

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")
RESTRICTED_POLICY = os.path.join(os.path.dirname(BOOTSTRAP), "restricted.py")
SELF_JAIL = os.path.join(os.path.dirname(BOOTSTRAP), "self_jail.py")
HIDDEN_PREFIXES = tuple(f"{place}/" for place in HOST_SOCKET_PLACES)
READ_SIZE = 64 * 1024
# Once the child has exited, how long stragglers may keep its pipes open.
DRAIN_SECONDS = 2.0
# Where no filesystem holds the disk limit, how often the supervisor measures what a run wrote.
DISK_CHECK_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 0.5
# A warm start's zygote keeps these from its start; a run's whole environment comes with its request.
ZYGOTE_VARIABLES = ("PATH", "LANG", "MALLOC_ARENA_MAX")


class SandboxSetupError(Exception):
    """The sandbox cannot be prepared on this machine; the message says how to fix it."""


def child_limits(limits, *, own_uid, restricted_modules=None, cgroup=None):
    """What the bootstrap applies to itself before the script, as its LIMITS_JSON.

    The rlimits, the RestrictedPython policy, the seccomp filter, and the descriptors to join the
    run's cgroup by (`cgroup`, a cgroups.RunCgroup) with the process limit it holds.
    """
    return json.dumps(
        {
            "restricted": sorted(restricted_modules) if restricted_modules is not None else None,
            "seccomp": syscall_filter.program(),
            "cgroup_fds": cgroup.entry_fds if cgroup else [],
            "pids": limits.processes if cgroup else None,
            "memory": [limits.memory_bytes, format_size(limits.memory_bytes)],
            "file_size": [limits.file_bytes, format_size(limits.file_bytes)],
            "disk": [limits.disk_bytes, format_size(limits.disk_bytes)],
            "open_files": limits.open_files,
            "processes": limits.processes if own_uid else None,
            "cpu": limits.cpu_seconds,
        }
    )


class LogCollector:
    """Keeps the first `limit` bytes of the script's output and counts the rest."""

    def __init__(self, limit):
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0

    def feed(self, chunk):
        room = max(self.limit - len(self.kept), 0)
        self.kept += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)

    def text(self):
        text = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[log truncated: {self.dropped} more bytes dropped, the limit is {format_size(self.limit)}]\n"
        return text


class SubprocessBackend:
    """A child process in its own session with a scrubbed environment.

    As root it also gets a user id of its own and, where util-linux and iproute2
    are installed, a network namespace of its own whose only way out is the
    egress proxy, as in the bwrap jail.
    """

    name = "subprocess"
    # A wrapper (bwrap) exits with 128 + N when the process it runs dies of signal N.
    wrapper_reports_signals = False
    # Where the sandbox finds the egress proxy, while one serves it.
    egress_socket = None

    def __init__(self, python):
        self.python = os.path.abspath(python)  # not realpath: a venv's python must stay in its venv

    def isolates_network(self):
        return os.geteuid() == 0

    def kept_paths(self, workdir):
        """What the sandbox must still see below the host's socket places it hides.

        Its directory, and where they are below those places (a checkout in /tmp), its Python and the
        bootstrap's own directory.
        """
        needed = [*self.interpreter_paths(), os.path.dirname(BOOTSTRAP)]
        return [workdir, *(path for path in needed if path.startswith(HIDDEN_PREFIXES))]

    def interpreter_paths(self):
        """The sandbox environment, and the Python it was made from when that lives outside /usr."""
        venv = os.path.dirname(os.path.dirname(os.path.abspath(self.python)))
        paths = [venv]
        base = os.path.dirname(os.path.dirname(os.path.realpath(self.python)))
        if not base.startswith("/usr/") and base != "/usr" and not base.startswith(venv):
            paths.append(base)
        return paths

    def egress_socket_in_sandbox(self, workdir):
        return os.path.join(workdir, EGRESS_SOCKET)

    def command(self, *, workdir, script_path, display_name, result_fd, lifeline_fd, limits_json, uid):
        arguments = [script_path, display_name, str(result_fd), str(lifeline_fd), limits_json]
        interpreter = [self.python, "-I", "-B", BOOTSTRAP, *arguments]
        if uid is None:
            return interpreter
        # Root makes the namespaces (runner/self_jail.py), then becomes the sandbox's user for good.
        settings = json.dumps({"uid": uid, "keep": self.kept_paths(workdir)})
        return [self.python, "-I", "-B", SELF_JAIL, settings, *interpreter]

    def workdir_parent(self, limits):
        """Where the run's working directory goes: None, the usual temporary directory."""
        return None

    def start(self, *, workdir, script_path, display_name, pipes, limits_json, uid, environment, cgroup_fds=()):
        """Start the sandbox's process with the bootstrap; returns its ColdChild (or WarmChild).

        `cgroup_fds` are the run's cgroups' entries: the bootstrap joins them first (they are in `limits_json`).
        """
        command = self.command(
            workdir=workdir,
            script_path=script_path,
            display_name=display_name,
            result_fd=pipes["result"],
            lifeline_fd=pipes["lifeline"],
            limits_json=limits_json,
            uid=uid,
        )
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=pipes["log"],
            stderr=pipes["log"],
            pass_fds=(pipes["result"], pipes["lifeline"], *cgroup_fds),
            cwd=workdir,
            env=environment,
            start_new_session=True,
            **self.user_switch(uid),
        )
        return ColdChild(process)

    def disk_usage(self, workdir, uid):
        """How to measure what the run has written, for the disk limit (polled: no quota holds it here)."""
        return lambda: bytes_written(workdir, uid)

    def user_switch(self, uid):
        """Popen's arguments to become `uid`, unless command() does it itself (the subprocess backend does)."""
        return {}

    def zygote_environment(self):
        """A warm start's zygote's own environment: what must hold from the interpreter's start."""
        return {name: value for name, value in self.environment("", "UTC").items() if name in ZYGOTE_VARIABLES}

    def environment(self, workdir, timezone):
        environment = {
            "PATH": f"{os.path.dirname(self.python)}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": timezone,
            "HOME": workdir,
            "TMPDIR": workdir,
            # glibc reserves 64 MiB of address space per thread arena; that would count against the memory limit.
            "MALLOC_ARENA_MAX": "2",
        }
        if self.egress_socket:
            environment["PARSEQ_EGRESS_SOCKET"] = self.egress_socket
        return environment

    def sandbox_user(self, workdir):
        """A user id of its own for this run when the worker is root (None otherwise)."""
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

    def run(self, *, workdir, network, allowed_networks=(), refused_networks=(), extra_ports=(), **kwargs):
        """Run in the sandbox; with the policy "internet" and an isolated network, behind the egress proxy.

        The proxy refuses what runner.addresses refuses, except inside `allowed_networks`, and `refused_networks` too.
        """
        if network not in ("internet", "none"):
            return Outcome(SANDBOX_ERROR, error=f"unknown network policy {network!r}")
        if not self.isolates_network():
            if network == "none":
                why = (
                    f"network 'none' needs the bwrap backend or a worker running as root; this worker uses {self.name}"
                )
                return Outcome(SANDBOX_ERROR, error=why)
            return self.run_sandbox(workdir=workdir, **kwargs)
        if network == "none":
            return self.run_sandbox(workdir=workdir, **kwargs)
        self.egress_socket = self.egress_socket_in_sandbox(workdir)
        return behind_egress_proxy(
            lambda: self.run_sandbox(workdir=workdir, **kwargs),
            workdir=workdir,
            allowed_networks=allowed_networks,
            refused_networks=refused_networks,
            extra_ports=extra_ports,
        )

    def run_sandbox(self, *, workdir, limits, **arguments):
        """Prepare the run's user and cgroup, run in them, and clean both up however the run ends."""
        if not os.access(self.python, os.X_OK):
            missing = f"the sandbox interpreter {self.python} does not exist; run `make sandbox`"
            return Outcome(SANDBOX_ERROR, error=missing)
        try:
            uid = self.sandbox_user(workdir)
            cgroup = self.run_cgroup(limits)
        except SandboxSetupError as error:
            return Outcome(SANDBOX_ERROR, error=str(error))
        try:
            return self.run_in_cgroup(cgroup, uid=uid, workdir=workdir, limits=limits, **arguments)
        finally:
            if cgroup is not None:
                cgroup.remove()
            if uid is not None:
                remove_files_of(uid)

    def run_cgroup(self, limits):
        """The run's own cgroup where the host has them (runner/cgroups.py), else None: the rlimits hold alone."""
        if not cgroups.availability()[0]:
            return None
        try:
            return cgroups.RunCgroup(memory_bytes=limits.memory_bytes, processes=limits.processes)
        except OSError as error:
            raise SandboxSetupError(f"could not make the run's cgroup: {error}") from None

    def run_in_cgroup(
        self,
        cgroup,
        *,
        uid,
        script_path,
        display_name,
        workdir,
        out_dir,
        limits,
        timezone,
        variables,
        restricted_modules,
        cancelled,
    ):
        try:
            limits_json = child_limits(
                limits, own_uid=uid is not None, restricted_modules=restricted_modules, cgroup=cgroup
            )
        except syscall_filter.FilterError as error:
            return Outcome(SANDBOX_ERROR, error=str(error))
        log_r, log_w = os.pipe()
        result_r, result_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        try:
            child = self.start(
                workdir=workdir,
                script_path=script_path,
                display_name=display_name,
                pipes={"log": log_w, "result": result_w, "lifeline": lifeline_r},
                limits_json=limits_json,
                uid=uid,
                # The parser's own variables never replace the ones the sandbox sets.
                environment={**variables, **self.environment(workdir, timezone)},
                cgroup_fds=cgroup.entry_fds if cgroup else (),
            )
        except (OSError, ZygoteError) as error:
            for fd in (log_r, result_r, lifeline_w):
                os.close(fd)
            return Outcome(SANDBOX_ERROR, error=f"could not start the sandbox: {error}")
        finally:
            for fd in (log_w, result_w, lifeline_r):
                os.close(fd)
            if cgroup is not None:
                cgroup.close_entry_fds()
        try:
            supervisor = Supervisor(
                child,
                log_r,
                result_r,
                out_dir,
                limits,
                uid=uid,
                wrapper_reports_signals=self.wrapper_reports_signals,
                disk_usage=self.disk_usage(workdir, uid),
                cancelled=cancelled,
                cgroup=cgroup,
            )
            return supervisor.supervise()
        finally:
            os.close(lifeline_w)


class ColdChild:
    """A sandbox started by exec: the worker's own child process."""

    def __init__(self, process):
        self.process = process
        self.pid = process.pid
        self.returncode = None
        self.cpu_seconds = 0.0
        self.pidfd = None
        self.zygote_lost = False  # a cold child has no zygote

    def exit_fd(self):
        """A descriptor that wakes the loop when the child exits, where the kernel offers pidfds."""
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return None
        return self.pidfd

    def exited(self):
        # WNOWAIT leaves the child unreaped, so its process group id cannot be reused before kill_group().
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def kill_group(self):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def reap(self):
        """Wait for the child and keep the CPU time it used, which tells a CPU-limit kill from others."""
        _, status, usage = os.wait4(self.pid, 0)
        self.process.returncode = self.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        if self.pidfd is not None:
            os.close(self.pidfd)


class Supervisor:
    """Follows one child until it exits or breaks a limit, then cleans up after it."""

    def __init__(
        self,
        child,
        log_fd,
        result_fd,
        out_dir,
        limits,
        *,
        uid=None,
        wrapper_reports_signals=False,
        disk_usage=None,
        cancelled=None,
        cgroup=None,
    ):
        self.child = child
        self.cgroup = cgroup
        self.cancelled = cancelled or (lambda: False)
        self.next_cancel_check = 0.0
        self.disk_usage = disk_usage
        self.next_disk_check = 0.0
        self.uid = uid
        self.wrapper_reports_signals = wrapper_reports_signals
        self.limits = limits
        self.log = LogCollector(limits.log_bytes)
        self.result = ResultReader(out_dir, limits)
        self.selector = selectors.DefaultSelector()
        self.selector.register(log_fd, selectors.EVENT_READ, self.log.feed)
        self.selector.register(result_fd, selectors.EVENT_READ, self.result.feed)
        self.failure = None

    def supervise(self):
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

    def follow(self, deadline):
        exit_fd = self.child.exit_fd()
        if exit_fd is not None:
            self.selector.register(exit_fd, selectors.EVENT_READ, None)
        try:
            while not self.child.exited():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.failure = (TIMEOUT, f"timed out after {self.limits.wall_time:g} s")
                    return
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

    def disk_full(self):
        if self.disk_usage is None or time.monotonic() < self.next_disk_check:
            return False
        self.next_disk_check = time.monotonic() + DISK_CHECK_SECONDS
        return self.disk_usage() > self.limits.disk_bytes

    def cancel_requested(self):
        if time.monotonic() < self.next_cancel_check:
            return False
        self.next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
        return bool(self.cancelled())

    def read_ready(self, timeout):
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
            try:
                key.data(chunk)
            except ScriptReportedError as error:
                self.failure = (SCRIPT_ERROR, str(error))
            except LimitExceeded as error:
                self.failure = (LIMIT_EXCEEDED, f"limit exceeded: {error}")
            except ProtocolViolation as error:
                self.failure = (PROTOCOL_ERROR, f"protocol violation: {error}")
            except OSError as error:
                self.failure = (SANDBOX_ERROR, f"could not store a result file: {error}")
            if self.failure is not None:
                return False
        return True

    def kill_group(self):
        """Kill the child's process group and, when it has a user id of its own, every process of that user.

        The second catches what left the group with setsid(), as a daemon would.
        """
        self.child.kill_group()
        if self.uid is not None:
            kill_all_processes_of(self.uid)

    def drain(self, deadline):
        """Read what the child left in its pipes, in case it exited right after writing."""
        while self.selector.get_map() and time.monotonic() < deadline:
            self.read_ready(timeout=max(deadline - time.monotonic(), 0))

    def outcome(self):
        log = self.log.text()
        status, error = self.failure or self.final_status()
        breach = self.cgroup_breach() if status in (SCRIPT_ERROR, PROTOCOL_ERROR) else None
        if breach and not error.startswith(breach.split(" (")[0]):  # else the script saw it and the bootstrap said
            status, error = LIMIT_EXCEEDED, f"{breach}\n\n{error}"
        if status != COMPLETED:
            self.result.discard()
            return Outcome(status, log=log, error=error)
        return Outcome(COMPLETED, log=log, files=list(self.result.files))

    def cgroup_breach(self):
        """The limit the run's cgroup says was hit (the kernel killed a process, or refused a fork), or None."""
        if self.cgroup is None:
            return None
        if self.cgroup.memory_exceeded():
            memory = format_size(self.limits.memory_bytes)
            return f"memory limit {memory} exceeded (all of the run's processes together)"
        if self.cgroup.processes_exceeded():
            return f"process limit {self.limits.processes} (processes and threads) exceeded"
        return None

    def final_status(self):
        try:
            self.result.finish()
        except ProtocolViolation as error:
            return PROTOCOL_ERROR, f"protocol violation: {error}"
        if self.result.done:
            return COMPLETED, ""
        if self.child.zygote_lost:
            return SANDBOX_ERROR, "the sandbox was lost: the warm start's zygote exited during the run"
        code = self.child.returncode
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


class WarmSubprocessBackend(SubprocessBackend):
    """The subprocess backend with a warm start: a fork of this process's zygote instead of a new interpreter.

    The fork sets itself up as `command()` would (session, environment, working directory,
    rlimits, and as root a user id and a network namespace of its own) before the script runs.
    """

    def __init__(self, python, *, preload=()):
        super().__init__(python)
        self.preload = tuple(preload)

    def start(self, *, workdir, script_path, display_name, pipes, limits_json, uid, environment, cgroup_fds=()):
        request = {
            "script": script_path,
            "display_name": display_name,
            "limits": {**json.loads(limits_json), "cgroup_fds": []},  # the fork joins the cgroup itself
            "environment": environment,
            "cwd": workdir,
            "uid": uid,
            "own_network": uid is not None,
            "hide_host_paths": self.kept_paths(workdir) if uid is not None else None,
        }
        zygote = zygote_for(python=self.python, modules=self.preload, environment=self.zygote_environment())
        return zygote.spawn(
            request=request,
            log_w=pipes["log"],
            result_w=pipes["result"],
            lifeline_r=pipes["lifeline"],
            cgroup_fds=cgroup_fds,
        )
