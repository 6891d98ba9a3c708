"""The seccomp filter every sandbox is under before its script starts.

It refuses the system calls a script has no use for and a kernel exploit usually starts with:
new namespaces (and so nested user namespaces, which would hand the script a full set of
capabilities over a user namespace of its own), mounts, keyrings, BPF, perf, userfaultfd,
io_uring, ptrace, kexec, kernel modules, and packet or raw sockets; a system call of another ABI
(x32, i386) kills the process. Everything else is allowed: threads, subprocesses, sockets to the
egress proxy.

The worker compiles it once with libseccomp (through pyseccomp) into a BPF program; the sandbox
loads those bytes with prctl (runner/sandbox/bootstrap.py: install_syscall_filter), so the sandbox's
interpreter needs no library for it.
"""

import base64
import errno
import functools
import socket
import tempfile

CLONE_NEWTIME, CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x80, 0x20000, 0x2000000, 0x4000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x8000000, 0x10000000, 0x20000000, 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWTIME,
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
SOCK_TYPE_MASK = 0xF
LOW_32_BITS = 0xFFFFFFFF
REFUSED = (
    # namespaces and mounts
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    # the kernel's less travelled corners
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # other processes, the machine itself
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "syslog",
)


class FilterError(Exception):
    """The filter cannot be made here (no libseccomp); the message says why."""


@functools.cache
def program():
    """The filter as base64 of its BPF program, for the sandbox's limits (the same for every run)."""
    try:
        import pyseccomp as seccomp  # here: without libseccomp its import fails, and that is FilterError too

        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        # A system call of another ABI (x32, i386's int 0x80) kills the whole process, not just its thread,
        # which would leave the run hanging on its other threads until its deadline.
        rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
        refuse = seccomp.ERRNO(errno.EPERM)
        for name in REFUSED:
            add(seccomp, rules, refuse, name)
        for name in ("unshare", "clone"):
            for flag in NAMESPACE_FLAGS:
                add(seccomp, rules, refuse, name, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        # clone3's flags are in memory a filter cannot read: "not implemented" makes glibc fall back to clone.
        add(seccomp, rules, seccomp.ERRNO(errno.ENOSYS), "clone3")
        # The kernel reads an int: the high 32 bits of the argument must not hide AF_PACKET from the filter.
        add(seccomp, rules, refuse, "socket", seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32_BITS, socket.AF_PACKET))
        add(seccomp, rules, refuse, "socket", seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, socket.SOCK_RAW))
        with tempfile.TemporaryFile() as compiled:
            rules.export_bpf(compiled)
            compiled.seek(0)
            return base64.b64encode(compiled.read()).decode("ascii")
    except (ImportError, OSError, RuntimeError, AttributeError) as error:  # how a missing libseccomp shows
        raise FilterError(f"the seccomp filter cannot be made here (libseccomp: {error})") from None


def add(seccomp, rules, action, name, *arguments):
    try:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    except (OSError, ValueError):
        return  # a system call this architecture or libseccomp does not know: nothing to refuse
    if number < 0:
        return
    rules.add_rule(action, number, *arguments)
