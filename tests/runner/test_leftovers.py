"""What a killed worker leaves on disk for the warm start is removed by the next worker."""

import os
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock

from runner import bwrap_jail, leftovers


def exited_pid():
    """The pid of a child that has exited and been reaped: no process has it (until the kernel reuses it)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


class WarmDirectorySweepTests(unittest.TestCase):
    def test_the_warm_run_directories_of_workers_that_are_gone_are_removed_and_others_kept(self):
        tmp = tempfile.mkdtemp(prefix="parseq-test-tmp-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        dead, here = exited_pid(), leftovers.place()
        names = {
            "dead": f"{bwrap_jail.WARM_PREFIX}{dead}+{here}+abc",
            "alive": f"{bwrap_jail.WARM_PREFIX}{os.getpid()}+{here}+abc",
            "elsewhere": f"{bwrap_jail.WARM_PREFIX}{dead}+000000+abc",  # another host's or container's pids
            "unnamed": f"{bwrap_jail.WARM_PREFIX}abc",  # no owner to tell: left alone
            "other": "someone-elses-123",
        }
        for name in names.values():
            os.makedirs(os.path.join(tmp, name, "run"))

        with mock.patch.object(tempfile, "tempdir", tmp):
            bwrap_jail.sweep_warm_directories.__wrapped__()

        kept = [names["alive"], names["elsewhere"], names["unnamed"], names["other"]]
        self.assertEqual(sorted(os.listdir(tmp)), sorted(kept))
