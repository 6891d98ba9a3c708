"""deploy/docker-compose.yaml started for real, with two workers, and used from outside as a user would.

The compose file is the shipped one; a test-only override (compose.stand-ins.yaml) swaps only the images
of PostgreSQL, RabbitMQ and MinIO, which no registry serves here, for local stand-ins built from Debian's
packages and moto (stand-ins/README.md). Parseq's services run the real parseq:latest of `make images`
with production settings, the worker's bwrap jail under the compose file's security options.
"""

import base64
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.test import SimpleTestCase, tag

from tests.deploy.test_compose import COMPOSE_FILE, ENV_EXAMPLE
from tests.deploy.test_images import app_image_availability
from tests.helpers import require

HERE = Path(__file__).resolve().parent
OVERRIDE = HERE / "compose.stand-ins.yaml"
STAND_INS = ("postgres", "rabbitmq", "s3")
PASSWORD = "compose-test-admin-pass"
RUN_TIMEOUT = 90


def compose_v2_availability():
    available, reason = app_image_availability()
    if not available:
        return available, reason
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        return False, "needs Compose v2 (`docker compose`; .ci/run installs Debian 13's docker-compose)"
    return True, ""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_environment(*, web_port):
    """deploy/.env.example with its placeholders filled, over plain HTTP on the loopback, and a quick reaper."""
    secret = secrets.token_urlsafe(16)
    changes = {
        "SECRET_KEY": secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{web_port}",
        "PARSEQ_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "PARSEQ_HTTPS": "false",
        "PARSEQ_HSTS_SECONDS": "0",
        "PARSEQ_TRUSTED_PROXY_HOPS": "0",
        "POSTGRES_PASSWORD": secret,
        "DATABASE_URL": f"postgres://parseq:{secret}@postgres:5432/parseq",
        "RABBITMQ_DEFAULT_PASS": secret,
        "PARSEQ_BROKER_URL": f"amqp://parseq:{secret}@rabbitmq:5672/%2F",
        "AWS_SECRET_ACCESS_KEY": secret,
        "MINIO_ROOT_PASSWORD": secret,
    }
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={changes.pop(name)}" if name in changes and "=" in line else line)
    extra = {
        "PARSEQ_HTTP_PUBLISH": f"127.0.0.1:{web_port}",
        "RABBITMQ_MANAGEMENT_PORT": str(free_port()),
        "MINIO_CONSOLE_PORT": str(free_port()),
        "GUNICORN_WORKERS": "2",
        # A killed worker's run is rerun within seconds, not half a minute.
        "PARSEQ_HEARTBEAT_SECONDS": "2",
        "PARSEQ_LOST_RUN_SECONDS": "8",
        "PARSEQ_REAPER_INTERVAL": "2",
        "LOG_LEVEL": "WARNING",
    }
    return "\n".join([*lines, *(f"{name}={value}" for name, value in {**changes, **extra}.items())]) + "\n"


@tag("slow")
@require(*compose_v2_availability())
class ComposeStackTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name in STAND_INS:
            build = ["docker", "build", "--network", "host", "-q", "-t", f"parseq-stand-in-{name}"]
            subprocess.run([*build, str(HERE / "stand-ins" / name)], check=True, capture_output=True, timeout=900)
        cls.directory = Path(tempfile.mkdtemp(prefix="parseq-compose-"))
        cls.addClassCleanup(shutil.rmtree, cls.directory, ignore_errors=True)
        shutil.copy(COMPOSE_FILE, cls.directory / "docker-compose.yaml")
        shutil.copy(OVERRIDE, cls.directory / "compose.stand-ins.yaml")
        cls.web_port = free_port()
        (cls.directory / ".env").write_text(test_environment(web_port=cls.web_port))
        cls.project = f"parseq-test-{secrets.token_hex(3)}"
        cls.addClassCleanup(cls.compose, "down", "--volumes", "--timeout", "5", check=False)
        cls.compose("up", "--detach", "--no-build", "--wait", "--scale", "worker=2", timeout=600)
        cls.compose(
            "exec", "-T", "-e", f"DJANGO_SUPERUSER_PASSWORD={PASSWORD}", "web",
            "python", "manage.py", "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com",
        )  # fmt: skip

    @classmethod
    def compose(cls, *arguments, check=True, timeout=120):
        command = [
            "docker", "compose", "--project-name", cls.project, "--project-directory", str(cls.directory),
            "-f", str(cls.directory / "docker-compose.yaml"), "-f", str(cls.directory / "compose.stand-ins.yaml"),
            *arguments,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            logs = subprocess.run([*command[:9], "logs", "--tail", "40"], capture_output=True, text=True, timeout=60)
            raise AssertionError(f"{' '.join(arguments)} failed:\n{result.stderr}\n{logs.stdout[-6000:]}")
        return result.stdout

    def api(self, method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read() if "json" not in response.headers["Content-Type"] else json.loads(response.read())

    def new_parser(self, name, source):
        return self.api("POST", "/api/parsers/", {"name": name, "script_text": source, "enabled": False})["id"]

    def start_run(self, parser_id):
        return self.api("POST", f"/api/parsers/{parser_id}/run/")["run_id"]

    def finished_run(self, run_id):
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/runs/{run_id}/")
            if run["status"] not in ("enqueued", "running"):
                return run
            time.sleep(0.5)
        self.fail(f"run {run_id} still {run['status']} after {RUN_TIMEOUT} s")

    def worker_containers(self):
        return self.compose("ps", "--quiet", "worker").split()

    def test_a_parser_uploaded_from_outside_runs_in_a_worker_container_and_downloads_through_the_web(self):
        # Given a parser uploaded through the API of the web container
        parser_id = self.new_parser("hello", "def parse():\n    return {'hello.txt': b'from a worker container'}\n")

        # When it is run
        run = self.finished_run(self.start_run(parser_id))

        # Then a worker container ran it in its warm bwrap jail, and its file downloads through the web
        self.assertEqual(run["status"], "completed", run["error"])
        self.assertEqual(run["parser_settings"]["sandbox"], "bwrap (warm start)")
        self.assertIn(run["worker"].split(":")[0], [container[:12] for container in self.worker_containers()])
        download = urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/{run['run_id']}/hello.txt", timeout=30)
        self.assertEqual(download.read(), b"from a worker container")
        self.assertEqual(
            json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz").read())["storage"], "ok"
        )

    def test_two_worker_containers_share_the_runs(self):
        parser_id = self.new_parser("shared", "import time\ndef parse():\n    time.sleep(2)\n    return {}\n")

        run_ids = [self.start_run(parser_id) for _ in range(6)]
        runs = [self.finished_run(run_id) for run_id in run_ids]

        self.assertEqual({run["status"] for run in runs}, {"completed"}, [run["error"] for run in runs])
        self.assertEqual(len({run["worker"].split(":")[0] for run in runs}), 2, [run["worker"] for run in runs])

    def test_a_killed_worker_container_loses_no_run(self):
        # Given a run that takes a while, in one of the two workers
        source = "import time\ndef parse():\n    time.sleep(12)\n    return {'done.txt': b'done'}\n"
        run_id = self.start_run(self.new_parser("survivor", source))
        deadline = time.monotonic() + 60
        while (run := self.api("GET", f"/api/runs/{run_id}/"))["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        host = run["worker"].split(":")[0]
        [victim] = [container for container in self.worker_containers() if container.startswith(host)]

        # When its container is killed
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=60)
        self.addCleanup(self.compose, "up", "--detach", "--no-build", "--wait", "--scale", "worker=2", timeout=300)

        # Then the run is run again and completes, its first attempt recorded as lost
        run = self.finished_run(run_id)
        self.assertEqual(run["status"], "completed", run["error"])
        self.assertEqual(run["attempt"], 2)
        self.assertEqual([attempt["worker"].split(":")[0] for attempt in run["attempts"]], [host])
