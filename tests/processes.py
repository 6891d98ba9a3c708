"""The one harness for the real processes tests and benches start: workers, schedulers, servers.

A process starts in a session of its own, its output (stdout and stderr) in a log file; the
caller waits until it is ready (a predicate: a port accepting, a line in its log, a file);
stopping it stops its whole process group (SIGTERM, then SIGKILL after a grace), and psutil
tells its members, their memory, and whether any process with a marker still lives.

Imports nothing from Django or Parseq: the bench uses it before Django is set up.
"""

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil


class TimedOut(AssertionError):
    """What `wait_until` waited for did not come in time (an AssertionError: the test fails, not errors)."""


class ProcessExited(AssertionError):
    """A started process died while it was needed; the message ends with its log."""


def wait_until(predicate, *, timeout=30, interval=0.05, message="condition"):
    """Call `predicate` until it returns something true, and return that; TimedOut after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def free_port():
    """A TCP port nobody listens on now (the kernel's pick), for a server to bind a moment later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_accepting(host, port):
    """Whether something accepts TCP connections on host:port now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _alive(process):
    """Whether a psutil.Process still runs: zombies have ended, only nobody has reaped them yet."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone meanwhile
        return False


def processes_with(marker):
    """The live processes whose command line contains `marker`, as psutil.Process objects."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if marker in cmdline and _alive(process):
            found.append(process)
    return found


def command_lines():
    """The command lines of all live processes, in one pass: for looking for many markers at once."""
    return [" ".join(process.info["cmdline"] or ()) for process in processes_with("")]


def live_processes_with(marker):
    """Pids of the live processes whose command line contains `marker`."""
    return [process.pid for process in processes_with(marker)]


def group_members(pgid):
    """The live processes in process group `pgid`, as psutil.Process objects."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError):  # gone meanwhile
            if os.getpgid(process.pid) == pgid and _alive(process):
                found.append(process)
    return found


def kill_groups_of(marker):
    """SIGKILL every live process carrying `marker` with its whole process group (a sandbox leads its own)."""
    for pid in live_processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)
            if group == os.getpgrp():  # in the caller's own group: that one process only, never the caller
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)


def peak_memory_kib(pid):
    """A process's peak resident set (VmHWM) in KiB, None once it is gone; psutil reports only the current one."""
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Process:
    """One started process, leader of a session and process group of its own, its output logged to a file.

    `log_path=None` logs to a temporary file, removed once the process is stopped. As a context
    manager, it is stopped on leaving.
    """

    def __init__(self, argv, *, name=None, log_path=None, env=None, cwd=None):
        self.name = name or Path(argv[0]).name
        self._own_log = log_path is None
        if self._own_log:
            descriptor, log_path = tempfile.mkstemp(prefix=f"parseq-{self.name}-", suffix=".log")
            os.close(descriptor)
        self.log_path = Path(log_path)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped whole, its members told apart from others'
            )
        self.pid = self.popen.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def returncode(self):
        """The exit code once the leader has exited (reaping it), else None."""
        return self.popen.poll()

    def log_text(self):
        """Everything it has logged so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def logged(self, text):
        """Whether its log holds `text` (a predicate for `wait_until`)."""
        return text in self.log_text()

    def check_alive(self):
        """Raise ProcessExited, with its log's end, if the leader has exited."""
        if self.popen.poll() is not None:
            raise ProcessExited(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")

    def wait_until(self, predicate, *, timeout=30, interval=0.05, message="condition"):
        """`wait_until`, failing at once with ProcessExited should the process exit meanwhile."""

        def check():
            self.check_alive()
            return predicate()

        return wait_until(check, timeout=timeout, interval=interval, message=f"{message} ({self.name})")

    def members(self):
        """The live processes of its group: the leader, and what it forked that did not start a session."""
        return group_members(self.pid)

    def children(self):
        """Pids of the leader's live direct children in its group: dramatiq's worker processes, gunicorn's workers."""
        found = []
        for process in self.members():
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                if process.ppid() == self.pid:
                    found.append(process.pid)
        return sorted(found)

    def peak_memory(self):
        """{pid: peak resident set in KiB} of the leader's children: the processes that do the work."""
        return {pid: peak_memory_kib(pid) for pid in self.children()}

    def stop(self, grace=5.0):
        """SIGTERM to the group, SIGKILL to whatever is left after `grace` seconds (0: at once); waits until
        the whole group is gone. Idempotent."""
        if self.popen.poll() is None or self.members():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            deadline = time.monotonic() + grace
            while self.members() and time.monotonic() < deadline:
                self.popen.poll()  # reaps the leader, which would otherwise stay a zombie member
                time.sleep(0.05)
            # Once the leader is reaped and its group empty, the id may be reused: kill only a group still there.
            if self.members():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        # Its forked members are not our children: wait until they are gone (database connections and all).
        wait_until(lambda: not self.members(), timeout=10, message=f"the processes of {self.name} to end")
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def kill(self):
        """SIGKILL the whole group at once, as a crash or an out-of-memory kill would; waits until it is gone."""
        self.stop(grace=0)


def start(argv, *, ready=None, timeout=30, message="the process to be ready", **options):
    """Start a Process (options: name, log_path, env, cwd) and wait until `ready()` is true; stopped on failure."""
    process = Process(argv, **options)
    if ready is not None:
        try:
            process.wait_until(ready, timeout=timeout, interval=0.05, message=message)
        except TimedOut as error:
            tail = process.log_tail()
            process.stop()
            raise TimedOut(f"{error}; its log ends:\n{tail}") from None
        except BaseException:
            process.stop()
            raise
    return process
