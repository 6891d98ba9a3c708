"""The seccomp filter on its own, in a child of this (root) test process: what it refuses, root or not.

In a sandbox, a refusal could come from the missing capabilities as well; here only the filter refuses.
"""

import ctypes
import errno
import json
import os
import unittest

from runner import syscall_filter
from runner.sandbox import bootstrap

libc = ctypes.CDLL(None, use_errno=True)
SYS_SOCKET, SYS_UNSHARE = 41, 272
AF_PACKET, SOCK_DGRAM, CLONE_NEWNET = 17, 2, 0x40000000
ATTEMPTS = {
    "AF_PACKET": (SYS_SOCKET, AF_PACKET, SOCK_DGRAM, 0),
    "AF_PACKET in the high bits": (SYS_SOCKET, AF_PACKET | 1 << 32, SOCK_DGRAM, 0),
    "unshare(CLONE_NEWNET)": (SYS_UNSHARE, CLONE_NEWNET),
}


def attempt_in_a_child(*, filtered):
    """{attempt: "allowed" or the errno's name}, from a forked child, under the filter or not."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if filtered:
                bootstrap.install_syscall_filter(syscall_filter.program())
            seen = {}
            for name, (number, *arguments) in ATTEMPTS.items():
                result = libc.syscall(ctypes.c_long(number), *map(ctypes.c_long, arguments))
                seen[name] = "allowed" if result >= 0 else errno.errorcode[ctypes.get_errno()]
            os.write(write_end, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        seen = json.loads(answer.read())
    os.waitpid(pid, 0)
    return seen


@unittest.skipUnless(os.geteuid() == 0 and os.uname().machine == "x86_64", "needs root, on x86_64")
class SyscallFilterTests(unittest.TestCase):
    def test_without_the_filter_root_may_do_all_of_it(self):
        self.assertEqual(set(attempt_in_a_child(filtered=False).values()), {"allowed"})

    def test_under_the_filter_root_may_do_none_of_it_however_the_arguments_are_dressed(self):
        self.assertEqual(set(attempt_in_a_child(filtered=True).values()), {"EPERM"})
