"""A cgroup per run (runner/cgroups.py), against this machine's cgroup hierarchies."""

import os
import unittest

import runner
from runner import cgroups
from tests.runner.test_sandbox import SandboxTestCase, under_bwrap, warm_start, warm_under_bwrap

AVAILABLE = cgroups.availability()


def cgroups_of_this_process():
    found, _ = cgroups.hierarchies()
    prefix = f"{cgroups.PREFIX}{os.getpid()}-"
    return [name for parent in set(found.values()) for name in os.listdir(parent) if name.startswith(prefix)]


@unittest.skipUnless(AVAILABLE[0], f"needs a cgroup per run: {AVAILABLE[1]}")
class RunCgroupTests(SandboxTestCase):
    def test_the_script_runs_in_a_cgroup_of_its_own_which_is_gone_after_the_run(self):
        source = """
            def parse():
                with open("/proc/self/cgroup") as file:
                    return {"cg.txt": file.read().encode()}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        with open(os.path.join(self.out_dir, "cg.txt")) as file:
            memberships = file.read()
        # In a jail's cgroup namespace the path starts at the worker's own cgroup: the run's shows all the same.
        self.assertIn(f"/{cgroups.PREFIX}", memberships)
        self.assertEqual(cgroups_of_this_process(), [])

    def test_a_daemon_the_script_leaves_behind_is_killed_with_its_cgroup(self):
        source = """
            import os, time

            def parse():
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        time.sleep(60)
                    os._exit(0)
                return {}
        """

        outcome = self.run_source(source)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(cgroups_of_this_process(), [])  # removed: nothing was left in it


@unittest.skipUnless(AVAILABLE[0], f"needs a cgroup per run: {AVAILABLE[1]}")
class SweepTests(unittest.TestCase):
    def test_the_cgroups_a_dead_worker_left_are_removed_and_a_live_ones_are_not(self):
        found, _ = cgroups.hierarchies()
        parent = found["pids"]
        dead = os.path.join(parent, f"{cgroups.PREFIX}999999999-0")
        alive = os.path.join(parent, f"{cgroups.PREFIX}{os.getpid()}-999")
        os.mkdir(dead)
        os.mkdir(alive)
        self.addCleanup(lambda: os.path.isdir(alive) and os.rmdir(alive))

        cgroups.sweep(parent)

        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.isdir(alive))


BwrapRunCgroupTests = under_bwrap(RunCgroupTests)
WarmRunCgroupTests = warm_start(RunCgroupTests)
WarmBwrapRunCgroupTests = warm_under_bwrap(RunCgroupTests)
