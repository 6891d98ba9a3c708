"""Making a sandbox of the current process, from the inside: what the warm start's forks do.

A cold sandbox gets these from bubblewrap, `unshare`, `ip` and `setpriv` before exec; a fork of
the zygote (runner/sandbox/zygote.py) has no exec, so it does the same with system calls through ctypes.
Runs in the sandbox's interpreter: only the standard library.
"""

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
KEPT_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # and noatime, nodiratime, relatime
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522
# The jail's places (runner/bwrap_jail.py): each run's directory under RUNS, its HOME at WORK.
JAIL_RUNS, JAIL_WORK = "/sandbox/runs", "/sandbox/work"
# Files (and directories) a run's tmpfs may hold: each costs kernel memory that its size does not count.
FILES_PER_TMPFS = 20_000
# Where a host keeps its Unix sockets (databases, brokers, Docker) and shared scratch space: the subprocess
# backend's sandbox sees empty tmpfs there.
HOST_SOCKET_PLACES = ("/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm")
libc = ctypes.CDLL(None, use_errno=True)


def take_own_network():
    """A network namespace with only a loopback, up (what `unshare --net` and `ip link set lo up` do cold)."""
    call(libc.unshare, CLONE_NEWNET)
    loopback_up()


def loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def hide_host_paths(keep=()):
    """Mount and IPC namespaces of this process's own, with HOST_SOCKET_PLACES covered by empty tmpfs.

    `keep` are paths below them that the sandbox needs (its working directory, an interpreter under
    /tmp): they are bound again on top. Needs root; the subprocess backend's sandboxes only.
    """
    # Its own IPC namespace too: System V shared memory and message queues would outlive the run on the host.
    call(libc.unshare, CLONE_NEWNS | CLONE_NEWIPC)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in keep]  # before they are covered
    for path in HOST_SOCKET_PLACES:
        if os.path.isdir(path) and not os.path.islink(path):
            mode = "1777" if path != "/run" else "0755"
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size=64k,nr_inodes=256,mode={mode}")
    for path, fd in kept:
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def become_user(uid):
    """The run's own user for good: no groups, no way back to root."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(PR_SET_DUMPABLE, 1)  # as after exec: the run may read its own /proc/self


def enter_run_jail(*, run_dir, disk_bytes, keep=()):
    """Inside the zygote's bubblewrap jail, a jail of this run's own, as bubblewrap would make it.

    New user, mount, pid, network, ipc and uts namespaces; fresh tmpfs for HOME (with the run's
    files bound in from `run_dir`), /tmp and /dev/shm, each of the disk limit's size; the other
    runs' directories hidden; a /proc of its own; only a loopback. `keep` are the directories below
    /tmp or /dev/shm that the zygote's jail shows (a sandbox environment under /tmp): the fresh
    tmpfs would hide them, so they are bound again on top. This process waits as the
    jail's outer end, a child is its init, and a grandchild, with every capability dropped,
    returns to run the script.
    """
    new_namespaces()
    size = f"size={disk_bytes},nr_inodes={FILES_PER_TMPFS}"
    mount("tmpfs", JAIL_WORK, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0700")
    for entry in os.scandir(run_dir):
        target = os.path.join(JAIL_WORK, entry.name)
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        mount(entry.path, target, None, MS_BIND)
        if entry.is_file(follow_symlinks=False):
            read_only(target)
    mount("tmpfs", JAIL_RUNS, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,nr_inodes=16,mode=0500")
    kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in keep]  # before they are covered
    for path in ("/tmp", "/dev/shm"):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=1777")
    for path, fd in kept:
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        read_only(path)
        os.close(fd)
    outer_end(os.fork())
    # The init of the run's pid namespace: /proc and the loopback, then the script's process.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    loopback_up()
    init(os.fork())
    drop_capabilities()


def new_namespaces():
    """User, mount, pid, network, ipc and uts namespaces of this process's own, with its own user id in them."""
    uid, gid = os.getuid(), os.getgid()
    libc.prctl(PR_SET_DUMPABLE, 1)  # to write its own uid_map
    call(libc.unshare, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    for name, content in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(content)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def jails_work():
    """Whether a run's jail can be made in this one: a host or container may forbid nested user namespaces."""
    probe = os.fork()
    if probe == 0:
        try:
            new_namespaces()
            init = os.fork()
            if init == 0:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                os._exit(0)
            os._exit(exit_code_of(os.waitpid(init, 0)[1]))
        except BaseException:  # noqa: BLE001 - any failure means no
            os._exit(1)
    return os.waitpid(probe, 0)[1] == 0


def read_only(path):
    # A user namespace may not clear the flags the outer mount has (nosuid, nodev...): keep them.
    kept = os.statvfs(path).f_flag & KEPT_MOUNT_FLAGS
    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def outer_end(child):
    """The jail's outer end exits as its init does; the zygote reaps it and reports that."""
    if child == 0:
        return
    _, status = os.waitpid(child, 0)
    os._exit(exit_code_of(status))


def init(script):
    """Pid 1 of the run: reaps every orphan until the script's process exits, then exits as it did.

    Its exit ends the pid namespace, and with it every process the script left, daemons included.
    """
    if script == 0:
        return
    while True:
        pid, status = os.wait()
        if pid == script:
            os._exit(exit_code_of(status))


def exit_code_of(status):
    """An exit status as an exit code: 128 + N for death by signal N, as bubblewrap reports it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def drop_capabilities():
    """None left, none to gain: the jail's user namespace gave this process all of them."""
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    call(libc.capset, header, (ctypes.c_uint32 * 6)())
    call(libc.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def mount(source, target, kind, flags, options=None):
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    call(libc.mount, encode(source), target.encode(), encode(kind), flags, encode(options))


def call(function, *arguments):
    if function(*arguments) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{function.__name__}: {os.strerror(error)}")


def main():
    """`python self_jail.py SETTINGS_JSON COMMAND...`: what a cold subprocess sandbox is made of, then COMMAND.

    As root: a network namespace with only a loopback, the host's socket places hidden
    (SETTINGS_JSON's "keep" bound again), and the run's user id ("uid") for good.
    """
    settings = json.loads(sys.argv[1])
    take_own_network()
    hide_host_paths(settings["keep"])
    become_user(settings["uid"])
    os.execv(sys.argv[2], sys.argv[2:])  # noqa: S606 - the bootstrap, with its arguments


if __name__ == "__main__":
    main()
