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
"""

import contextlib
import functools
import json
import os
import random
import shutil
import subprocess
import tempfile

from runner import self_jail
from runner.egress import EGRESS_SOCKET
from runner.sandbox_user import SANDBOX_UIDS, chown_tree
from runner.subprocess_backend import (
    BOOTSTRAP,
    RESTRICTED_POLICY,
    SubprocessBackend,
)
from runner.warm import ZYGOTE, zygote_for

JAIL_WORKDIR = "/sandbox/work"
JAIL_RUNS = "/sandbox/runs"  # a warm zygote's runs' directories (runner/self_jail.py)
# A warm zygote's runs together may have this many times the processes one run may have.
WARM_PROCESS_BUDGET = 16
JAIL_BOOTSTRAP = "/sandbox/bootstrap.py"
SCRATCH_PREFIX = "parseq-scratch-"
MNT_DETACH = 2
# Files of /etc an ordinary scraper needs: name resolution and certificates.
ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")


class BwrapBackend(SubprocessBackend):
    name = "bwrap"
    wrapper_reports_signals = True

    def command(self, *, workdir, script_path, display_name, result_fd, lifeline_fd, limits_json, uid):
        script_in_jail = os.path.join(JAIL_WORKDIR, os.path.relpath(script_path, workdir))
        arguments = [script_in_jail, display_name, str(result_fd), str(lifeline_fd), limits_json]
        return [
            shutil.which("bwrap") or "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",  # no user namespace inside the jail's, as the seccomp filter also says
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            *self.filesystem(workdir),
            "--chdir",
            JAIL_WORKDIR,
            "--",
            self.python,
            "-I",
            "-B",
            JAIL_BOOTSTRAP,
            *arguments,
        ]

    def disk_usage(self, workdir, uid):
        return None  # HOME and /tmp are tmpfs of the limit's size: the kernel holds it

    def isolates_network(self):
        return True  # --unshare-all: the jail's network namespace has only a loopback

    def user_switch(self, uid):
        return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}

    def egress_socket_in_sandbox(self, workdir):
        return os.path.join(JAIL_WORKDIR, EGRESS_SOCKET)

    def run(self, *, limits, **kwargs):
        self.disk_bytes = limits.disk_bytes
        with scratch_tmpfs(self.disk_bytes) as self.scratch_dir:
            return super().run(limits=limits, **kwargs)

    def sandbox_user(self, workdir):
        uid = super().sandbox_user(workdir)
        if uid is not None and self.scratch_dir:
            os.chown(os.path.join(self.scratch_dir, "home"), uid, uid)
        return uid

    def filesystem(self, workdir):
        mounts = system_mounts(tmp_bytes=self.disk_bytes, scratch=self.scratch_dir)
        for path in self.interpreter_paths():
            mounts += ["--ro-bind", path, path]
        policy = ["--ro-bind", RESTRICTED_POLICY, os.path.join(os.path.dirname(JAIL_BOOTSTRAP), "restricted.py")]
        # Last: bubblewrap's root and /dev are tmpfs too, writable and as large as half the host's memory.
        read_only = ["--remount-ro", "/dev", "--remount-ro", "/"]
        return [*mounts, "--ro-bind", BOOTSTRAP, JAIL_BOOTSTRAP, *policy, *self.scratch(workdir), *read_only]

    def scratch(self, workdir):
        """The script's HOME: on the run's scratch tmpfs with /tmp and /dev/shm, or a tmpfs of its own.

        The files the run starts with (the script, the egress socket) are bound into it.
        """
        if self.scratch_dir:
            mounts = ["--bind", os.path.join(self.scratch_dir, "home"), JAIL_WORKDIR]
        else:
            mounts = ["--size", str(self.disk_bytes), "--tmpfs", JAIL_WORKDIR]
        for entry in os.scandir(workdir):
            kind = "--ro-bind" if entry.is_file(follow_symlinks=False) else "--bind"
            mounts += [kind, entry.path, os.path.join(JAIL_WORKDIR, entry.name)]
        return mounts

    def environment(self, workdir, timezone):
        return {**super().environment(workdir, timezone), "HOME": JAIL_WORKDIR, "TMPDIR": "/tmp"}


@contextlib.contextmanager
def scratch_tmpfs(size):
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
def sweep_scratch():
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


def system_mounts(*, tmp_bytes=None, scratch=None):
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
def bwrap_works():
    """Whether bubblewrap can make a jail on this machine (it needs user namespaces)."""
    if not shutil.which("bwrap"):
        return False
    probe = ["bwrap", "--unshare-all", "--die-with-parent", *system_mounts(), "/usr/bin/true"]
    try:
        kwargs = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        result = subprocess.run(probe, capture_output=True, timeout=10, check=False, cwd="/", **kwargs)
        return result.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class WarmBwrapBackend(BwrapBackend):
    """bwrap with a warm start: each run is a fork of a zygote that lives in a bubblewrap jail of its own.

    The fork makes a jail of its own inside the zygote's (runner/self_jail.py: enter_run_jail), with
    the same namespaces, tmpfs and read-only system as a cold jail, so runs see neither each other
    nor the zygote. Runs share the zygote's user id: the process limit holds for the zygote's runs
    together (WARM_PROCESS_BUDGET times one run's), not for each.
    """

    def __init__(self, python, *, preload=()):
        super().__init__(python)
        self.preload = tuple(preload)

    def zygote(self, limits):
        jail = ZygoteJail(self, processes=limits.processes)
        return zygote_for(python=self.python, modules=self.preload, environment=self.zygote_environment(), jail=jail)

    def workdir_parent(self, limits):
        """Runs' directories live where the zygote's jail sees them (unless runs must start cold)."""
        zygote = self.zygote(limits)
        return zygote.jail.runs_dir if zygote.jails_work else None

    def run(self, *, limits, **kwargs):
        self.zygote_in_use = self.zygote(limits)
        if not self.zygote_in_use.jails_work:  # the zygote warned when it started
            return BwrapBackend(self.python).run(limits=limits, **kwargs)
        self.disk_bytes = limits.disk_bytes  # the fork mounts its own tmpfs (runner/self_jail.py)
        return SubprocessBackend.run(self, limits=limits, **kwargs)

    def sandbox_user(self, workdir):
        """No user of its own: the run is the zygote's user, in namespaces of its own."""
        uid = self.zygote_in_use.jail.uid
        if uid is not None:
            chown_tree(workdir, uid, uid)
        return None

    def start(self, *, workdir, script_path, display_name, pipes, limits_json, uid, environment, cgroup_fds=()):
        limits = {**json.loads(limits_json), "cgroup_fds": []}  # the fork joins the cgroup itself, before its jail
        if self.zygote_in_use.jail.process_budget:
            limits.update(processes=self.zygote_in_use.jail.process_budget, shared=True)
        request = {
            "script": os.path.join(JAIL_WORKDIR, os.path.relpath(script_path, workdir)),
            "display_name": display_name,
            "limits": limits,
            "environment": environment,
            "cwd": JAIL_WORKDIR,
            "uid": None,
            "own_network": False,  # the run's jail has a network namespace of its own
            "jail": {
                "run_dir": os.path.join(JAIL_RUNS, os.path.basename(workdir)),
                "disk_bytes": self.disk_bytes,
                "keep": [path for path in self.interpreter_paths() if path.startswith(("/tmp/", "/dev/shm/"))],
            },
        }
        return self.zygote_in_use.spawn(
            request=request,
            log_w=pipes["log"],
            result_w=pipes["result"],
            lifeline_r=pipes["lifeline"],
            cgroup_fds=cgroup_fds,
        )


class ZygoteJail:
    """The bubblewrap jail a warm zygote lives in, and the directory of its runs."""

    def __init__(self, backend, *, processes):
        self.backend = backend
        self.key = ("bwrap", processes)
        self.uid = random.choice(SANDBOX_UIDS) if os.geteuid() == 0 else None  # noqa: S311 - not a secret
        # Only a user id of its own counts the zygote's processes apart from the worker's.
        self.process_budget = processes * WARM_PROCESS_BUDGET if self.uid is not None else 0
        self.runs_dir = None

    def command(self, python, arguments):
        self.runs_dir = tempfile.mkdtemp(prefix="parseq-warm-")
        if self.uid is not None:
            os.chown(self.runs_dir, self.uid, self.uid)
        mounts = system_mounts()
        for path in self.backend.interpreter_paths():
            mounts += ["--ro-bind", path, path]
        for source in (BOOTSTRAP, RESTRICTED_POLICY, ZYGOTE, os.path.join(os.path.dirname(ZYGOTE), "self_jail.py")):
            mounts += ["--ro-bind", source, f"/sandbox/{os.path.basename(source)}"]
        mounts += ["--bind", self.runs_dir, JAIL_RUNS, "--dir", JAIL_WORKDIR]
        mounts += ["--remount-ro", "/dev", "--remount-ro", "/"]
        jail = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--new-session", "--cap-drop", "ALL", *mounts]
        return [*jail, "--chdir", "/", "--", python, "-I", "-B", "/sandbox/zygote.py", *arguments]

    def user_switch(self):
        return {} if self.uid is None else {"user": self.uid, "group": self.uid, "extra_groups": []}

    def remove(self):
        if self.runs_dir:
            shutil.rmtree(self.runs_dir, ignore_errors=True)
