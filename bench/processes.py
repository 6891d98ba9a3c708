"""The bench's side of the process harness (tests/processes.py): its services, RabbitMQ, and where the
machine's CPU time goes meanwhile.

Imports nothing from Django or Parseq, so `bench/end_to_end.py` can use it before Django is set up.
"""

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pika
import psutil

# The one harness for started processes lives with the tests; the bench runs as a script from bench/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import Process, ProcessExited, TimedOut, free_port, wait_until

__all__ = ["CpuWatch", "Process", "ProcessExited", "TimedOut", "consumers", "free_port", "fresh_vhost", "wait_until"]


def rabbitmqctl(*arguments):
    return subprocess.run(["rabbitmqctl", *arguments], capture_output=True, text=True, timeout=60, check=True)


def fresh_vhost(name):
    """Delete and recreate RabbitMQ vhost `name` (empty queues: no message of an earlier bench is left)."""
    listed = rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").stdout.split()
    if name in listed:
        rabbitmqctl("delete_vhost", name)
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def consumers(broker_url, queue):
    """How many consumers `queue` has: one per dramatiq worker process once it takes messages; 0 if no queue yet."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:  # 404: no worker has declared it yet
        return 0
    finally:
        connection.close()


def process_table():
    """{pid: (parent pid, command name, CPU seconds, start time, state)} of every process now.

    The CPU seconds are the process's own and those of the children it has reaped (cutime, cstime):
    a child too short-lived to be seen shows up in its parent once it is reaped. Not so for init:
    the orphans it reaps are of every kind (bwrap's jails among them: bwrap's outer process exits
    before the jail's), so each is counted as last seen instead.
    """
    table = {}
    for process in psutil.process_iter(["ppid", "name", "cpu_times", "create_time", "status"]):
        info = process.info
        if info["cpu_times"] is None:  # gone meanwhile
            continue
        times = info["cpu_times"]
        cpu = times.user + times.system
        if process.pid != 1:
            cpu += times.children_user + times.children_system
        table[process.pid] = (info["ppid"], info["name"], cpu, info["create_time"], info["status"])
    return table


class CpuWatch(threading.Thread):
    """Once a second, the CPU time every process used since: the bench's own, the services', and anything else.

    The machine is shared: what else ran meanwhile skews every figure, and this says how much. A process
    is counted with its reaped children; when it goes, its parent (which reaps it) counts its time instead.
    What lives less than a second and is reaped by init is missed: most of bwrap's jails, so the bench's
    own share is best taken as what is left of the machine's busy time.
    """

    SERVICES = {"postgres": "postgresql", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq"}

    def __init__(self, interval=1.0):
        super().__init__(daemon=True, name="cpu-watch")
        self.interval = interval
        # "bench", "postgresql", "rabbitmq", "orphans" or "other: <command name>" -> CPU seconds
        self.used = Counter()
        self.stopping = threading.Event()

    def run(self):
        previous = self.look({})
        while not self.stopping.wait(self.interval):
            current = self.look(previous)
            self.add(previous, current)
            previous = current

    def look(self, previous):
        """{pid: (start time, CPU seconds, kind, parent pid)}; a process keeps the kind it was first seen with."""
        table, bench = process_table(), os.getpid()
        found = {}
        for pid, (parent, name, cpu, started, state) in table.items():
            before = previous.get(pid)
            if before and before[0] == started:
                kind = before[2]
            elif state == psutil.STATUS_ZOMBIE and parent == 1:
                kind = "orphans"  # whose, nobody can tell once its parent is gone (bwrap's jails, mostly)
            else:
                kind = self.kind(pid, name, table, bench)
            found[pid] = (started, cpu, kind, parent)
        return found

    def add(self, previous, current):
        for pid, (started, cpu, kind, _) in current.items():
            before = previous.get(pid)
            # A process first seen now started since the last look: all its time is new.
            self.used[kind] += cpu - before[1] if before and before[0] == started else cpu
        for pid, (started, cpu, kind, parent) in previous.items():
            # Gone: its parent counts all of it again among its reaped children, unless that parent is init.
            if parent != 1 and (pid not in current or current[pid][0] != started):
                self.used[kind] -= cpu

    def kind(self, pid, name, table, bench):
        seen = set()
        while pid in table and pid not in seen:  # up the parents: a sandbox's chain reaches its worker, then us
            if pid == bench:
                return "bench"
            seen.add(pid)
            pid = table[pid][0]
        return self.SERVICES.get(name, f"other: {name}")

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)
        return self.used
