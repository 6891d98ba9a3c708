"""The warm start's zygote: imports the sandbox's libraries once, then forks a fresh child per run.

Invoked as `python -I -B zygote.py CONTROL_FD MODULES_JSON` by runner/warm.py, with the
sandbox's scrubbed environment. Only the standard library and the bootstrap beside it are used,
since this file runs in the sandbox's interpreter.

Each message on CONTROL_FD (a SOCK_SEQPACKET socket) carries five file descriptors: the run's
status socket, its request pipe, and the log, result and lifeline pipes of the bootstrap. The
zygote forks; the child reads the run's request (JSON: script, display name, limits, environment,
working directory, user id, whether to take a network namespace of its own) from the request
pipe, becomes what it says and runs the bootstrap, exactly as a cold sandbox would after exec.
The zygote itself never reads a request, so no run's variables ever enter the memory that
every later child is a copy of. It sends the child's pid on the status socket and, once the
child has exited, kills the child's process group, reaps the child and sends its exit status
and CPU time. When CONTROL_FD closes (the worker is gone), it kills every child and exits.
"""

import contextlib
import ctypes
import fcntl
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import bootstrap

FDS_PER_RUN = 5
REQUEST_LIMIT = 16 * 1024 * 1024
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_DUMPABLE = 4
SETUP_FAILED = 71  # the child's exit code when it could not become the run's sandbox
libc = ctypes.CDLL(None, use_errno=True)


def main():
    control = socket.socket(fileno=int(sys.argv[1]))
    preload(json.loads(sys.argv[2]))
    # Non-dumpable: no process of the same user may ptrace the zygote and taint every later run.
    libc.prctl(PR_SET_DUMPABLE, 0)
    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}  # pid -> status socket
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wakeup_r, selectors.EVENT_READ)
    control.send(b"ready")
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message, fds, _, _ = socket.recv_fds(control, 16, FDS_PER_RUN)
                if not message:
                    stop(children)
                    return
                if len(fds) == FDS_PER_RUN:
                    spawn(fds, children)
                else:
                    for fd in fds:
                        os.close(fd)
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_r, 4096)
                reap(children)


def preload(modules):
    """Import what scripts may import; a module that fails here just loads in the run, as it would cold.

    RestrictedPython too, which the bootstrap's policy layer imports in restricted runs.
    """
    for name in [*modules, "RestrictedPython"]:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a broken optional library must not stop the zygote
            continue


def spawn(fds, children):
    status, request, log, result, lifeline = fds
    pid = os.fork()
    if pid == 0:
        try:
            become_sandbox(request=request, log=log, result=result, lifeline=lifeline)
        finally:
            os._exit(SETUP_FAILED)
    for fd in (request, log, result, lifeline):
        os.close(fd)
    status_socket = socket.socket(fileno=status)
    children[pid] = status_socket
    with contextlib.suppress(OSError):  # the worker may have given up on this run already
        status_socket.send(json.dumps({"pid": pid}).encode())


def become_sandbox(*, request, log, result, lifeline):
    """In the forked child: only this run's descriptors, its request applied, then the script. Never returns."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    close_all_but(request, result, lifeline)
    try:
        settings = json.loads(read_all(request))
        os.close(request)
        os.chdir(settings["cwd"])
        os.environ.clear()
        os.environ.update(settings["environment"])
        time.tzset()
        if settings["own_network"]:
            take_own_network()
        if settings["uid"] is not None:
            become_user(settings["uid"])
    except BaseException:  # noqa: BLE001 - the log is the only place left to say it
        sys.stderr.write("[parseq] the warm sandbox could not be set up:\n" + traceback.format_exc())
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    bootstrap.run(settings["script"], settings["display_name"], result, lifeline, settings["limits"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def close_all_but(*keep):
    """Close every inherited descriptor above stderr except `keep`: other runs' sockets are not this run's."""
    highest = os.sysconf("SC_OPEN_MAX")
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, highest)


def read_all(fd):
    chunks, size = [], 0
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > REQUEST_LIMIT:
            raise ValueError("the run's request is too large")
    return b"".join(chunks)


def take_own_network():
    """A network namespace with only a loopback, up (what `unshare --net` and `ip link set lo up` do cold)."""
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def become_user(uid):
    """The run's own user for good: no groups, no way back to root."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(PR_SET_DUMPABLE, 1)  # as after exec: the run may read its own /proc/self


def reap(children):
    """Report each exited child: its group killed first (as a cold supervisor does), then reaped."""
    while True:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if exited is None:
            return
        pid = exited.si_pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        status_socket = children.pop(pid, None)
        if status_socket is not None:
            report = {"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
            with contextlib.suppress(OSError):
                status_socket.send(json.dumps(report).encode())
            status_socket.close()


def stop(children):
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
