"""One cgroup per run: a memory limit over all of a run's processes, and a limit on how many it has.

The memory limit counts what the kernel charges to the run: its processes' pages, the pages of
its tmpfs, and kernel memory such as its files' inodes. The pids limit counts its processes and
threads, so a fork bomb uses up its own run's budget, never the zygote's or another run's.

Each controller is used where the host mounts it: cgroup v2 when the worker's own cgroup there
delegates it to child cgroups, cgroup v1 otherwise (a hybrid host has both). The worker opens each
run cgroup's `cgroup.procs` and hands the descriptors to the sandbox, whose first act is to write
"0" to them (runner/sandbox/bootstrap.py, runner/sandbox/zygote.py): the kernel checks the credentials of the
opener, so a process without privileges in a jail joins the cgroup and every process it starts
stays there. Where no cgroup can be made, `availability()` says why and runs keep the rlimits.
"""

import contextlib
import functools
import itertools
import os
import signal
import time

CONTROLLERS = ("memory", "pids")
PREFIX = "parseq-run-"  # then the worker's pid: a run cgroup whose worker is gone is removed (sweep)
# A warm run's jail adds its outer end and its init to the script's processes; the bootstrap adds threads.
JAIL_PROCESSES = 4
REMOVE_SECONDS = 2.0
_names = itertools.count()


@functools.cache
def hierarchies():
    """{controller: the worker's own cgroup directory with it}, and why a controller has none ("" when all do)."""
    own = own_cgroups()
    mounts = cgroup_mounts()
    found, problems = {}, []
    for controller in CONTROLLERS:
        directory = delegated_v2(controller, mounts, own) or v1_directory(controller, mounts, own)
        if directory is None:
            problems.append(f"no {controller} controller this worker may use")
        else:
            found[controller] = directory
    return found, "; ".join(problems)


@functools.cache
def availability():
    """(True, "") where each run gets a cgroup of its own, else (False, the reason): made and removed once to tell."""
    found, problem = hierarchies()
    if problem:
        return False, problem
    for parent in set(found.values()):
        sweep(parent)
    try:
        probe = RunCgroup(memory_bytes=64 * 1024 * 1024, processes=8)
    except OSError as error:
        return False, f"cannot make a cgroup: {error}"
    probe.remove()
    return True, ""


def sweep(parent):
    """Remove the run cgroups that a worker which died left under `parent` (their processes are killed first)."""
    for entry in os.scandir(parent):
        owner = entry.name.removeprefix(PREFIX).split("-", 1)[0]
        if entry.name.startswith(PREFIX) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            kill_all_in(entry.path)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


def own_cgroups():
    """{controller or "": this process's cgroup path}; "" is cgroup v2's unified hierarchy."""
    paths = {}
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def cgroup_mounts():
    """[(version, mount point, root inside the hierarchy, controllers)] from /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo") as lines:
        for line in lines:
            fields = line.split()
            separator = fields.index("-")
            kind, options = fields[separator + 1], fields[separator + 3].split(",")
            if kind == "cgroup2":
                mounts.append((2, fields[4], fields[3], ()))
            elif kind == "cgroup":
                mounts.append((1, fields[4], fields[3], tuple(option for option in options if option in CONTROLLERS)))
    return mounts


def directory_of(mount_point, mount_root, path):
    """Where cgroup `path` is under a mount of the hierarchy from `mount_root` (a container sees a part)."""
    relative = os.path.relpath(path, mount_root)
    return None if relative.startswith("..") else os.path.normpath(os.path.join(mount_point, relative))


def delegated_v2(controller, mounts, own):
    """The worker's v2 cgroup when its children may have `controller`, enabling it there if need be."""
    for version, point, root, _ in mounts:
        directory = directory_of(point, root, own.get("", "/")) if version == 2 and "" in own else None
        if directory is None or controller not in read_words(os.path.join(directory, "cgroup.controllers")):
            continue
        subtree = os.path.join(directory, "cgroup.subtree_control")
        if controller not in read_words(subtree):
            # Refused (EBUSY) while the worker's cgroup holds processes itself: cgroup v2's "no internal processes".
            with contextlib.suppress(OSError):
                write(subtree, f"+{controller}")
        if controller in read_words(subtree):
            return directory
    return None


def v1_directory(controller, mounts, own):
    for version, point, root, controllers in mounts:
        if version == 1 and controller in controllers and controller in own:
            directory = directory_of(point, root, own[controller])
            if directory and os.access(directory, os.W_OK):
                return directory
    return None


def read_words(path):
    try:
        with open(path) as file:
            return file.read().split()
    except OSError:
        return []


def write(path, text):
    with open(path, "w") as file:
        file.write(text)


class RunCgroup:
    """The cgroups of one run, one per hierarchy that holds a controller; removed with every process in them."""

    def __init__(self, *, memory_bytes, processes):
        found, _ = hierarchies()
        name = f"{PREFIX}{os.getpid()}-{next(_names)}"
        self.directories = {}  # controller -> directory
        self.entry_fds = []
        try:
            for controller, parent in found.items():
                directory = os.path.join(parent, name)
                if directory not in self.directories.values():
                    os.mkdir(directory, 0o700)
                self.directories[controller] = directory
            self.memory_bytes, self.processes = memory_bytes, processes + JAIL_PROCESSES
            self.set_limits()
            for directory in sorted(set(self.directories.values())):
                self.entry_fds.append(os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            self.remove()
            raise

    @property
    def is_v2(self):
        return os.path.exists(os.path.join(self.directories["memory"], "memory.max"))

    def set_limits(self):
        memory, pids = self.directories["memory"], self.directories["pids"]
        if self.is_v2:
            write(os.path.join(memory, "memory.max"), str(self.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to swap to
                write(os.path.join(memory, "memory.swap.max"), "0")
        else:
            write(os.path.join(memory, "memory.limit_in_bytes"), str(self.memory_bytes))
            with contextlib.suppress(FileNotFoundError):
                write(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(self.memory_bytes))
        write(os.path.join(pids, "pids.max"), str(self.processes))

    def close_entry_fds(self):
        """The sandbox has its own copies (or never started): the worker's go."""
        for fd in self.entry_fds:
            os.close(fd)
        self.entry_fds = []

    def memory_exceeded(self):
        """Whether the kernel killed one of the run's processes for its memory limit."""
        memory = self.directories.get("memory")
        if memory is None:
            return False
        name = "memory.events" if self.is_v2 else "memory.oom_control"
        return counter(os.path.join(memory, name), "oom_kill") > 0

    def processes_exceeded(self):
        """Whether the run tried to have more processes and threads than its limit allows."""
        pids = self.directories.get("pids")
        return pids is not None and counter(os.path.join(pids, "pids.events"), "max") > 0

    def remove(self):
        """Kill whatever is left of the run, then remove its cgroups (retrying while the dead are reaped)."""
        self.close_entry_fds()
        deadline = time.monotonic() + REMOVE_SECONDS
        for directory in sorted(set(self.directories.values())):
            while True:
                kill_all_in(directory)
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # a process the kernel has not let go of yet: the cgroup stays, empty soon
                    time.sleep(0.01)
        self.directories = {}


def kill_all_in(directory):
    kill_switch = os.path.join(directory, "cgroup.kill")
    if os.path.exists(kill_switch):
        with contextlib.suppress(OSError):
            write(kill_switch, "1")
        return
    for pid in read_words(os.path.join(directory, "cgroup.procs")):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)


def counter(path, key):
    """A value from a flat keyed file such as memory.events ("oom_kill 1"); 0 when absent."""
    words = read_words(path)
    for name, value in zip(words[::2], words[1::2], strict=False):
        if name == key:
            return int(value)
    return 0


# `python runner/cgroups.py`: whether runs started by this user get a cgroup of their own, and if not, why.
if __name__ == "__main__":
    import json

    print(json.dumps(availability()))
