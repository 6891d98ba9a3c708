"""What this host has to give: its memory, and the run slots of a worker host sized from it (README: Scale)."""

import os

MIB = 1024 * 1024
# A sleeping warm run takes about 8 MiB of the host's memory (bench/scale.py); a working one more.
MEMORY_PER_SLOT = 24 * MIB
MIN_SLOTS, MAX_SLOTS = 8, 1024
CGROUP_MEMORY_MAX = "/sys/fs/cgroup/memory.max"


def memory_of_this_host(*, cgroup_limit_file=CGROUP_MEMORY_MAX):
    """Bytes of memory here: the machine's, or the limit of the container this runs in where it is smaller."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open(cgroup_limit_file) as limit:
            text = limit.read().strip()
    except OSError:
        return memory
    return min(memory, int(text)) if text.isdigit() else memory  # "max": no limit of its own


def worker_slots_for(memory):
    """The runs a worker host with `memory` bytes takes at once by default: one per MEMORY_PER_SLOT, within bounds."""
    return max(MIN_SLOTS, min(MAX_SLOTS, memory // MEMORY_PER_SLOT))
