"""A worker host's run slots, sized from its memory (PARSEQ_WORKER_SLOTS' default), and how its processes share them."""

import os
import tempfile

from django.test import SimpleTestCase

from parseq.host import MAX_SLOTS, MIN_SLOTS, memory_of_this_host, worker_slots_for
from parseq.worker.management.commands.rundramatiq import threads_per_process

GIB = 1024**3


class WorkerSlotsTests(SimpleTestCase):
    def test_a_host_gets_a_slot_for_each_24_mib_of_its_memory(self):
        self.assertEqual(worker_slots_for(16 * GIB), 682)
        self.assertEqual(worker_slots_for(1 * GIB), 42)

    def test_a_tiny_host_still_runs_a_few_and_a_huge_one_no_more_than_the_most(self):
        self.assertEqual(worker_slots_for(64 * 1024 * 1024), MIN_SLOTS)
        self.assertEqual(worker_slots_for(1024 * GIB), MAX_SLOTS)

    def test_the_processes_share_the_slots_rounding_up(self):
        self.assertEqual(threads_per_process(slots=768, processes=2), 384)
        self.assertEqual(threads_per_process(slots=10, processes=4), 3)
        self.assertEqual(threads_per_process(slots=1, processes=8), 1)


class HostMemoryTests(SimpleTestCase):
    def limit_file(self, text):
        handle, path = tempfile.mkstemp()
        os.write(handle, text.encode())
        os.close(handle)
        self.addCleanup(os.unlink, path)
        return path

    def test_a_container_with_less_memory_than_its_machine_counts_its_own(self):
        self.assertEqual(memory_of_this_host(cgroup_limit_file=self.limit_file("1073741824\n")), GIB)

    def test_a_container_without_a_limit_or_a_machine_without_cgroups_counts_the_machines(self):
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.assertEqual(memory_of_this_host(cgroup_limit_file=self.limit_file("max\n")), machine)
        self.assertEqual(memory_of_this_host(cgroup_limit_file="/nonexistent/memory.max"), machine)
