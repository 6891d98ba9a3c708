"""The images `make images` builds, run on a real engine: the app image's worker makes its jails with the
compose file's security options, and only with them; it runs as its own user with no compilers.
"""

import shlex
import subprocess

import yaml
from django.test import SimpleTestCase, tag

from tests.deploy.test_compose import COMPOSE_FILE
from tests.helpers import docker_sandbox_availability, require

APP_IMAGE = "parseq:latest"
# Runs a script in a cold and a warm bwrap jail as the worker would, and says how each ended.
JAIL_PROBE = """
import os, tempfile
import runner

directory = tempfile.mkdtemp()
script = os.path.join(directory, "probe.py")
with open(script, "w") as file:
    file.write("import os\\ndef parse():\\n    return {'uid.txt': str(os.getuid()).encode()}\\n")
for warm in (False, True):
    out = tempfile.mkdtemp()
    outcome = runner.run_script(
        script, out, python="/app/.venv-sandbox/bin/python", backend="bwrap", warm=warm, preload=["requests"]
    )
    print("warm" if warm else "cold", outcome.status, outcome.error.splitlines()[0] if outcome.error else "")
"""


def app_image_availability():
    available, reason = docker_sandbox_availability()
    if not available:
        return available, reason
    found = subprocess.run(["docker", "image", "inspect", APP_IMAGE], capture_output=True, timeout=30)
    return found.returncode == 0, f"needs the image {APP_IMAGE}: make images"


def run_in_app_image(*command, options=()):
    """`command` in a fresh container of the app image, as the worker's user; (exit code, output)."""
    result = subprocess.run(
        ["docker", "run", "--rm", *options, APP_IMAGE, *command], capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout + result.stderr


def worker_security_options():
    worker = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker"]
    return [argument for option in worker["security_opt"] for argument in ("--security-opt", option)]


@tag("slow")
@require(*app_image_availability())
class AppImageTests(SimpleTestCase):
    def test_the_worker_makes_cold_and_warm_bwrap_jails_with_the_compose_files_security_options(self):
        code, output = run_in_app_image("python", "-c", JAIL_PROBE, options=worker_security_options())

        self.assertEqual(code, 0, output)
        self.assertEqual(output.split("\n")[-3:-1], ["cold completed ", "warm completed "], output)

    def test_without_them_no_jail_can_be_made(self):
        code, output = run_in_app_image("python", "-c", JAIL_PROBE)

        self.assertEqual(code, 0, output)
        self.assertNotIn("completed", output)
        self.assertIn("bwrap: No permissions to create new namespace", output)

    def test_each_of_the_two_that_matter_here_is_needed(self):
        # This host has no AppArmor: apparmor=unconfined changes nothing here (deploy/README.md).
        for kept in ("seccomp=unconfined", "systempaths=unconfined"):
            with self.subTest(only=kept):
                code, output = run_in_app_image("python", "-c", JAIL_PROBE, options=["--security-opt", kept])
                self.assertEqual(code, 0, output)
                self.assertNotIn("completed", output)

    def test_the_image_runs_as_its_own_user_without_compilers_and_with_its_static_files(self):
        command = "id -u; command -v gcc cc || echo no-compiler; ls /app/var/static/parseq/admin.css"
        code, output = run_in_app_image("sh", "-c", command)

        self.assertEqual(code, 0, output)
        self.assertEqual(
            output.split(), ["10001", "no-compiler", "/app/var/static/parseq/admin.css"], shlex.quote(output)
        )
