"""Runs inside the sandbox: load the script, call parse(), send the result to the parent.

Invoked as `python -I -B bootstrap.py SCRIPT DISPLAY_NAME RESULT_FD LIFELINE_FD LIMITS_JSON`.
Only the standard library is used here, since this file runs in the sandbox's
interpreter, which can import nothing of Parseq's.

The result goes over RESULT_FD as JSON lines (see runner/protocol.py: each file's
name, then its content in base64 chunks, then {"kind": "done"}; a failure sends
{"kind": "error", "message": ...}). The
script's stdout and stderr are the run's log and never carry the result.
When the parent dies, LIFELINE_FD reaches end-of-file and the whole process
group is killed, so no part of the run outlives its worker. Before the script's
code runs, the limits in LIMITS_JSON become this process's rlimits, which every
process it starts inherits and none can raise.
"""

import base64
import ctypes
import errno
import importlib.util
import json
import linecache
import os
import resource
import signal
import socket
import sys
import threading
import traceback
import types

CHUNK_BYTES = 1024 * 1024  # as runner.protocol.CHUNK_BYTES, which this file cannot import
RESTRICTED_POLICY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "restricted.py")
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def main():
    script_path, display_name = sys.argv[1], sys.argv[2]
    result_fd, lifeline_fd, limits = int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
    run(script_path, display_name, result_fd, lifeline_fd, limits)


def run(script_path, display_name, result_fd, lifeline_fd, limits):
    """Everything after the arguments: the warm start's zygote calls this in each forked child."""
    join_cgroup(limits.get("cgroup_fds", ()))
    install_syscall_filter(limits.get("seccomp"))  # while this is the only thread: a filter holds for its thread
    os.set_inheritable(result_fd, False)
    if lifeline_fd >= 0:  # a container has no parent process to watch
        os.set_inheritable(lifeline_fd, False)
        watch_parent(lifeline_fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    apply_limits(limits)
    egress_socket = os.environ.pop("PARSEQ_EGRESS_SOCKET", None)
    if egress_socket:
        start_egress_forwarder(egress_socket)
    with os.fdopen(result_fd, "w", encoding="utf-8") as channel:
        try:
            files = call_parse(script_path, display_name, limits)
        except ScriptFailure as failure:
            send(channel, {"kind": "error", "message": str(failure)})
        else:
            for name, content in files.items():
                send(channel, {"kind": "file", "name": name})
                view = memoryview(content)
                for start in range(0, len(view), CHUNK_BYTES):
                    data = base64.b64encode(view[start : start + CHUNK_BYTES]).decode("ascii")
                    send(channel, {"kind": "data", "data": data})
            send(channel, {"kind": "done"})


class ScriptFailure(Exception):
    """The script raised, or returned something that breaks the contract."""


def join_cgroup(entry_fds):
    """Move into the run's cgroups (runner/cgroups.py) through the descriptors the worker opened for it."""
    for fd in entry_fds:
        os.write(fd, b"0")
        os.close(fd)


class _Filter(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))


def install_syscall_filter(program):
    """Put this process, and every process it starts, under the seccomp filter (runner/syscall_filter.py).

    `program` is the filter's BPF program in base64. No new privileges first: the kernel requires it,
    and no set-user-id program may undo the filter.
    """
    if not program:
        return
    code = base64.b64decode(program)
    libc = ctypes.CDLL(None, use_errno=True)
    for option, *arguments in (
        (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_Filter(len(code) // 8, code)), 0, 0),
    ):
        if libc.prctl(option, *arguments) != 0:
            raise OSError(ctypes.get_errno(), f"the seccomp filter could not be installed (prctl {option})")


def apply_limits(limits):
    """Limits are {"memory": [bytes, "1 GiB"], "cpu": seconds, ...}; a missing or null one is not applied."""
    for key, rlimit in (("memory", resource.RLIMIT_AS), ("file_size", resource.RLIMIT_FSIZE)):
        if limits.get(key):
            resource.setrlimit(rlimit, (limits[key][0], limits[key][0]))
    for key, rlimit in (("open_files", resource.RLIMIT_NOFILE), ("processes", resource.RLIMIT_NPROC)):
        if limits.get(key):
            resource.setrlimit(rlimit, (limits[key], limits[key]))
    if limits.get("cpu"):
        # SIGXCPU at the soft limit, SIGKILL a second later should the script ignore it.
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))


def limit_breach(error, limits):
    """Name the limit behind an exception, or None when it is an ordinary failure."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MemoryError) and limits.get("memory"):
            return f"memory limit {limits['memory'][1]} exceeded"
        if isinstance(error, OSError) and error.errno == errno.EFBIG and limits.get("file_size"):
            return f"file size limit {limits['file_size'][1]} exceeded"
        if isinstance(error, OSError) and error.errno == errno.ENOSPC and limits.get("disk"):
            return f"disk limit {limits['disk'][1]} exceeded"
        if isinstance(error, OSError) and error.errno == errno.EMFILE and limits.get("open_files"):
            return f"open files limit {limits['open_files']} exceeded"
        cannot_start = isinstance(error, BlockingIOError) or "can't start new thread" in str(error)
        if cannot_start and limits.get("pids"):
            return f"process limit {limits['pids']} (processes and threads) exceeded"
        if cannot_start and limits.get("processes"):
            whose = (
                "processes and threads of one worker's runs together"
                if limits.get("shared")
                else "processes and threads"
            )
            return f"process limit {limits['processes']} ({whose}) exceeded"
        error = error.__cause__ or error.__context__
    return None


def call_parse(script_path, display_name, limits):
    with open(script_path, encoding="utf-8") as script:
        source = script.read()
    linecache.cache[display_name] = (len(source), None, source.splitlines(keepends=True), display_name)
    sys.argv = [display_name]
    try:
        code, namespace = compiled(source, display_name, limits.get("restricted"))
        # A module of its own, as an import would make it: dataclasses, pickle and typing look it up.
        module = types.ModuleType(namespace["__name__"])
        module.__dict__.update(namespace)
        sys.modules[module.__name__] = module
        namespace = module.__dict__
        exec(code, namespace)  # noqa: S102 - running the script is our job
        parse = namespace.get("parse")
        if not callable(parse):
            raise ScriptFailure("the script defines no function parse()")
        result = parse()
    except ScriptFailure:
        raise
    except SystemExit as exit_:
        raise ScriptFailure(f"the script called sys.exit({exit_.code!r}) instead of returning from parse()") from None
    except BaseException as error:  # noqa: BLE001 - every failure of user code is reported, KeyboardInterrupt too
        breach = limit_breach(error, limits)
        report = format_user_traceback(error)
        raise ScriptFailure(f"{breach}\n\n{report}" if breach else report) from None
    return checked_result(result)


def compiled(source, display_name, restricted_modules):
    """The script's code and globals: plain Python, or under the RestrictedPython policy."""
    if restricted_modules is None:
        namespace = {"__name__": "parser_script", "__file__": display_name, "__builtins__": __builtins__}
        return compile(source, display_name, "exec"), namespace
    spec = importlib.util.spec_from_file_location("parseq_restricted", RESTRICTED_POLICY)
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    try:
        code = policy.compile_script(source, display_name)
    except policy.PolicyError as error:
        raise ScriptFailure(str(error)) from None
    return code, {**policy.namespace(restricted_modules, "parser_script"), "__file__": display_name}


def checked_result(result):
    if not isinstance(result, dict):
        raise ScriptFailure(f"parse() must return a dict of {{filename: bytes}}, not {type(result).__name__}")
    for name, content in result.items():
        if not isinstance(name, str):
            raise ScriptFailure(f"parse() returned a file name of type {type(name).__name__}; names must be str")
        if not isinstance(content, (bytes, bytearray)):
            hint = " (encode text first, e.g. text.encode())" if isinstance(content, str) else ""
            raise ScriptFailure(f"parse() returned {type(content).__name__} for {name!r}; contents must be bytes{hint}")
    return result


def format_user_traceback(error):
    """The traceback of the script's exception, without the frames of this bootstrap."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip("\n")


def send(channel, message):
    channel.write(json.dumps(message))
    channel.write("\n")


def start_egress_forwarder(socket_path):
    """Listen on the jail's loopback and pass every connection to the worker's egress proxy.

    The jail has no other way out; the proxy outside decides where a connection may go.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = proxy

    def forward(client):
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.connect(socket_path)
            copier = threading.Thread(target=copy_bytes, args=(upstream, client), daemon=True)
            copier.start()
            copy_bytes(client, upstream)
            copier.join()

    def accept_forever():
        while True:
            client, _ = listener.accept()
            threading.Thread(target=forward, args=(client,), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()


def copy_bytes(source, target):
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def watch_parent(lifeline_fd):
    def kill_group_when_parent_dies():
        while os.read(lifeline_fd, 1):
            pass
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=kill_group_when_parent_dies, daemon=True).start()


if __name__ == "__main__":
    main()
