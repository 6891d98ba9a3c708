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

import functools
import os
import shutil
import subprocess

from runner.subprocess_backend import BOOTSTRAP, EGRESS_SOCKET, RESTRICTED_POLICY, SubprocessBackend

JAIL_WORKDIR = "/sandbox/work"
JAIL_BOOTSTRAP = "/sandbox/bootstrap.py"
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
        return super().run(limits=limits, **kwargs)

    def filesystem(self, workdir):
        mounts = system_mounts(tmp_bytes=self.disk_bytes)
        for path in self.interpreter_paths():
            mounts += ["--ro-bind", path, path]
        policy = ["--ro-bind", RESTRICTED_POLICY, os.path.join(os.path.dirname(JAIL_BOOTSTRAP), "restricted.py")]
        # Last: bubblewrap's root and /dev are tmpfs too, writable and as large as half the host's memory.
        read_only = ["--remount-ro", "/dev", "--remount-ro", "/"]
        return [*mounts, "--ro-bind", BOOTSTRAP, JAIL_BOOTSTRAP, *policy, *self.scratch(workdir), *read_only]

    def scratch(self, workdir):
        """The script's HOME: a tmpfs of the disk limit's size, like /tmp.

        The files the run starts with (the script, the egress socket) are bound into it.
        """
        mounts = ["--size", str(self.disk_bytes), "--tmpfs", JAIL_WORKDIR]
        for entry in os.scandir(workdir):
            kind = "--ro-bind" if entry.is_file(follow_symlinks=False) else "--bind"
            mounts += [kind, entry.path, os.path.join(JAIL_WORKDIR, entry.name)]
        return mounts

    def interpreter_paths(self):
        """The sandbox environment, and the Python it was made from when that lives outside /usr."""
        venv = os.path.dirname(os.path.dirname(os.path.abspath(self.python)))
        paths = [venv]
        base = os.path.dirname(os.path.dirname(os.path.realpath(self.python)))
        if not base.startswith("/usr/") and base != "/usr" and not base.startswith(venv):
            paths.append(base)
        return paths

    def environment(self, workdir, timezone):
        return {**super().environment(workdir, timezone), "HOME": JAIL_WORKDIR, "TMPDIR": "/tmp"}


def system_mounts(*, tmp_bytes=None):
    """Read-only /usr (with the /lib, /bin... links of a merged-/usr system), a little of /etc, /proc, /dev, /tmp."""
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
