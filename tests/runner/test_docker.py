"""The Docker backend: its container specification, its run flow, and a real engine where one answers.

No Docker engine runs on the development machine or in CI, so the run flow is
exercised against a stand-in for the engine's client; the last test class runs a
real container when an engine is reachable.
"""

import base64
import json
import os
import tempfile
import time
import unittest
from unittest import mock

import runner
from runner.docker_backend import RESULT_FILE, DockerBackend

LIMITS = runner.Limits(wall_time=30, memory_bytes=256 * 1024**2, processes=32, open_files=64, file_bytes=1024**2)


def spec(**overrides):
    arguments = {
        "workdir": "/tmp/parseq-run-x",
        "display_name": "weather.py",
        "limits": LIMITS,
        "timezone": "Europe/Moscow",
        "variables": {"API_KEY": "k", "PATH": "/evil"},
        "network": "internet",
    }
    return DockerBackend("python", client=object(), image="parseq-sandbox:test").container_spec(
        **{**arguments, **overrides}
    )


class ContainerSpecTests(unittest.TestCase):
    def test_the_container_is_unprivileged_and_read_only(self):
        container = spec()

        self.assertEqual(container["user"], "65534:65534")
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

    def test_only_the_runs_directory_is_writable_and_the_bootstrap_is_read_only(self):
        volumes = spec()["volumes"]

        self.assertEqual(volumes["/tmp/parseq-run-x"], {"bind": "/sandbox/work", "mode": "rw"})
        self.assertEqual([v["mode"] for k, v in volumes.items() if k != "/tmp/parseq-run-x"], ["ro", "ro"])
        self.assertEqual(
            sorted(v["bind"] for v in volumes.values()),
            ["/sandbox/bootstrap.py", "/sandbox/restricted.py", "/sandbox/work"],
        )

    def test_its_tmp_is_a_tmpfs_with_a_size_and_a_number_of_files(self):
        self.assertEqual(spec()["tmpfs"], {"/tmp": "rw,nosuid,nodev,size=64m,nr_inodes=20000,mode=1777"})

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
        self.assertIn(f"exec 3>/sandbox/work/{RESULT_FILE}", command[2])
        self.assertEqual(command[3], "weather.py")
        self.assertEqual(json.loads(command[4])["cpu"], 30)


class FakeContainer:
    """Stands in for a container: it 'runs' by writing what a bootstrap would have written."""

    def __init__(self, workdir, result_lines, *, runs_forever=False, output=b"hello from the script\n"):
        self.workdir, self.result_lines, self.runs_forever, self.output = workdir, result_lines, runs_forever, output
        self.killed = self.removed = False

    def start(self):
        with open(os.path.join(self.workdir, RESULT_FILE), "w") as channel:
            channel.writelines(json.dumps(line) + "\n" for line in self.result_lines)

    def wait(self, timeout=None):
        if self.runs_forever and not self.killed:
            time.sleep(min(timeout, 0.2))
            raise ConnectionError("Read timed out.")
        return {"StatusCode": 0}

    def kill(self):
        self.killed = True

    def logs(self, **kwargs):
        return iter([self.output])

    def remove(self, force=False):
        self.removed = True


class FakeClient:
    def __init__(self, make_container):
        self.make_container = make_container
        self.created = []
        self.containers = self

    def create(self, **spec):
        container = self.make_container(spec["volumes"])
        self.created.append((spec, container))
        return container


def workdir_of(volumes):
    return next(path for path, volume in volumes.items() if volume["mode"] == "rw")


class DockerRunFlowTests(unittest.TestCase):
    def setUp(self):
        self.tempdir = tempfile.TemporaryDirectory()
        self.addCleanup(self.tempdir.cleanup)
        self.script = os.path.join(self.tempdir.name, "weather.py")
        with open(self.script, "w") as file:
            file.write("def parse():\n    return {}\n")
        self.out_dir = os.path.join(self.tempdir.name, "out")
        os.mkdir(self.out_dir)

    def run_with(self, client, **limits):
        with mock.patch("runner.docker_backend.docker_client", return_value=client):
            return runner.run_script(
                self.script, self.out_dir, python="python", backend="docker", limits=runner.Limits(**limits)
            )

    def test_a_result_written_by_the_container_becomes_the_files_and_the_container_is_removed(self):
        lines = [
            {"kind": "file", "name": "a.bin"},
            {"kind": "data", "data": base64.b64encode(b"\x00\x01").decode()},
            {"kind": "done"},
        ]
        client = FakeClient(lambda volumes: FakeContainer(workdir_of(volumes), lines))

        outcome = self.run_with(client)

        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
        self.assertEqual(outcome.log, "hello from the script\n")
        with open(os.path.join(self.out_dir, "a.bin"), "rb") as file:
            self.assertEqual(file.read(), b"\x00\x01")
        self.assertTrue(client.created[0][1].removed)

    def test_a_script_error_reported_by_the_container_is_the_runs_error(self):
        lines = [{"kind": "error", "message": "ValueError: nope"}]
        client = FakeClient(lambda volumes: FakeContainer(workdir_of(volumes), lines))

        outcome = self.run_with(client)

        self.assertEqual((outcome.status, outcome.error), (runner.SCRIPT_ERROR, "ValueError: nope"))

    def test_a_container_past_its_deadline_is_killed_then_removed(self):
        client = FakeClient(lambda volumes: FakeContainer(workdir_of(volumes), [], runs_forever=True))
        started = time.monotonic()

        outcome = self.run_with(client, wall_time=1)

        container = client.created[0][1]
        self.assertEqual((outcome.status, outcome.error), (runner.TIMEOUT, "timed out after 1 s"))
        self.assertTrue(container.killed and container.removed)
        self.assertLess(time.monotonic() - started, 5)

    def test_a_container_that_exits_without_a_result_is_an_error(self):
        client = FakeClient(lambda volumes: FakeContainer(workdir_of(volumes), []))

        outcome = self.run_with(client)

        self.assertEqual(outcome.status, runner.PROTOCOL_ERROR)
        self.assertIn("without a result", outcome.error)

    def test_without_a_reachable_engine_the_run_is_a_clear_sandbox_error(self):
        with mock.patch.dict(os.environ, {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}):
            outcome = runner.run_script(self.script, self.out_dir, python="python", backend="docker")

        self.assertEqual(outcome.status, runner.SANDBOX_ERROR)
        self.assertIn("Docker engine", outcome.error)


def engine_reachable():
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@unittest.skipUnless(engine_reachable(), "no Docker engine answers here: the real-container test is skipped")
class RealEngineTests(unittest.TestCase):
    def test_a_script_runs_in_a_real_container_of_the_sandbox_image(self):
        with tempfile.TemporaryDirectory() as tempdir:
            script = os.path.join(tempdir, "p.py")
            with open(script, "w") as file:
                file.write("import os\ndef parse():\n    return {'uid.txt': str(os.getuid()).encode()}\n")
            out_dir = os.path.join(tempdir, "out")
            os.mkdir(out_dir)

            outcome = runner.run_script(script, out_dir, python="python", backend="docker")

            self.assertEqual(outcome.status, runner.COMPLETED, outcome.error)
            with open(os.path.join(out_dir, "uid.txt")) as file:
                self.assertEqual(file.read(), "65534")
