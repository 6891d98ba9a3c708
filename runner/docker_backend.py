"""The Docker backend: each run is a short-lived container of the sandbox image.

The container runs the same bootstrap, bind-mounted read-only, as a non-root
user on a read-only root filesystem with every capability dropped,
no-new-privileges, memory and pids limits from the engine, the other limits as
ulimits. Its network namespace has only a loopback (Docker's "none"); with the
policy "internet" its HTTP(S) goes out through the same egress proxy as the
bwrap jail's, whose socket is in the run's directory: no bridge, so neither the
host, its metadata service nor another container is reachable. The result
channel is a file in the run's directory that the bootstrap writes through fd 3,
never the container's output, which becomes the log. The wall deadline is
enforced here: the SDK's wait timeout is only an HTTP timeout, so on the
deadline the container is killed, then always removed.
"""

import contextlib
import os
import time

from runner.egress import EGRESS_SOCKET, behind_egress_proxy
from runner.outcome import CANCELLED, COMPLETED, PROTOCOL_ERROR, SANDBOX_ERROR, SCRIPT_ERROR, TIMEOUT, Outcome
from runner.protocol import LimitExceeded, ProtocolViolation, ResultReader, ScriptReportedError
from runner.sandbox import BOOTSTRAP, RESTRICTED_POLICY
from runner.sandbox.self_jail import FILES_PER_TMPFS
from runner.sandbox_user import chown_tree
from runner.supervisor import (
    CANCEL_CHECK_SECONDS,
    LogCollector,
    SandboxRun,
    SandboxSetupError,
    child_limits,
    secret_holdback,
)

JAIL_WORKDIR = "/sandbox/work"
JAIL_BOOTSTRAP = "/sandbox/bootstrap.py"
RESULT_FILE = ".parseq-result"
READ_SIZE = 1024 * 1024
DEFAULT_IMAGE = "parseq-sandbox:latest"
SANDBOX_USER = "65534:65534"
EXITED = "exited"


class DockerBackend:
    name = "docker"

    def __init__(self, python, *, client=None, image=None):
        # The interpreter is the image's; `python` only keeps the backends interchangeable.
        self.client = client
        self.image = image or os.environ.get("PARSEQ_SANDBOX_IMAGE", DEFAULT_IMAGE)

    def workdir_parent(self, limits):
        return None  # the usual temporary directory

    def container_spec(self, *, workdir, display_name, limits, timezone, variables, network, restricted_modules=None):
        """The keyword arguments of `containers.create` for one run."""
        if network not in ("internet", "none"):
            raise SandboxSetupError(f"unknown network policy {network!r}")
        command = (
            f"exec 3>{JAIL_WORKDIR}/{RESULT_FILE} && exec python -I -B {JAIL_BOOTSTRAP} "
            f'{JAIL_WORKDIR}/script.py "$0" 3 -1 "$1"'
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
        if network == "internet":
            environment["PARSEQ_EGRESS_SOCKET"] = f"{JAIL_WORKDIR}/{EGRESS_SOCKET}"
        cpu = limits.cpu_seconds
        return {
            "image": self.image,
            "command": [
                "/bin/sh",
                "-c",
                command,
                display_name,
                child_limits(limits, own_uid=False, restricted_modules=restricted_modules),
            ],
            "user": SANDBOX_USER,
            "working_dir": JAIL_WORKDIR,
            "environment": environment,
            "network_mode": "none",  # "internet" is the egress proxy, over a socket in the run's directory
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size=64m,nr_inodes={FILES_PER_TMPFS},mode=1777"},
            "volumes": {
                workdir: {"bind": JAIL_WORKDIR, "mode": "rw"},
                BOOTSTRAP: {"bind": JAIL_BOOTSTRAP, "mode": "ro"},
                RESTRICTED_POLICY: {"bind": "/sandbox/restricted.py", "mode": "ro"},
            },
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
            "labels": {"parseq": "sandbox"},
            "detach": True,
        }

    def run(self, run: SandboxRun):
        """Run the container; with the policy "internet", behind the run's egress proxy (runner/egress.py)."""

        def run_container():
            return self.run_container(
                script_path=run.script_path,
                display_name=run.display_name,
                workdir=run.workdir,
                out_dir=run.out_dir,
                limits=run.limits,
                timezone=run.timezone,
                variables=run.variables,
                network=run.network,
                restricted_modules=run.restricted_modules,
                cancelled=run.cancelled,
            )

        if run.network != "internet":
            return run_container()
        return behind_egress_proxy(
            run_container,
            workdir=run.workdir,
            allowed_networks=run.allowed_networks,
            refused_networks=run.refused_networks,
            extra_ports=run.extra_ports,
        )

    def run_container(
        self,
        *,
        script_path,
        display_name,
        workdir,
        out_dir,
        limits,
        timezone,
        variables,
        network,
        restricted_modules,
        cancelled=None,
    ):
        try:
            client = self.client or docker_client()
            spec = self.container_spec(
                workdir=workdir,
                display_name=display_name,
                limits=limits,
                timezone=timezone,
                variables=variables,
                network=network,
                restricted_modules=restricted_modules,
            )
        except SandboxSetupError as error:
            return Outcome(SANDBOX_ERROR, error=str(error))
        except Exception as error:  # noqa: BLE001 - no engine, no image: a clear error for the run
            return Outcome(SANDBOX_ERROR, error=f"the Docker engine is not reachable: {error}")
        give_to_container_user(workdir)
        container = None
        try:
            container = client.containers.create(**spec)
            container.start()
            stopped = self.wait(container, deadline=time.monotonic() + limits.wall_time, cancelled=cancelled)
            log = LogCollector(limits.log_bytes, holdback=secret_holdback(variables or {}))
            for chunk in container.logs(stdout=True, stderr=True, stream=True):
                log.feed(chunk)
            exit_code = container.wait(timeout=10).get("StatusCode") if stopped == EXITED else None
        except Exception as error:  # noqa: BLE001 - an engine failure fails this run only
            return Outcome(SANDBOX_ERROR, error=f"the Docker engine failed: {error}")
        finally:
            if container is not None:
                remove_quietly(container)
        if stopped == CANCELLED:
            return Outcome(CANCELLED, log=log.text(), error="cancelled")
        if stopped == TIMEOUT:
            return Outcome(TIMEOUT, log=log.text(), error=f"timed out after {limits.wall_time:g} s")
        return read_result(os.path.join(workdir, RESULT_FILE), out_dir, limits, log.text(), exit_code)

    def wait(self, container, *, deadline, cancelled=None):
        """EXITED when the container stopped on its own; TIMEOUT or CANCELLED when it was killed."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancelled and cancelled()):
                container.kill()
                return TIMEOUT if remaining <= 0 else CANCELLED
            try:
                container.wait(timeout=min(remaining, CANCEL_CHECK_SECONDS))
                return EXITED
            except Exception:  # noqa: BLE001, S112 - the SDK's timeout surfaces as a requests error
                continue


def read_result(path, out_dir, limits, log, exit_code):
    reader = ResultReader(out_dir, limits)
    try:
        with open(path, "rb") as channel:
            while chunk := channel.read(READ_SIZE):
                reader.feed(chunk)
        reader.finish()
    except FileNotFoundError:
        pass
    except ScriptReportedError as error:
        reader.discard()
        return Outcome(SCRIPT_ERROR, log=log, error=str(error))
    except (LimitExceeded, ProtocolViolation, OSError) as error:
        reader.discard()
        return Outcome(PROTOCOL_ERROR, log=log, error=f"the result could not be read: {error}")
    if not reader.done:
        reader.discard()
        return Outcome(PROTOCOL_ERROR, log=log, error=f"the container exited with code {exit_code} without a result")
    return Outcome(COMPLETED, log=log, files=list(reader.files))


def give_to_container_user(workdir):
    """The container's user must read the script and write the result in the run's directory."""
    uid, gid = map(int, SANDBOX_USER.split(":"))
    if os.geteuid() == 0:
        chown_tree(workdir, uid, gid)
    else:
        os.chmod(workdir, 0o777)  # noqa: S103 - a fresh directory of this run only; no other way without root


def remove_quietly(container):
    with contextlib.suppress(Exception):  # already gone, or the engine went away: nothing left to do
        container.remove(force=True)


def docker_client():
    import docker

    return docker.from_env(timeout=30)
