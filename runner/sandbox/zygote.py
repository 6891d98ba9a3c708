"""The warm start's zygote: imports the sandbox's libraries once, then forks a fresh child per run.

Invoked as `python -I -B zygote.py CONTROL_FD MODULES_JSON PROCESS_BUDGET jail|plain` by
runner/warm.py, with the sandbox's scrubbed environment, either plainly (the subprocess backend)
or inside a bubblewrap jail of its own (bwrap: it first checks that a run's jail can be made in
it). PROCESS_BUDGET, unless 0, is the RLIMIT_NPROC of the zygote and all its runs together. Only
the standard library and the bootstrap beside it are used, since this file runs in the sandbox's
interpreter.

Each message on CONTROL_FD (a SOCK_SEQPACKET socket) carries five file descriptors: the run's
status socket, its request pipe, and the log, result and lifeline pipes of the bootstrap. The
zygote forks; the child reads the run's request (JSON: script, display name, limits, environment,
working directory, user id, whether to take a network namespace of its own, or a jail of its own
inside the zygote's) from the request pipe, becomes what it says and runs the bootstrap, as a
cold sandbox would after exec.
The zygote itself never reads a request, so no run's variables ever enter the memory that
every later child is a copy of. It sends the child's pid on the status socket and, once the
child has exited, kills the child's process group, reaps the child and sends its exit status
and CPU time. A message on the status socket (or its closing) asks it to kill the run's process
group: the worker cannot, when the zygote's jail has a pid namespace of its own. When CONTROL_FD
closes (the worker is gone), it kills every child and exits.
"""

import contextlib
import ctypes
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import bootstrap
from self_jail import become_user, enter_run_jail, hide_host_paths, jails_work, take_own_network

FDS_PER_RUN = 5
CGROUP_FDS = 2  # at most: the run's cgroups' entries follow the five (runner/cgroups.py)
REQUEST_LIMIT = 16 * 1024 * 1024
PR_SET_DUMPABLE = 4
SETUP_FAILED = 71  # the child's exit code when it could not become the run's sandbox
libc = ctypes.CDLL(None, use_errno=True)


def main():
    control = socket.socket(fileno=int(sys.argv[1]))
    budget = int(sys.argv[3])
    if budget:
        resource.setrlimit(resource.RLIMIT_NPROC, (budget, budget))
    preload(json.loads(sys.argv[2]))
    in_jail = sys.argv[4] == "jail"
    ready = b"ready" if not in_jail or jails_work() else b"ready, but no jail of a run's own can be made here"
    # Non-dumpable: no process of the same user may ptrace the zygote and taint every later run.
    libc.prctl(PR_SET_DUMPABLE, 0)
    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}  # pid -> status socket
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wakeup_r, selectors.EVENT_READ)
    control.send(ready)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message, fds, _, _ = socket.recv_fds(control, 16, FDS_PER_RUN + CGROUP_FDS)
                if not message:
                    stop(children)
                    return
                if len(fds) >= FDS_PER_RUN:
                    spawn(fds, children, selector)
                else:
                    for fd in fds:
                        os.close(fd)
            elif key.fileobj == wakeup_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_r, 4096)
                reap(children, selector)
            elif key.data is None:
                close_when_done(key.fileobj, selector)
            else:
                kill_on_request(key.fileobj, key.data, selector)


def kill_on_request(status_socket, pid, selector):
    """The worker asks to end a run (timeout, cancel, a limit), or has let go of it."""
    with contextlib.suppress(BlockingIOError, OSError):
        status_socket.recv(16, socket.MSG_DONTWAIT)
    selector.unregister(status_socket)  # one request is enough; the exit report follows
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def close_when_done(status_socket, selector):
    """Close a reported run's status socket once the worker has closed its end.

    Closing first, with a late kill request unread, would reset the connection and lose the report.
    """
    try:
        if status_socket.recv(16, socket.MSG_DONTWAIT):
            return  # a kill request that came after the exit
    except BlockingIOError:
        return
    except OSError:
        pass
    selector.unregister(status_socket)
    status_socket.close()


def preload(modules):
    """Import what scripts may import; a module that fails here just loads in the run, as it would cold.

    RestrictedPython too, which the bootstrap's policy layer imports in restricted runs.
    """
    for name in [*modules, "RestrictedPython"]:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a broken optional library must not stop the zygote
            continue


def spawn(fds, children, selector):
    """Fork the run's sandbox; when the fork fails, that run alone fails, and says why."""
    status, request, log, result, lifeline, *cgroup_fds = fds
    try:
        pid = os.fork()
    except OSError as error:
        pid = None
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(status)) as status_socket:
            status_socket.send(json.dumps({"error": f"fork failed: {error.strerror}"}).encode())
    if pid == 0:
        try:
            become_sandbox(request=request, log=log, result=result, lifeline=lifeline, cgroup_fds=cgroup_fds)
        finally:
            os._exit(SETUP_FAILED)
    for fd in (request, log, result, lifeline, *cgroup_fds):
        os.close(fd)
    if pid is None:
        os.close(status)
        return
    status_socket = socket.socket(fileno=status)
    children[pid] = status_socket
    selector.register(status_socket, selectors.EVENT_READ, pid)
    with contextlib.suppress(OSError):  # the worker may have given up on this run already
        status_socket.send(json.dumps({"pid": pid}).encode())


def become_sandbox(*, request, log, result, lifeline, cgroup_fds=()):
    """In the forked child: only this run's descriptors, its request applied, then the script. Never returns."""
    bootstrap.join_cgroup(cgroup_fds)  # first: every process of the run is then in its cgroup
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
        set_process_title(f"parseq-run {settings['display_name']}")
        os.environ.clear()
        os.environ.update(settings["environment"])
        time.tzset()
        if settings.get("jail"):
            enter_run_jail(**settings["jail"])  # only the script's process returns, in a jail of its own
        if settings["own_network"]:
            take_own_network()
        if settings.get("hide_host_paths") is not None:
            hide_host_paths(settings["hide_host_paths"])
        if settings["uid"] is not None:
            become_user(settings["uid"])
        os.chdir(settings["cwd"])
        if settings["limits"].get("memory"):
            # The limit is on what the run adds: the preloaded libraries' address space is the zygote's.
            settings["limits"]["memory"][0] += address_space()
    except BaseException:  # noqa: BLE001 - the log is the only place left to say it
        sys.stderr.write("[parseq] the warm sandbox could not be set up:\n" + traceback.format_exc())
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    try:
        bootstrap.run(settings["script"], settings["display_name"], result, lifeline, settings["limits"])
    except BaseException:  # noqa: BLE001 - as an interpreter would, before it exits
        traceback.print_exc()
        os._exit(1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def set_process_title(title):
    """What `ps` shows for the run's processes: the script, instead of the zygote's command line.

    Overwrites the command line's own memory (from arg_start to arg_end in /proc/self/stat),
    so the title is cut to the zygote's command line's length.
    """
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # fields 48 and 49; the list starts at field 3
    if end <= start:
        return
    text = title.encode(errors="replace")[: end - start - 1]
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def address_space():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmSize:"))
    return int(kib) * 1024


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


def reap(children, selector):
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
            with contextlib.suppress(KeyError):
                selector.unregister(status_socket)
            report = {"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
            with contextlib.suppress(OSError):
                status_socket.send(json.dumps(report).encode())
            selector.register(status_socket, selectors.EVENT_READ, None)  # closed by close_when_done


def stop(children):
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
