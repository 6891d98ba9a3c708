"""The bubblewrap jail: the script sees only the interpreter, its libraries and its own directory.

bwrap puts the child in new user, pid, ipc, uts and cgroup namespaces with no
capabilities. Its filesystem is read-only: /usr and the sandbox environment, a
private /proc and /dev; it may write only to three fresh tmpfs of the disk limit's
size: the run's working directory at /sandbox/work, /tmp and /dev/shm. Parseq's
code, settings, database, media, other runs and every process outside the jail
are out of sight. --die-with-parent takes the whole
jail down with the worker. The jail's network namespace has only a loopback:
with the policy "internet" its HTTP(S) goes out through the egress proxy
(runner/egress.py), which refuses the host's own and private addresses; with
"none" nothing goes out at all.

A warm start's zygote lives in a bubblewrap jail of its own (ZygoteJail), and each fork makes a
jail of its own inside it (runner/sandbox/self_jail.py: enter_run_jail).
"""

import contextlib
import functools
import itertools
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from runner import jail, leftovers
from runner.cgroups import JAIL_PROCESSES
from runner.egress import EGRESS_SOCKET
from runner.outcome import Limits
from runner.sandbox import BOOTSTRAP, RESTRICTED_POLICY, SELF_JAIL, ZYGOTE, self_jail
from runner.sandbox_user import SANDBOX_UIDS, chown_tree
from runner.supervisor import SandboxRun
from runner.warm import Zygote

JAIL_WORKDIR = "/sandbox/work"
JAIL_RUNS = "/sandbox/runs"  # a warm zygote's runs' directories (runner/sandbox/self_jail.py)
JAIL_BOOTSTRAP = "/sandbox/bootstrap.py"
SCRATCH_PREFIX = "parseq-scratch-"
WARM_PREFIX = "parseq-warm-"
WARM_NUMBERS = itertools.count(1)  # a worker process may have a zygote for each process limit
MNT_DETACH = 2
# Files of /etc an ordinary scraper needs: name resolution and certificates.
ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")


class BwrapJail:
    name = "bwrap"
    wrapper_reports_signals = True
    jails_zygote = True  # a warm start's zygote lives in a jail of its own (ZygoteJail)

    def __init__(self, python: str) -> None:
        self.python = os.path.abspath(python)  # not realpath: a venv's python must stay in its venv

    def isolates_network(self) -> bool:
        return True  # --unshare-all: the jail's network namespace has only a loopback

    def egress_socket(self, workdir: str) -> str:
        return os.path.join(JAIL_WORKDIR, EGRESS_SOCKET)

    def environment(self, workdir: str, timezone: str, egress_socket: str | None) -> dict[str, str]:
        variables = jail.environment(self.python, workdir, timezone, egress_socket)
        return {**variables, "HOME": JAIL_WORKDIR, "TMPDIR": "/tmp"}

    def interpreter_paths(self) -> list[str]:
        return jail.interpreter_paths(self.python)

    @contextlib.contextmanager
    def cold_resources(self, run: SandboxRun) -> Iterator[None]:
        """The run's scratch tmpfs, as root, for the time of the run."""
        with scratch_tmpfs(run.limits.disk_bytes) as run.scratch_dir:
            yield

    def sandbox_user(self, run: SandboxRun) -> int | None:
        """The run's own user, who also gets the scratch tmpfs's HOME."""
        uid = jail.own_user(run.workdir)
        if uid is not None and run.scratch_dir:
            os.chown(os.path.join(run.scratch_dir, "home"), uid, uid)
        return uid

    def fork_user(self, run: SandboxRun) -> None:
        """No user of its own: a warm run is the zygote's user, in namespaces of its own."""
        assert run.zygote is not None  # WarmStart.for_run chose it
        uid = run.zygote.jail.uid
        if uid is not None:
            chown_tree(run.workdir, uid, uid)
        return None

    def disk_usage(self, run: SandboxRun) -> None:
        return None  # HOME and /tmp are tmpfs of the limit's size: the kernel holds it

    def user_switch(self, uid: int | None) -> dict[str, Any]:
        return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}

    def command(self, run: SandboxRun, *, result_fd: int, lifeline_fd: int, limits_json: str) -> list[str]:
        """A cold start's command line: bwrap, its namespaces and mounts, then the bootstrap."""
        script_in_jail = os.path.join(JAIL_WORKDIR, os.path.relpath(run.script_path, run.workdir))
        arguments = [script_in_jail, run.display_name, str(result_fd), str(lifeline_fd), limits_json]
        return [
            shutil.which("bwrap") or "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",  # no user namespace inside the jail's, as the seccomp filter also says
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            *self.filesystem(run),
            "--chdir",
            JAIL_WORKDIR,
            "--",
            self.python,
            "-I",
            "-B",
            JAIL_BOOTSTRAP,
            *arguments,
        ]

    def filesystem(self, run: SandboxRun) -> list[str]:
        mounts = system_mounts(tmp_bytes=run.limits.disk_bytes, scratch=run.scratch_dir)
        for path in self.interpreter_paths():
            mounts += ["--ro-bind", path, path]
        policy = ["--ro-bind", RESTRICTED_POLICY, os.path.join(os.path.dirname(JAIL_BOOTSTRAP), "restricted.py")]
        # Last: bubblewrap's root and /dev are tmpfs too, writable and as large as half the host's memory.
        read_only = ["--remount-ro", "/dev", "--remount-ro", "/"]
        return [*mounts, "--ro-bind", BOOTSTRAP, JAIL_BOOTSTRAP, *policy, *self.scratch(run), *read_only]

    def scratch(self, run: SandboxRun) -> list[str]:
        """The script's HOME: on the run's scratch tmpfs with /tmp and /dev/shm, or a tmpfs of its own.

        The files the run starts with (the script, the egress socket) are bound into it.
        """
        if run.scratch_dir:
            mounts = ["--bind", os.path.join(run.scratch_dir, "home"), JAIL_WORKDIR]
        else:
            mounts = ["--size", str(run.limits.disk_bytes), "--tmpfs", JAIL_WORKDIR]
        for entry in os.scandir(run.workdir):
            kind = "--ro-bind" if entry.is_file(follow_symlinks=False) else "--bind"
            mounts += [kind, entry.path, os.path.join(JAIL_WORKDIR, entry.name)]
        return mounts

    def zygote_jail(self, limits: Limits, *, runs_at_once: int) -> "ZygoteJail":
        return ZygoteJail(self, processes=limits.processes, runs_at_once=runs_at_once)

    def fork_request(
        self, run: SandboxRun, *, zygote: Zygote, limits: dict[str, Any], environment: dict[str, str]
    ) -> dict[str, Any]:
        """A warm fork's request: a jail of the run's own inside the zygote's (runner/sandbox/self_jail.py)."""
        if zygote.jail.process_budget:
            limits.update(processes=zygote.jail.process_budget, shared=True)
        return {
            "script": os.path.join(JAIL_WORKDIR, os.path.relpath(run.script_path, run.workdir)),
            "display_name": run.display_name,
            "limits": limits,
            "environment": environment,
            "cwd": JAIL_WORKDIR,
            "uid": None,
            "own_network": False,  # the run's jail has a network namespace of its own
            "jail": {
                "run_dir": os.path.join(JAIL_RUNS, os.path.basename(run.workdir)),
                "disk_bytes": run.limits.disk_bytes,  # the fork mounts its own tmpfs
                "keep": [path for path in self.interpreter_paths() if path.startswith(("/tmp/", "/dev/shm/"))],
            },
        }


@contextlib.contextmanager
def scratch_tmpfs(size: int) -> Iterator[str | None]:
    """As root, one tmpfs for a cold run's HOME, /tmp and /dev/shm: `size` bytes and a number of files together.

    bubblewrap's own tmpfs has a size but no limit on files, whose inodes cost kernel memory. Without
    root this yields None, and the jail has bubblewrap's tmpfs (README: Isolation).
    """
    if os.geteuid() != 0:
        yield None
        return
    sweep_scratch()
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    try:
        options = f"size={size},nr_inodes={self_jail.FILES_PER_TMPFS},mode=0711"
        self_jail.mount("tmpfs", scratch, "tmpfs", self_jail.MS_NOSUID | self_jail.MS_NODEV, options)
    except OSError:
        os.rmdir(scratch)
        raise
    try:
        for name, mode in (("home", 0o700), ("tmp", 0o1777), ("shm", 0o1777)):
            os.mkdir(os.path.join(scratch, name))
            os.chmod(os.path.join(scratch, name), mode)
        yield scratch
    finally:
        self_jail.libc.umount2(scratch.encode(), MNT_DETACH)
        os.rmdir(scratch)


@functools.cache
def sweep_scratch() -> None:
    """Unmount the scratch tmpfs that a worker which died left behind (once per process)."""
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in points:
        name = os.path.basename(point)
        if not name.startswith(SCRATCH_PREFIX):
            continue
        owner = name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            self_jail.libc.umount2(point.encode(), MNT_DETACH)
            with contextlib.suppress(OSError):
                os.rmdir(point)


@functools.cache
def sweep_warm_directories() -> None:
    """Remove the warm zygotes' run directories of workers that are gone (once per process; runner/leftovers.py)."""
    temporary = tempfile.gettempdir()
    for name in os.listdir(temporary):
        if name.startswith(WARM_PREFIX) and leftovers.owner_is_gone(name[len(WARM_PREFIX) :]):
            shutil.rmtree(os.path.join(temporary, name), ignore_errors=True)


def system_mounts(*, tmp_bytes: int | None = None, scratch: str | None = None) -> list[str]:
    """Read-only /usr (with the /lib, /bin... links of a merged-/usr system), a little of /etc, /proc, /dev, /tmp.

    /tmp and /dev/shm are on the run's `scratch` tmpfs when it has one, else tmpfs of `tmp_bytes` each.
    """
    mounts = ["--ro-bind", "/usr", "/usr"]
    for link in ("/lib", "/lib64", "/bin", "/sbin"):
        if os.path.islink(link):
            mounts += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            mounts += ["--ro-bind", link, link]
    for path in ETC_FILES:
        if os.path.exists(path):
            mounts += ["--ro-bind", path, path]
    # /tmp comes before any bind below it (a sandbox environment under /tmp), or it would hide them.
    size = ["--size", str(tmp_bytes)] if tmp_bytes else []
    tmp = [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]
    if scratch:
        tmp = ["--bind", os.path.join(scratch, "tmp"), "/tmp", "--dev", "/dev"]
        tmp += ["--bind", os.path.join(scratch, "shm"), "/dev/shm"]
        return [*mounts, "--proc", "/proc", *tmp]
    return [*mounts, "--proc", "/proc", "--dev", "/dev", *tmp]


@functools.cache
def host_process_ids() -> int:
    """How many process ids the kernel has for every process and thread of the host (pid_max)."""
    try:
        with open("/proc/sys/kernel/pid_max") as pid_max:
            return int(pid_max.read())
    except (OSError, ValueError):
        return 32768  # the kernel's default


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap can make a jail on this machine (it needs user namespaces)."""
    if not shutil.which("bwrap"):
        return False
    probe = ["bwrap", "--unshare-all", "--die-with-parent", *system_mounts(), "/usr/bin/true"]
    try:
        kwargs: dict[str, Any] = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        result = subprocess.run(probe, capture_output=True, timeout=10, check=False, cwd="/", **kwargs)
        return result.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class ZygoteJail:
    """The bubblewrap jail a warm zygote lives in, and the directory of its runs.

    Runs share the zygote's user id: the process limit holds for the zygote and its runs together (one
    run's, with its jail's own processes, times the runs its worker process may have at once), not for
    each; a run's cgroup, where there is one, holds for each.
    """

    def __init__(self, jail: BwrapJail, *, processes: int, runs_at_once: int) -> None:
        self.jail = jail
        self.key = ("bwrap", processes, runs_at_once)
        self.uid = random.choice(SANDBOX_UIDS) if os.geteuid() == 0 else None  # noqa: S311 - not a secret
        # Only a user id of its own counts the zygote's processes apart from the worker's.
        budget = (runs_at_once + 1) * (processes + JAIL_PROCESSES)  # the zygote and its jail: one run's worth
        # Never most of the host's process ids: without cgroups, a fork bomb must leave the host some.
        budget = min(budget, host_process_ids() // 4)
        self.process_budget = budget if self.uid is not None else 0
        self.runs_dir: str | None = None

    def command(self, python: str, arguments: list[str]) -> list[str]:
        """bwrap with the system, the sandbox's code at /sandbox and the runs' directories; then the zygote."""
        sweep_warm_directories()
        # Named after the worker: a worker killed with its zygote leaves it, and the next worker removes it.
        # Short, with no random part: runs' directories in it hold the egress proxy's socket, whose path
        # must stay under 108 bytes. One with our name can only be ours or an exited process's with our pid.
        self.runs_dir = os.path.join(tempfile.gettempdir(), f"{WARM_PREFIX}{leftovers.owner_tag()}{next(WARM_NUMBERS)}")
        shutil.rmtree(self.runs_dir, ignore_errors=True)
        os.mkdir(self.runs_dir, 0o700)
        if self.uid is not None:
            os.chown(self.runs_dir, self.uid, self.uid)
        mounts = system_mounts()
        for path in self.jail.interpreter_paths():
            mounts += ["--ro-bind", path, path]
        for source in (BOOTSTRAP, RESTRICTED_POLICY, ZYGOTE, SELF_JAIL):
            mounts += ["--ro-bind", source, f"/sandbox/{os.path.basename(source)}"]
        mounts += ["--bind", self.runs_dir, JAIL_RUNS, "--dir", JAIL_WORKDIR]
        mounts += ["--remount-ro", "/dev", "--remount-ro", "/"]
        bwrap = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--new-session", "--cap-drop", "ALL", *mounts]
        return [*bwrap, "--chdir", "/", "--", python, "-I", "-B", "/sandbox/zygote.py", *arguments]

    def user_switch(self) -> dict[str, Any]:
        return {} if self.uid is None else {"user": self.uid, "group": self.uid, "extra_groups": []}

    def remove(self) -> None:
        if self.runs_dir:
            shutil.rmtree(self.runs_dir, ignore_errors=True)
