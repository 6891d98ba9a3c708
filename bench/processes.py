"""Real Parseq processes for the end-to-end bench: started in sessions of their own, read from /proc, killed whole;
and where the machine's CPU time goes meanwhile.

Imports nothing from Django or Parseq, so `bench/end_to_end.py` can use it before Django is set up.
"""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pika


class ProcessExited(RuntimeError):
    """A service died while the bench needed it; the message ends with its log."""


def wait_until(predicate, *, timeout, message, interval=0.05):
    """Call `predicate` until it returns something true, and return that; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def free_port():
    """A TCP port nobody listens on now (the kernel's pick), for a web server to bind a moment later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_status(pid):
    """The fields of /proc/<pid>/status as strings, or {} once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as file:
            return dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)
    except OSError:
        return {}


def memory_kib(pid, field):
    """VmHWM (peak resident set) or VmRSS of a process, in KiB; None once it is gone."""
    value = proc_status(pid).get(field)
    return int(value.split()[0]) if value else None


def group_members(pgid):
    """(pid, parent pid) of the live, non-zombie processes in process group `pgid`."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(name), int(fields[1])))
    return found


class Service:
    """One long-running process (gunicorn, rundramatiq, runscheduler) in a session of its own.

    Its own session and process group: a whole group (dramatiq's parent and its forked worker
    processes, gunicorn's master and workers) can be killed at once, and /proc tells its members.
    Sandboxes start sessions of their own and die with their worker (bwrap --die-with-parent, lifeline).
    """

    def __init__(self, name, argv, *, env, cwd, log_dir):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def check_alive(self):
        if self.process.poll() is not None:
            raise ProcessExited(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines=40):
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def children(self):
        """The pids of the leader's direct children in its group: dramatiq's worker processes, gunicorn's workers."""
        return sorted(pid for pid, parent in group_members(self.pid) if parent == self.pid)

    def peak_memory(self):
        """{pid: VmHWM in KiB} of the leader's children: the processes that do the work."""
        return {pid: memory_kib(pid, "VmHWM") for pid in self.children()}

    def stop(self, grace=5.0):
        """SIGTERM to the group, SIGKILL to whatever is left after `grace` seconds; waits until the group is gone."""
        if self.process.poll() is None or group_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while group_members(self.pid) and time.monotonic() < deadline:
                self.process.poll()  # reaps the leader, which would otherwise stay a zombie member
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        # The forked workers are not our children: wait until they are gone, database connections and all.
        wait_until(lambda: not group_members(self.pid), timeout=10, message=f"the processes of {self.name} to end")


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
    """{pid: (parent pid, command name, CPU seconds, start time in ticks, state)} of every process now.

    The CPU seconds are the process's own and those of the children it has reaped (cutime, cstime):
    a child too short-lived to be seen shows up in its parent once it is reaped. Not so for init:
    the orphans it reaps are of every kind (bwrap's jails among them: bwrap's outer process exits
    before the jail's), so each is counted as last seen instead.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as file:
                head, tail = file.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        pid = int(name)
        # Counted from the state: ppid is field 1, utime, stime, cutime, cstime 11 to 14, starttime 19.
        cpu = sum(int(value) for value in fields[11 : 13 if pid == 1 else 15]) / ticks
        table[pid] = (int(fields[1]), head.split("(", 1)[1], cpu, int(fields[19]), fields[0])
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
            elif state == "Z" and parent == 1:
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
