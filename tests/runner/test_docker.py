"""The Docker backend: its container specification, and what only it does, on a real engine.

CI starts an engine of its own and builds the sandbox image (`make images`); the sandbox battery
runs under docker too (the Docker* classes of test_sandbox, test_hostile, test_red_team...).
"""

import contextlib
import json
import os
import tempfile
import threading
import time
import unittest
from unittest import mock

import docker
import docker.errors

import runner
import runner.sandbox
from runner import leftovers
from runner.docker_backend import (
    OWNER_LABEL,
    RESULT_FILE,
    DockerBackend,
    Ending,
    ResultChannel,
    remove_orphaned_containers,
)
from runner.protocol import ResultReader
from tests.helpers import docker_sandbox_availability, require, write_script

LIMITS = runner.Limits(wall_time=30, memory_bytes=256 * 1024**2, processes=32, open_files=64, file_bytes=1024**2)


def spec(**overrides):
    arguments = {
        "workdir": "/tmp/parseq-run-x",
        "display_name": "weather.py",
        "limits": LIMITS,
        "timezone": "Europe/Moscow",
        "variables": {"API_KEY": "k", "PATH": "/evil"},
        "network": "internet",
        "uid": 201234,
    }
    return DockerBackend("python", client=object(), image="parseq-sandbox:test").container_spec(
        **{**arguments, **overrides}
    )


class ContainerSpecTests(unittest.TestCase):
    def test_the_container_is_unprivileged_and_read_only(self):
        container = spec()

        self.assertEqual(container["user"], "201234:201234")
        self.assertTrue(container["init"])  # process 1 is the engine's init: the script gets SIGXCPU
        self.assertTrue(container["read_only"])
        self.assertEqual(container["cap_drop"], ["ALL"])
        self.assertEqual(container["security_opt"], ["no-new-privileges"])
        self.assertIn("/tmp", container["tmpfs"])

    def test_the_limits_become_engine_limits_and_ulimits(self):
        container = spec()

        self.assertEqual((container["mem_limit"], container["memswap_limit"]), (256 * 1024**2, 256 * 1024**2))
        self.assertEqual(container["pids_limit"], 32)
        ulimits = {u["name"]: (u["soft"], u["hard"]) for u in container["ulimits"]}
        self.assertEqual(ulimits, {"nofile": (64, 64), "fsize": (1024**2, 1024**2), "cpu": (30, 31)})

    def test_the_runs_directory_the_bootstrap_and_the_proxys_socket_are_all_it_sees_of_the_host(self):
        volumes = spec()["volumes"]

        self.assertEqual(
            {bind["bind"]: (path, bind["mode"]) for path, bind in volumes.items()},
            {
                # Its files are the worker's, read-only to the container's user but the result file.
                "/sandbox/run": ("/tmp/parseq-run-x", "rw"),
                "/sandbox/bootstrap.py": (runner.sandbox.BOOTSTRAP, "ro"),
                "/sandbox/restricted.py": (runner.sandbox.RESTRICTED_POLICY, "ro"),
                "/sandbox/work/.parseq-egress.sock": ("/tmp/parseq-run-x/.parseq-egress.sock", "rw"),
            },
        )

    def test_home_and_tmp_are_tmpfs_of_the_disk_limits_size_and_run_is_empty(self):
        scratch = f"rw,nosuid,nodev,size={LIMITS.disk_bytes},nr_inodes=20000"
        self.assertEqual(
            spec()["tmpfs"],
            {
                "/tmp": f"{scratch},mode=1777",
                "/sandbox/work": f"{scratch},mode=0700,uid=201234,gid=201234",
                "/run": "rw,nosuid,nodev,noexec,size=64k,mode=0755",
            },
        )

    def test_the_container_has_no_network_and_internet_is_the_egress_proxys_socket(self):
        internet, none = spec(network="internet"), spec(network="none")

        self.assertEqual((internet["network_mode"], none["network_mode"]), ("none", "none"))
        self.assertEqual(internet["environment"]["PARSEQ_EGRESS_SOCKET"], "/sandbox/work/.parseq-egress.sock")
        self.assertNotIn("PARSEQ_EGRESS_SOCKET", none["environment"])

    def test_the_environment_is_scrubbed_and_the_parsers_variables_cannot_replace_the_sandboxs(self):
        os.environ["PARSEQ_TEST_SECRET"] = "hunter2"
        self.addCleanup(os.environ.pop, "PARSEQ_TEST_SECRET")

        environment = spec()["environment"]

        self.assertNotIn("PARSEQ_TEST_SECRET", environment)
        self.assertEqual(environment["API_KEY"], "k")
        self.assertEqual(environment["PATH"], "/usr/local/bin:/usr/bin:/bin")
        self.assertEqual(environment["TZ"], "Europe/Moscow")

    def test_the_result_goes_to_a_file_on_fd_3_never_to_the_output(self):
        command = spec()["command"]

        self.assertEqual(command[:2], ["/bin/sh", "-c"])
        self.assertIn(f"exec 2>&1 3>/sandbox/run/{RESULT_FILE}", command[2])
        # Should its worker die, the container stops its script on its own, 30 s after the wall time.
        self.assertIn("exec timeout -s KILL 60 python -I -B /sandbox/bootstrap.py", command[2])
        self.assertEqual(command[3], "weather.py")
        self.assertEqual(json.loads(command[4])["cpu"], 30)
        self.assertEqual(json.loads(command[4])["pids"], 32)  # the bootstrap names the engine's pids limit

    def test_the_engine_keeps_a_bounded_log_and_the_container_names_its_worker(self):
        container = spec()

        self.assertEqual(
            container["log_config"], {"type": "json-file", "config": {"max-size": "2097152", "max-file": "1"}}
        )
        self.assertEqual(container["labels"]["parseq"], "sandbox")
        self.assertEqual(container["labels"]["parseq.owner"], leftovers.owner_tag())


class ResultChannelTests(unittest.TestCase):
    def test_a_container_that_never_opened_its_end_leaves_no_reader_waiting(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, RESULT_FILE)
            os.mkfifo(path)
            out = os.path.join(directory, "out")
            os.mkdir(out)
            channel = ResultChannel(path, ResultReader(out, LIMITS))
            started = time.monotonic()

            channel.finish()
            outcome = channel.outcome("", Ending(exit_code=127, out_of_memory=False, log_kept=False), LIMITS)

        self.assertLess(time.monotonic() - started, 2)
        self.assertFalse(channel.thread.is_alive())
        self.assertEqual(outcome.status, runner.PROTOCOL_ERROR)
        self.assertEqual(outcome.error, "the script's process exited with code 127 before parse() returned a result")


class NoEngineTests(unittest.TestCase):
    def test_without_a_reachable_engine_the_run_is_a_clear_sandbox_error(self):
        with tempfile.TemporaryDirectory() as tempdir:
            script = os.path.join(tempdir, "weather.py")
            with open(script, "w") as file:
                file.write("def parse():\n    return {}\n")
            out_dir = os.path.join(tempdir, "out")
            os.mkdir(out_dir)
            with mock.patch.dict(os.environ, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}):
                outcome = runner.run_script(script, out_dir, python="python", backend="docker")

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn("Docker engine", outcome.error)


@require(*docker_sandbox_availability())
class RealEngineTests(unittest.TestCase):
    """What only the docker backend does, on a real engine (the sandbox battery runs under it too: Docker*)."""

    def setUp(self):
        self.tempdir = tempfile.TemporaryDirectory(prefix="parseq-test-")
        self.addCleanup(self.tempdir.cleanup)
        self.out_dir = os.path.join(self.tempdir.name, "out")
        os.mkdir(self.out_dir)

    def run_source(self, source, **options):
        script = write_script(self.tempdir.name, source)
        return runner.run_script(script, self.out_dir, python="python", backend="docker", **options)

    def read(self, name):
        with open(os.path.join(self.out_dir, name)) as file:
            return file.read()

    def test_each_run_is_a_user_of_its_own_in_a_container_that_is_gone_once_it_ends(self):
        source = (
            "import os\ndef parse():\n"
            "    return {'who.txt': f'{os.getuid()} {open(\"/etc/hostname\").read()}'.encode()}\n"
        )
        seen = []
        for _ in range(2):
            outcome = self.run_source(source)
            self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
            seen.append(self.read("who.txt").split())
            os.remove(os.path.join(self.out_dir, "who.txt"))

        (first_uid, first_container), (second_uid, _) = seen
        self.assertTrue(all(int(uid) >= 200_000 for uid in (first_uid, second_uid)), seen)
        self.assertNotEqual(first_uid, second_uid)
        with self.assertRaises(docker.errors.NotFound):
            docker.from_env().containers.get(first_container)

    def test_a_container_past_its_deadline_is_killed_and_removed(self):
        started = time.monotonic()

        outcome = self.run_source(
            "import time\ndef parse():\n    print(open('/etc/hostname').read(), flush=True)\n    time.sleep(60)\n",
            limits=runner.Limits(wall_time=2),
        )

        self.assertEqual((outcome.status, outcome.error), (runner.TIMEOUT, "timed out after 2 s"))
        self.assertLess(time.monotonic() - started, 15)
        with self.assertRaises(docker.errors.NotFound):
            docker.from_env().containers.get(outcome.log.strip())

    def test_what_the_script_prints_reaches_the_log_sink_while_it_runs(self):
        heard = []
        source = "import time\ndef parse():\n    print('first', flush=True)\n    time.sleep(3)\n    return {}\n"
        started = time.monotonic()

        outcome = self.run_source(source, log_sink=lambda chunk: heard.append((time.monotonic() - started, chunk)))

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(b"".join(chunk for _, chunk in heard), b"first\n")
        self.assertLess(heard[0][0], time.monotonic() - started - 1.5)

    def test_the_runs_directory_on_the_host_is_read_only_to_the_script(self):
        outcome = self.run_source("def parse():\n    open('/sandbox/run/planted.txt', 'w').write('x')\n")

        self.assertEqual(outcome.status, runner.SCRIPT_ERROR)
        self.assertIn("Permission denied", outcome.error)

    def test_a_cancelled_run_has_its_container_killed_within_a_second(self):
        asked = []
        started = time.monotonic()

        outcome = self.run_source(
            "import time\ndef parse():\n    time.sleep(60)\n",
            cancelled=lambda: asked.append(1) or time.monotonic() - started > 2,
        )

        self.assertEqual(outcome.status, runner.CANCELLED)
        self.assertLess(time.monotonic() - started, 6)

    def test_a_script_printing_without_end_fills_neither_the_hosts_disk_nor_the_workers_memory(self):
        # Found by an attacker: the engine kept all of it (200 MB/s) in its log file on the host.
        sizes = []
        client = docker.from_env()

        def watch(chunk):
            if not sizes and chunk.startswith(b"id "):
                container = client.containers.get(chunk.split()[1].decode())
                sizes.append(container.attrs["LogPath"])

        source = (
            "import os, time\ndef parse():\n    print('id', open('/etc/hostname').read().strip(), flush=True)\n"
            "    block = b'A' * (1 << 20)\n    end = time.time() + 4\n"
            "    while time.time() < end:\n        os.write(1, block)\n    time.sleep(1)\n    return {}\n"
        )
        result = {}

        def measure_the_engines_file():
            # The largest the engine's file gets while the script prints (it keeps printing for 4 s).
            while not ended.is_set():
                if sizes:
                    with contextlib.suppress(FileNotFoundError):  # gone with its container at the end
                        result["bytes"] = max(result.get("bytes", 0), os.path.getsize(sizes[0]))
                time.sleep(0.05)

        measuring = threading.Thread(target=measure_the_engines_file)
        ended = threading.Event()
        measuring.start()
        outcome = self.run_source(source, limits=runner.Limits(wall_time=20, log_bytes=64 * 1024), log_sink=watch)
        ended.set()
        measuring.join()

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertIn("more bytes dropped, the limit is 64 KiB", outcome.log)
        self.assertIsNotNone(result.get("bytes"), "the engine's log file was not found")
        self.assertLessEqual(result["bytes"], 2 * 1024 * 1024)

    def test_the_containers_of_a_worker_that_died_are_removed_by_the_next_sweep(self):
        client = docker.from_env()
        image = os.environ.get("PARSEQ_SANDBOX_IMAGE", "parseq-sandbox:latest")
        dead_owner = f"{2**22 + 12345}+{leftovers.place()}+"  # a pid no process here has
        orphan = client.containers.run(
            image, ["sleep", "300"], detach=True, labels={"parseq": "sandbox", OWNER_LABEL: dead_owner}
        )
        alive = client.containers.run(
            image, ["sleep", "300"], detach=True, labels={"parseq": "sandbox", OWNER_LABEL: leftovers.owner_tag()}
        )
        self.addCleanup(alive.remove, force=True)

        remove_orphaned_containers(client)

        with self.assertRaises(docker.errors.NotFound):
            client.containers.get(orphan.id)
        self.assertEqual(client.containers.get(alive.id).status, "running")

    def test_a_result_larger_than_the_file_size_limit_comes_whole_as_over_a_pipe(self):
        # Found by an attacker: the result went through a file, which the file size limit cut at 3/4 of it.
        mib = 1024 * 1024
        limits = runner.Limits(wall_time=60, file_bytes=16 * mib, result_bytes=64 * mib)

        outcome = self.run_source("def parse():\n    return {'big.bin': bytes(40 * 1024 * 1024)}\n", limits=limits)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(os.path.getsize(os.path.join(self.out_dir, "big.bin")), 40 * mib)

    def test_a_result_over_the_result_limit_is_refused_and_leaves_no_file(self):
        limits = runner.Limits(wall_time=60, result_bytes=4 * 1024 * 1024)

        outcome = self.run_source("def parse():\n    return {'big.bin': bytes(8 * 1024 * 1024)}\n", limits=limits)

        self.assertEqual(outcome.status, runner.LIMIT_EXCEEDED, outcome.error)
        self.assertEqual(outcome.error, "limit exceeded: result larger than 4 MiB")
        self.assertEqual(os.listdir(self.out_dir), [])
