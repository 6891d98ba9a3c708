"""The Docker backend: each run is a short-lived container of the sandbox image.

The container runs the same bootstrap, bind-mounted read-only, as a user id of
its own under the engine's init, on a read-only root filesystem with every
capability dropped, no-new-privileges, memory and pids limits from the engine,
the other limits as ulimits; HOME and /tmp are tmpfs of the disk limit's size.
Its network namespace has only a loopback (Docker's "none"); with the policy
"internet" its HTTP(S) goes out through the same egress proxy as the bwrap
jail's, whose socket is bound into its HOME: no bridge, so neither the host, its
metadata service nor another container is reachable. The result channel is a
FIFO in the run's directory that the bootstrap writes through fd 3, never the
container's output, which becomes the log as it comes. The wall deadline is
enforced here: the SDK's wait timeout is only an HTTP timeout, so on the
deadline the container is killed, then always removed; a container whose worker
died ends by itself, and the next sweep removes it.
"""

import contextlib
import math
import os
import queue
import random
import signal
import threading
import time
from dataclasses import dataclass

from runner import leftovers
from runner.egress import EGRESS_SOCKET, behind_egress_proxy
from runner.outcome import (
    CANCELLED,
    COMPLETED,
    LIMIT_EXCEEDED,
    PROTOCOL_ERROR,
    SANDBOX_ERROR,
    SCRIPT_ERROR,
    TIMEOUT,
    Outcome,
)
from runner.protocol import ProtocolViolation, ResultReader
from runner.sandbox import BOOTSTRAP, RESTRICTED_POLICY
from runner.sandbox.self_jail import FILES_PER_TMPFS
from runner.sandbox_user import SANDBOX_UIDS
from runner.supervisor import (
    CANCEL_CHECK_SECONDS,
    LogCollector,
    SandboxRun,
    SandboxSetupError,
    child_limits,
    feeding_failure,
    memory_breach,
    named_breach,
    secret_holdback,
)

JAIL_WORKDIR = "/sandbox/work"  # HOME and the working directory: a tmpfs of the disk limit's size
JAIL_RUN_DIR = "/sandbox/run"  # the run's directory on the host, read-only but for the result FIFO
JAIL_BOOTSTRAP = "/sandbox/bootstrap.py"
RESULT_FILE = ".parseq-result"
READ_SIZE = 1024 * 1024
DEFAULT_IMAGE = "parseq-sandbox:latest"
EXITED = "exited"
OWNER_LABEL = "parseq.owner"
# The container kills its script this long after the wall time, should nobody be left to do it.
ORPHAN_GRACE_SECONDS = 30
SWEEP_EVERY_SECONDS = 60


class DockerBackend:
    name = "docker"

    def __init__(self, python, *, client=None, image=None):
        # The interpreter is the image's; `python` only keeps the backends interchangeable.
        self.client = client
        self.image = image or os.environ.get("PARSEQ_SANDBOX_IMAGE", DEFAULT_IMAGE)

    def workdir_parent(self, limits):
        return None  # the usual temporary directory

    def container_spec(
        self, *, workdir, display_name, limits, timezone, variables, network, uid, restricted_modules=None
    ):
        """The keyword arguments of `containers.create` for one run, whose container runs as `uid`.

        What the script may write is on two tmpfs of the disk limit's size (HOME and /tmp), as in the
        bwrap jail: the kernel holds the limit, and nothing reaches the host's disk but the result
        file, which the file size limit bounds.
        """
        if network not in ("internet", "none"):
            raise SandboxSetupError(f"unknown network policy {network!r}")
        # The engine sets HOSTNAME in every container: gone, as the other backends have none.
        # One stream for the log, as a pipe gives the other backends: two would lose their lines' order.
        # `timeout`: should its worker die without removing it, the container ends on its own all the same.
        command = (
            f"unset HOSTNAME; exec 2>&1 3>{JAIL_RUN_DIR}/{RESULT_FILE} && "
            f"exec timeout -s KILL {math.ceil(limits.wall_time) + ORPHAN_GRACE_SECONDS} python -I -B {JAIL_BOOTSTRAP} "
            f'{JAIL_RUN_DIR}/script.py "$0" 3 -1 "$1"'
        )
        environment = {
            **variables,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TZ": timezone,
            "HOME": JAIL_WORKDIR,
            "TMPDIR": "/tmp",
            "MALLOC_ARENA_MAX": "2",
        }
        volumes = {
            workdir: {"bind": JAIL_RUN_DIR, "mode": "rw"},
            BOOTSTRAP: {"bind": JAIL_BOOTSTRAP, "mode": "ro"},
            RESTRICTED_POLICY: {"bind": "/sandbox/restricted.py", "mode": "ro"},
        }
        if network == "internet":
            # In HOME, as in the other backends' jails.
            environment["PARSEQ_EGRESS_SOCKET"] = f"{JAIL_WORKDIR}/{EGRESS_SOCKET}"
            volumes[os.path.join(workdir, EGRESS_SOCKET)] = {"bind": f"{JAIL_WORKDIR}/{EGRESS_SOCKET}", "mode": "rw"}
        cpu = limits.cpu_seconds
        scratch = f"rw,nosuid,nodev,size={limits.disk_bytes},nr_inodes={FILES_PER_TMPFS}"
        return {
            "image": self.image,
            "command": [
                "/bin/sh",
                "-c",
                command,
                display_name,
                # The engine's pids limit holds the whole container: the bootstrap names it when a fork fails.
                child_limits(limits, own_uid=False, restricted_modules=restricted_modules, pids_limited=True),
            ],
            "user": f"{uid}:{uid}",
            # The engine's init as process 1: the kernel's SIGXCPU to a namespace's first process, which
            # has no handler for it, would be ignored, and the CPU limit would end in SIGKILL a second later.
            "init": True,
            "working_dir": JAIL_WORKDIR,
            "environment": environment,
            "network_mode": "none",  # "internet" is the egress proxy, over a socket in the run's directory
            "read_only": True,
            "tmpfs": {
                "/tmp": f"{scratch},mode=1777",
                "/run": "rw,nosuid,nodev,noexec,size=64k,mode=0755",  # the image's /run/lock and the like: gone
                JAIL_WORKDIR: f"{scratch},mode=0700,uid={uid},gid={uid}",
            },
            "volumes": volumes,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,
            "pids_limit": limits.processes,
            "ulimits": [
                {"name": "nofile", "soft": limits.open_files, "hard": limits.open_files},
                {"name": "fsize", "soft": limits.file_bytes, "hard": limits.file_bytes},
                {"name": "cpu", "soft": cpu, "hard": cpu + 1},
            ],
            # Whose it is: what a dead worker leaves is removed by the next sweep (remove_orphaned_containers).
            "labels": {"parseq": "sandbox", OWNER_LABEL: leftovers.owner_tag()},
            # The engine keeps what the script prints in a file on the host: bounded, whatever it prints.
            "log_config": {"type": "json-file", "config": {"max-size": str(engine_log_bytes(limits)), "max-file": "1"}},
            "detach": True,
        }

    def run(self, run: SandboxRun):
        """Run the container; with the policy "internet", behind the run's egress proxy (runner/egress.py)."""
        if run.network != "internet":
            return self.run_container(run)
        return behind_egress_proxy(
            lambda: self.run_container(run),
            workdir=run.workdir,
            allowed_networks=run.allowed_networks,
            refused_networks=run.refused_networks,
            extra_ports=run.extra_ports,
        )

    def run_container(self, run: SandboxRun):
        """Create, start and follow the run's container, then remove it; its outcome.

        Its output is read while it runs (run.log_sink gets it as it comes, in this thread).
        """
        limits = run.limits
        uid = random.choice(SANDBOX_UIDS)  # noqa: S311 - a user of its own, not a secret
        try:
            client = self.client or docker_client()
            spec = self.container_spec(
                workdir=run.workdir,
                display_name=run.display_name,
                limits=limits,
                timezone=run.timezone,
                variables=run.variables,
                network=run.network,
                uid=uid,
                restricted_modules=run.restricted_modules,
            )
        except SandboxSetupError as error:
            return Outcome(SANDBOX_ERROR, error=str(error))
        except Exception as error:  # noqa: BLE001 - no engine, no image: a clear error for the run
            return Outcome(SANDBOX_ERROR, error=f"the Docker engine is not reachable: {error}")
        sweep_now_and_then(client)
        open_the_run_directory_to_the_container(run.workdir)
        channel = ResultChannel(os.path.join(run.workdir, RESULT_FILE), ResultReader(run.out_dir, limits))
        log = LogCollector(limits.log_bytes, sink=run.log_sink, holdback=secret_holdback(run.variables or {}))
        container = None
        try:
            container = client.containers.create(**spec)
            container.start()
            output = OutputFollower(container, limit=limits.log_bytes)
            deadline = time.monotonic() + limits.wall_time
            stopped = self.wait(
                container, deadline=deadline, cancelled=run.cancelled, meanwhile=lambda: output.pass_on(log)
            )
            output.finish(log)
            exit_code = container.wait(timeout=10).get("StatusCode") if stopped == EXITED else None
            container.reload()
            out_of_memory = container.attrs.get("State", {}).get("OOMKilled", False)
        except Exception as error:  # noqa: BLE001 - an engine failure fails this run only
            channel.finish()
            channel.reader.discard()
            return Outcome(SANDBOX_ERROR, log=log.text(), error=f"the Docker engine failed: {error}")
        finally:
            if container is not None:
                remove_quietly(container)
        channel.finish()
        if stopped in (CANCELLED, TIMEOUT):
            channel.reader.discard()
            error = "cancelled" if stopped == CANCELLED else f"timed out after {limits.wall_time:g} s"
            return Outcome(stopped, log=log.text(), error=error)
        ending = Ending(exit_code=exit_code, out_of_memory=out_of_memory, log_kept=bool(log.kept))
        return with_the_memory_breach(channel.outcome(log.text(), ending, limits), ending, limits)

    def wait(self, container, *, deadline, cancelled=None, meanwhile=None):
        """EXITED when the container stopped on its own; TIMEOUT or CANCELLED when it was killed.

        `meanwhile` is called between checks (every CANCEL_CHECK_SECONDS at most).
        """
        while True:
            if meanwhile:
                meanwhile()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancelled and cancelled()):
                with contextlib.suppress(Exception):  # it may have exited meanwhile (409): stopped all the same
                    container.kill()
                return TIMEOUT if remaining <= 0 else CANCELLED
            try:
                container.wait(timeout=min(remaining, CANCEL_CHECK_SECONDS))
                return EXITED
            except Exception:  # noqa: BLE001, S112 - the SDK's timeout surfaces as a requests error
                continue


class OutputFollower:
    """The container's output, read by a thread of its own as it comes, and handed over in the run's thread.

    Past what the log keeps (`limit`), output is only counted: a script printing without end fills
    neither this process's memory nor its queue.
    """

    def __init__(self, container, limit):
        self.chunks = queue.SimpleQueue()
        self.limit, self.queued, self.dropped = limit, 0, 0
        self.thread = threading.Thread(target=self._follow, args=(container,), daemon=True)
        self.thread.start()

    def _follow(self, container):
        try:
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                if self.queued >= self.limit:
                    self.dropped += len(chunk)
                    continue
                self.queued += len(chunk)
                self.chunks.put(chunk)
        except Exception:  # noqa: BLE001, S110 - the engine went away: the run's wait says so
            pass

    def pass_on(self, log):
        while True:
            try:
                log.feed(self.chunks.get_nowait())
            except queue.Empty:
                return

    def finish(self, log):
        """What is left, once the container has stopped (the stream ends with it)."""
        self.thread.join(timeout=10)
        self.pass_on(log)
        log.dropped += self.dropped


def engine_log_bytes(limits):
    """What the engine may keep of a container's output on the host's disk: enough for the log to be read."""
    return max(2 * limits.log_bytes, 1024 * 1024)


def remove_orphaned_containers(client):
    """Remove the sandbox containers of worker processes of this place that are gone (killed, say): a run's
    container is otherwise removed by its worker, and ends by itself at the latest ORPHAN_GRACE_SECONDS
    after its wall time. Returns how many it removed.
    """
    removed = 0
    for container in client.containers.list(all=True, filters={"label": "parseq=sandbox"}):
        if leftovers.owner_is_gone(container.labels.get(OWNER_LABEL, "")):
            remove_quietly(container)
            removed += 1
    return removed


_last_sweep = [0.0]


def sweep_now_and_then(client):
    """remove_orphaned_containers, at most once a minute for this process."""
    if time.monotonic() - _last_sweep[0] < SWEEP_EVERY_SECONDS:
        return
    _last_sweep[0] = time.monotonic()
    with contextlib.suppress(Exception):  # a sweep that fails fails no run
        remove_orphaned_containers(client)


@dataclass(frozen=True)
class Ending:
    """How a container ended: its exit status (128 + N for signal N), and whether the engine saw it run out
    of memory."""

    exit_code: int | None
    out_of_memory: bool
    log_kept: bool


class ResultChannel:
    """The run's result, read from a FIFO in its directory while the container writes it (its fd 3).

    A FIFO, not a file: the file size limit does not bound it, so a result may be as large as the
    result limit allows, as over the other backends' pipe, and nothing of it lands on the host's
    disk but the files themselves. Once a limit or the protocol is broken, the rest is read and
    dropped, so that the container is never left blocked on a full pipe.
    """

    def __init__(self, path, reader):
        self.path, self.reader = path, reader
        self.failure = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            with open(self.path, "rb", buffering=0) as fifo:  # returns once the container opens its end
                while chunk := fifo.read(READ_SIZE):
                    if self.failure is None:
                        self.failure = feeding_failure(self.reader.feed, chunk)
            if self.failure is None:
                self._finish_reading()
        except OSError as error:
            self.failure = self.failure or (SANDBOX_ERROR, f"the result could not be read: {error}")

    def _finish_reading(self):
        try:
            self.reader.finish()
        except ProtocolViolation as error:
            self.failure = (PROTOCOL_ERROR, f"protocol violation: {error}")

    def finish(self):
        """Once the container has stopped: the rest of the result. A container that never opened its end
        (it died first) leaves the reader waiting: opening the other end lets it see an empty result.
        """
        deadline = time.monotonic() + 10
        while self.thread.is_alive() and time.monotonic() < deadline:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: the reader is not waiting yet
                time.sleep(0.01)
                continue
            self.thread.join(timeout=deadline - time.monotonic())

    def outcome(self, log, ending, limits):
        """The run's outcome, in the words the other backends use (runner/supervisor.py)."""
        if self.failure is not None:
            self.reader.discard()
            status, error = self.failure
            return Outcome(status, log=log, error=error)
        if self.reader.done:
            return Outcome(COMPLETED, log=log, files=list(self.reader.files))
        self.reader.discard()
        status, error = ended_without_a_result(ending, limits)
        return Outcome(status, log=log, error=error)


def with_the_memory_breach(outcome, ending, limits):
    """A failed run whose container ran out of memory (a child killed by the kernel, say) says so first."""
    if ending.out_of_memory and outcome.status in (SCRIPT_ERROR, PROTOCOL_ERROR):
        outcome.status, outcome.error = named_breach(outcome.status, outcome.error, breach=memory_breach(limits))
    return outcome


def ended_without_a_result(ending, limits):
    """(status, error) of a container that exited before parse() returned a result."""
    if ending.out_of_memory:
        return LIMIT_EXCEEDED, memory_breach(limits)
    code = ending.exit_code if ending.exit_code is not None else -1
    signal_number = code - 128 if code > 128 else None
    if signal_number == signal.SIGXCPU:
        return LIMIT_EXCEEDED, f"CPU time limit {limits.cpu_seconds} s exceeded"
    how = f"was killed by signal {signal_number}" if signal_number else f"exited with code {code}"
    if signal_number == signal.SIGKILL:
        # The engine did not see it run out of memory: the hard CPU limit, a second past the soft one.
        how += f" (SIGKILL: most likely its CPU time limit of {limits.cpu_seconds} s)"
    see_log = " (see the log)" if ending.log_kept else ""
    return PROTOCOL_ERROR, f"the script's process {how} before parse() returned a result{see_log}"


def open_the_run_directory_to_the_container(workdir):
    """The container's user, whoever it is, reads the script, connects to the egress proxy and writes the
    result FIFO; it can create nothing here (the directory stays the worker's, read-only to others).
    """
    os.chmod(workdir, 0o755)  # noqa: S103 - readable, not writable: the script is the user's own anyway
    for name in os.listdir(workdir):
        os.chmod(os.path.join(workdir, name), 0o644)
    result = os.path.join(workdir, RESULT_FILE)
    os.mkfifo(result)
    os.chmod(result, 0o666)  # noqa: S103 - the container's user writes its result here, and only here
    socket = os.path.join(workdir, EGRESS_SOCKET)
    if os.path.exists(socket):
        os.chmod(socket, 0o666)  # noqa: S103 - the run's own proxy, seen by this container only


def remove_quietly(container):
    with contextlib.suppress(Exception):  # already gone, or the engine went away: nothing left to do
        container.remove(force=True)


def docker_client():
    import docker

    return docker.from_env(timeout=30)
