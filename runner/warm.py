"""The warm start's zygotes: one per worker process and jail forks each run's sandbox (runner/sandbox/zygote.py).

A cold run pays for a new interpreter and for importing its libraries (`requests` and `bs4`
take most of it); a warm run pays for a fork of a process that has done both already. The
fork then becomes exactly what a cold sandbox is after exec: its own session, scrubbed
environment, rlimits, and as root its own user id and network namespace.
"""

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading

from runner.sandbox import ZYGOTE

logger = logging.getLogger(__name__)
START_SECONDS = 60
# The zygote reports an exit as soon as it has reaped the child; this only bounds a zygote that hangs.
REPORT_SECONDS = 30

_zygotes = {}
_zygotes_lock = threading.Lock()


class ZygoteError(Exception):
    """The zygote could not start or is gone; the message says why."""


def zygote_for(*, python, modules, environment, jail=None):
    """This process's zygote for `python` with `modules` preloaded, started on first use or when it died.

    `jail`, for the bwrap backend, says how to start it inside a bubblewrap jail (runner/bwrap_jail.py: ZygoteJail).
    """
    key = (python, tuple(sorted(modules)), tuple(sorted(environment.items())), jail.key if jail else None)
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None or not zygote.usable():
            if zygote is not None:
                zygote.close()
            zygote = _zygotes[key] = Zygote(python=python, modules=modules, environment=environment, jail=jail)
        return zygote


def stop_all():
    """Stop this process's zygotes (their children are killed with them)."""
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()


atexit.register(stop_all)  # and their runs' directories go with them


class Zygote:
    """A running zygote and the socket that asks it for children."""

    def __init__(self, *, python, modules, environment, jail=None):
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.jail = jail
        # In a jail, the zygote's pids are its own pid namespace's: only the zygote can signal its children.
        self.pids_are_ours = jail is None
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        budget = str(jail.process_budget if jail else 0)
        arguments = [str(theirs.fileno()), json.dumps(sorted(modules)), budget, "jail" if jail else "plain"]
        command = jail.command(python, arguments) if jail else [python, "-I", "-B", ZYGOTE, *arguments]
        try:
            self.process = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=environment,
                cwd="/",
                start_new_session=True,
                **(jail.user_switch() if jail else {}),
            )
        except OSError as error:
            self.control.close()
            if jail:
                jail.remove()
            raise ZygoteError(f"could not start the zygote: {error}") from None
        finally:
            theirs.close()
        self.wait_until_ready()

    def wait_until_ready(self):
        self.control.settimeout(START_SECONDS)
        try:
            ready = self.control.recv(256)
        except OSError:
            ready = b""
        # Where nested user namespaces are forbidden, a jailed zygote says so: runs then start cold.
        self.jails_work = ready == b"ready"
        if self.jail and ready.startswith(b"ready") and not self.jails_work:
            logger.warning("bwrap cannot make a jail inside a jail here (nested user namespaces): runs start cold")
        if not ready.startswith(b"ready"):
            self.process.kill()
            message = self.process.stderr.read().decode(errors="replace").strip()
            self.process.wait()
            self.control.close()
            if self.jail:
                self.jail.remove()
            raise ZygoteError(f"the zygote did not start: {message or 'no message'}")
        self.control.settimeout(None)
        self.process.stderr.close()

    def usable(self):
        return self.owner == os.getpid() and self.process.poll() is None

    def spawn(self, *, request, log_w, result_w, lifeline_r, cgroup_fds=()):
        """Fork a sandbox for one run and send it its request; returns the WarmChild.

        The request goes straight to the child over a pipe of its own, never through the zygote.
        The child joins the run's cgroups through `cgroup_fds` before anything else.
        """
        status, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request_r, request_w = os.pipe()
        try:
            with self.lock:
                fds = [theirs.fileno(), request_r, log_w, result_w, lifeline_r, *cgroup_fds]
                socket.send_fds(self.control, [b"run"], fds)
        except OSError as error:
            status.close()
            os.close(request_w)
            raise ZygoteError(f"the zygote is gone: {error}") from None
        finally:
            theirs.close()
            os.close(request_r)
        try:
            status.settimeout(REPORT_SECONDS)
            answer = status.recv(4096)
            if not answer:
                status.close()
                raise ZygoteError("the zygote closed the run's status socket without forking")
            answer = json.loads(answer)
            if "error" in answer:
                status.close()
                raise ZygoteError(f"the zygote could not fork the run's sandbox: {answer['error']}")
            child = WarmChild(answer["pid"], status, pid_is_ours=self.pids_are_ours)
            with contextlib.suppress(BrokenPipeError):  # the child died at once: its exit tells the rest
                write_all(request_w, json.dumps(request).encode())
        finally:
            os.close(request_w)
        return child

    def close(self):
        self.control.close()  # the zygote kills its children and exits when this closes
        if self.owner == os.getpid():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            if self.jail:
                self.jail.remove()


class WarmChild:
    """A run's sandbox forked by the zygote: not the worker's child, so its exit is the zygote's to report."""

    def __init__(self, pid, status, *, pid_is_ours=True):
        self.pid = pid
        self.pid_is_ours = pid_is_ours
        self.status = status
        self.returncode = None
        self.cpu_seconds = 0.0
        self.reaped = False  # by the zygote, which killed the child's group first
        self.zygote_lost = False  # the zygote died before it could report the exit

    def exit_fd(self):
        return self.status.fileno()  # readable once the zygote reports the exit

    def exited(self):
        if self.returncode is None:
            self.status.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                self.read_report()
        return self.returncode is not None

    def kill_group(self):
        if self.reaped:  # once reaped, the pid may be reused: never signal it again
            return
        with contextlib.suppress(OSError):
            self.status.send(b"kill")  # the zygote kills the group; in a jail, only it can
        if self.pid_is_ours:  # and in case the zygote is gone
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def reap(self):
        if self.returncode is None:
            self.status.settimeout(REPORT_SECONDS)
            try:
                self.read_report()
            except TimeoutError:
                self.returncode = -signal.SIGKILL
        self.status.close()

    def read_report(self):
        try:
            report = self.status.recv(4096)
        except ConnectionResetError:
            report = b""
        if not report:  # the zygote died; the supervisor kills what is left of the run's group
            self.returncode, self.zygote_lost = -signal.SIGKILL, True
            return
        report = json.loads(report)
        self.returncode, self.cpu_seconds, self.reaped = report["exit"], report["cpu"], True


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
