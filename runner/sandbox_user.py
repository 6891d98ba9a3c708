"""A user id of the sandbox's own, when the worker runs as root, and the clean-up it allows.

Each run gets a random user id that owns nothing on the host: it cannot read the
worker's files or /proc/<ppid>/environ, the kernel counts its processes apart
from everyone else's (so the process limit is a limit per sandbox), and when the
run ends everything that user still runs, or left in the shared temporary
directories, can be found and removed.
"""

import contextlib
import os
import shutil
import signal
import time

SANDBOX_UIDS = range(200_000, 265_000)
# World-writable places a sandbox user could leave files in for a later run.
SHARED_TEMP_DIRECTORIES = ("/tmp", "/var/tmp", "/dev/shm")


def unreachable_parent(path):
    """The first directory above `path` that other users cannot traverse, or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        if not os.stat(parent).st_mode & 0o001:
            return parent
        if parent == os.path.dirname(parent):
            return None
        parent = os.path.dirname(parent)


def kill_all_processes_of(uid):
    """SIGKILL every process owned by `uid`, again until none is left (a fork bomb races the first pass)."""
    for _ in range(50):
        pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if live_process_of(pid, uid)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove_files_of(uid, directories=SHARED_TEMP_DIRECTORIES):
    """Delete what a sandbox user left in the shared temporary directories, for no later run to find."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def bytes_written(workdir, uid):
    """The size of the files in `workdir`, and, for a sandbox user, of what it owns in the shared temp dirs."""
    roots = [workdir] if uid is None else [workdir, *SHARED_TEMP_DIRECTORIES]
    total = 0
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            if root != workdir and directory == root:
                entries = [os.path.join(directory, name) for name in subdirectories + files]
                owned = {path for path in entries if owner_is(path, uid)}
                subdirectories[:] = [name for name in subdirectories if os.path.join(directory, name) in owned]
                files = [name for name in files if os.path.join(directory, name) in owned]
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(directory, name)).st_size
    return total


def owner_is(path, uid):
    try:
        return os.lstat(path).st_uid == uid
    except OSError:
        return False


def live_process_of(pid, uid):
    """Whether `pid` belongs to `uid` and can still run (a zombie is dead already, waiting to be reaped)."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def chown_tree(path, uid, gid):
    """Give `path` and everything below it to `uid`:`gid`."""
    for directory, _, files in os.walk(path):
        os.chown(directory, uid, gid)
        for name in files:
            os.chown(os.path.join(directory, name), uid, gid)
