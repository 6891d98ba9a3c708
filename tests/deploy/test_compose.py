"""The compose deployment in deploy/ agrees with the code: its services, the image, and every variable.

No Docker engine is needed: the files are parsed, and `docker compose config` (or Debian's
`docker-compose`) validates the compose file where it is installed.
"""

import ast
import fnmatch
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from django.conf import settings
from django.test import SimpleTestCase

from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
SETTINGS_FILE = ROOT / "parseq" / "settings.py"
ENV_HELPERS_FILE = ROOT / "parseq" / "env.py"

LONG_RUNNING = {"postgres", "rabbitmq", "minio", "web", "worker", "scheduler"}
ONE_SHOT = {"migrate", "create-bucket"}
PARSEQ_SERVICES = {"web", "worker", "scheduler", "migrate"}
# Where each data store keeps its data: a named volume must be mounted there.
DATA_DIRECTORIES = {"postgres": "/var/lib/postgresql/data", "rabbitmq": "/var/lib/rabbitmq", "minio": "/data"}
# Read by Parseq, but not in settings.py: boto3's credentials, and the image of the docker backend.
READ_OUTSIDE_SETTINGS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PARSEQ_SANDBOX_IMAGE"}
SECRETS = {"SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"}
BUILD_PACKAGES = {"gcc", "g++", "cc", "clang", "make", "build-essential", "python3-dev", "libc6-dev"}
SANDBOX_VENV = "/app/.venv-sandbox"


def load_compose():
    with open(COMPOSE_FILE, encoding="utf-8") as file:
        return yaml.safe_load(file)


# $$ is a literal dollar; ${NAME}, ${NAME:-default}, ${NAME:?error} and $NAME are references.
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def references(value):
    """{name: [modifier, ...]} of every variable the compose file interpolates, in keys and values alike."""
    found = {}
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        items = []
        if isinstance(value, str):
            for match in REFERENCE.finditer(value):
                if match.group(0) != "$$":
                    found.setdefault(match.group(1) or match.group(3), []).append(match.group(2) or "")
    for item in items:
        for name, modifiers in references(item).items():
            found.setdefault(name, []).extend(modifiers)
    return found


def interpolate(text, variables):
    """The value compose gives `text`, with `variables` as its environment."""

    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name, modifier = match.group(1) or match.group(3), match.group(2) or ""
        value = variables.get(name)
        if modifier.startswith(":-") and not value:
            return modifier[2:]
        if modifier.startswith(":?") and not value:
            raise AssertionError(f"{name} is required: {modifier[2:]}")
        return value or ""

    return REFERENCE.sub(replace, text)


VARIABLE_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def read_env_example():
    """(variables, undescribed, repeated) of deploy/.env.example.

    variables: {name: (value, active)}, where a "# NAME=value" line lists a variable with its default.
    A variable is described when a comment line that is not itself a variable comes before it in its block.
    """
    variables, undescribed, repeated = {}, [], []
    described = False
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = VARIABLE_LINE.match(line)
        if match:
            name = match.group(2)
            if name in variables:
                repeated.append(name)
            variables[name] = (match.group(3), match.group(1) is None)
            if not described:
                undescribed.append(name)
        elif not line.strip():
            described = False
        elif line.startswith("#"):
            described = True
    return variables, undescribed, repeated


def active_env_example():
    variables, _, _ = read_env_example()
    return {name: value for name, (value, active) in variables.items() if active}


def env_helpers():
    """The readers of parseq/env.py: every function whose first parameter is the variable's name."""
    tree = ast.parse(ENV_HELPERS_FILE.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.args.args and node.args.args[0].arg == "name"
    }


def _is_os_environ(node):
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")


def _is_name(node, name):
    return isinstance(node, ast.Name) and node.id == name


def _reads_environment(function, helpers):
    """Whether a call of `function` reads a variable: a reader of parseq/env.py, os.getenv, os.environ.get."""
    if isinstance(function, ast.Name):
        return function.id in helpers
    if not isinstance(function, ast.Attribute):
        return False
    if function.attr == "getenv":
        return _is_name(function.value, "os")
    if function.attr in ("get", "pop"):
        return _is_os_environ(function.value)
    return function.attr in helpers


def variables_read_by_settings():
    """(names, problems): the variables parseq/settings.py reads, through parseq.env's readers or os.environ.

    A read whose name is not a plain string is a problem: nobody could tell which variable to document.
    """
    helpers = env_helpers()
    names, problems = set(), []
    for node in ast.walk(ast.parse(SETTINGS_FILE.read_text(encoding="utf-8"))):
        argument = None
        if isinstance(node, ast.Call):
            reader = _reads_environment(node.func, helpers)
            if reader:
                argument = node.args[0] if node.args else None
                if argument is None:
                    problems.append(f"line {node.lineno}: a read without a variable name")
                    continue
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            argument = node.slice
        if argument is None:
            continue
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names.add(argument.value)
        else:
            problems.append(f"line {node.lineno}: the variable's name is not a string literal")
    return names, problems


def dockerfile_stages():
    """[(stage name, base image, [instruction, ...])] of deploy/Dockerfile, continuation lines joined.

    An instruction is (KEYWORD, arguments); ARG defaults before the first FROM are substituted in FROM.
    """
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args, stages = {}, []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "ARG" and not stages:
            name, _, default = arguments.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = arguments.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda match: global_args.get(match.group(1), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((name, base, []))
        elif stages:
            stages[-1][2].append((keyword, arguments))
    return stages


def apt_packages(instructions):
    packages = set()
    for keyword, arguments in instructions:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", arguments):
            words = command.split()
            if "apt-get" in words and "install" in words:
                packages.update(word for word in words[words.index("install") + 1 :] if not word.startswith("-"))
    return packages


def dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path, patterns):
    """Whether the build context leaves `path` out (the last matching pattern wins, as with Docker)."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            result = not negated
    return result


def compose_command():
    """The compose CLI here, if any: the `docker compose` plugin, else Debian's `docker-compose`."""
    if shutil.which("docker"):
        try:
            plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            plugin = None
        if plugin is not None and plugin.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = compose_command()


class ComposeServicesTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.compose = load_compose()
        cls.services = cls.compose["services"]

    def test_the_stack_has_the_stores_the_parseq_processes_and_the_one_shot_jobs(self):
        self.assertLessEqual(LONG_RUNNING | ONE_SHOT, set(self.services))
        self.assertTrue(self.services["postgres"]["image"].startswith("postgres:16"))
        self.assertRegex(self.services["rabbitmq"]["image"], r"^rabbitmq:3[.\d]*-management$")
        self.assertIn("minio/minio", self.services["minio"]["image"])
        self.assertIn("minio/mc", self.services["create-bucket"]["image"])

    def test_every_long_running_service_has_a_health_check(self):
        for name in LONG_RUNNING:
            with self.subTest(service=name):
                healthcheck = self.services[name].get("healthcheck") or {}
                self.assertFalse(healthcheck.get("disable"), "its health check is disabled")
                test = healthcheck.get("test")
                self.assertTrue(test, "it has no health check")
                self.assertNotEqual(test if isinstance(test, str) else test[0], "NONE")
                for key in ("interval", "timeout", "retries"):
                    self.assertIn(key, healthcheck)

    def test_the_web_is_healthy_when_healthz_answers(self):
        test = self.services["web"]["healthcheck"]["test"]
        self.assertIn("http://127.0.0.1:8000/healthz", " ".join(test))

    def test_health_check_code_compiles_and_imports_what_exists(self):
        """A health check that cannot run marks its service unhealthy for ever: its Python must be sound."""
        for name in LONG_RUNNING:
            test = self.services[name]["healthcheck"]["test"]
            if "-c" not in test or "python" not in test:
                continue
            code = test[test.index("-c") + 1]
            with self.subTest(service=name):
                compile(code, f"{name} health check", "exec")
                for module, attribute in re.findall(r"from ([\w.]+) import (\w+)", code):
                    self.assertTrue(hasattr(importlib.import_module(module), attribute), f"{module}.{attribute}")

    def test_parseq_waits_for_healthy_stores_the_migration_and_the_bucket(self):
        expected = {
            "postgres": "service_healthy",
            "rabbitmq": "service_healthy",
            "migrate": "service_completed_successfully",
            "create-bucket": "service_completed_successfully",
        }
        for name in ("web", "worker", "scheduler"):
            with self.subTest(service=name):
                depends_on = self.services[name]["depends_on"]
                self.assertEqual({dependency: depends_on[dependency]["condition"] for dependency in expected}, expected)
        self.assertEqual(self.services["migrate"]["depends_on"], {"postgres": {"condition": "service_healthy"}})
        self.assertEqual(self.services["create-bucket"]["depends_on"], {"minio": {"condition": "service_healthy"}})

    def test_every_dependency_has_a_condition_that_fits_the_service_it_waits_for(self):
        for name, service in self.services.items():
            depends_on = service.get("depends_on", {})
            self.assertIsInstance(depends_on, dict, f"{name}: depends_on without conditions")
            for dependency, how in depends_on.items():
                with self.subTest(service=name, dependency=dependency):
                    condition = how["condition"]
                    if dependency in ONE_SHOT:
                        self.assertEqual(condition, "service_completed_successfully")
                    else:
                        self.assertEqual(condition, "service_healthy")
                        self.assertIn("healthcheck", self.services[dependency])

    def test_one_shot_jobs_run_once(self):
        for name in ONE_SHOT:
            with self.subTest(service=name):
                self.assertEqual(self.services[name]["restart"], "no")
        for name in LONG_RUNNING:
            with self.subTest(service=name):
                self.assertEqual(self.services[name]["restart"], "unless-stopped")

    def test_data_lives_in_declared_named_volumes_and_nothing_binds_the_host(self):
        declared = set(self.compose.get("volumes") or {})
        for name, directory in DATA_DIRECTORIES.items():
            with self.subTest(service=name):
                mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in self.services[name]["volumes"]}
                self.assertIn(directory, mounts)
                self.assertIn(mounts[directory], declared)
        for name, service in self.services.items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
                with self.subTest(service=name, volume=volume):
                    self.assertNotRegex(source, r"^[./~]", "a bind mount of the host")
                    self.assertIn(source, declared)

    def test_workers_and_schedulers_scale_with_no_fixed_name_or_port(self):
        for name in ("worker", "scheduler"):
            with self.subTest(service=name):
                self.assertNotIn("ports", set(self.services[name]), "a published port stops `--scale`")
        for name, service in self.services.items():
            with self.subTest(service=name):
                self.assertNotIn("container_name", set(service), "a fixed name stops `--scale` and a second stack")

    def test_published_ports_of_the_stores_stay_on_the_hosts_loopback(self):
        example = active_env_example()
        for name in ("postgres", "rabbitmq", "minio"):
            for port in self.services[name].get("ports", []):
                with self.subTest(service=name, port=port):
                    self.assertTrue(interpolate(port, example).startswith("127.0.0.1:"))
        for port in self.services["web"]["ports"]:
            self.assertTrue(interpolate(port, example).startswith("127.0.0.1:"), "the web: behind a TLS proxy")

    def test_parseq_services_run_the_image_with_the_env_file(self):
        images = set()
        for name in PARSEQ_SERVICES:
            with self.subTest(service=name):
                service = self.services[name]
                self.assertEqual(service["build"], {"context": "..", "dockerfile": "deploy/Dockerfile"})
                self.assertEqual(service["env_file"], ".env")
                self.assertTrue(service["init"], "an init process reaps the sandboxes' orphans")
                images.add(service["image"])
        self.assertEqual(len(images), 1, "one image for every Parseq process")

    def test_parseq_services_run_the_production_processes(self):
        commands = {name: self.services[name]["command"] for name in PARSEQ_SERVICES}
        self.assertEqual(commands["web"][:4], ["gunicorn", "parseq.wsgi", "--bind", "0.0.0.0:8000"])
        self.assertIn("--access-logfile", commands["web"])
        self.assertIn("--workers", commands["web"])
        self.assertEqual(commands["worker"][:3], ["python", "manage.py", "rundramatiq"])
        self.assertIn("--processes", commands["worker"])
        self.assertNotIn("--threads", commands["worker"])  # PARSEQ_WORKER_SLOTS says how many runs at once
        self.assertEqual(commands["scheduler"], ["python", "manage.py", "runscheduler"])
        self.assertEqual(commands["migrate"], ["python", "manage.py", "migrate", "--noinput"])

    def test_a_stopping_worker_has_time_to_finish_before_docker_kills_it(self):
        worker = self.services["worker"]
        command = worker["command"]
        shutdown_ms = int(command[command.index("--worker-shutdown-timeout") + 1])
        grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
        self.assertIsNotNone(grace)
        self.assertLess(shutdown_ms / 1000, int(grace.group(1)))

    def test_the_worker_may_make_bwrap_jails_without_privileges(self):
        worker = self.services["worker"]
        self.assertLessEqual(
            {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}, set(worker["security_opt"])
        )
        self.assertNotIn("privileged", worker)
        self.assertNotIn("cap_add", worker)
        self.assertNotIn("volumes", worker, "the Docker socket stays commented out by default")
        self.assertEqual(worker["environment"]["PARSEQ_SANDBOX"], "bwrap")
        for name in self.services.keys() - {"worker"}:
            with self.subTest(service=name):
                self.assertNotIn("security_opt", self.services[name], "only the worker needs the jail's exceptions")

    def test_only_the_worker_names_the_bwrap_sandbox_which_only_it_can_make(self):
        """Parseq refuses to start where the sandbox it is told to use cannot work: the web's container has no jail."""
        self.assertNotIn("PARSEQ_SANDBOX", active_env_example(), "deploy/.env reaches every service")
        for name in PARSEQ_SERVICES - {"worker"}:
            with self.subTest(service=name):
                self.assertNotIn("PARSEQ_SANDBOX", self.services[name].get("environment", {}))

    def test_rabbitmq_lets_a_worker_hold_a_run_longer_than_the_longest_timeout(self):
        arguments = self.services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        match = re.search(r"-rabbit consumer_timeout (\d+)", interpolate(arguments, active_env_example()))
        self.assertIsNotNone(match)
        # A worker may hold one run and a prefetched message behind it: twice the longest a run may take.
        self.assertGreaterEqual(int(match.group(1)), 2 * (settings.MAX_RUN_TIMEOUT + settings.RUN_GRACE) * 1000)

    def test_every_variable_the_compose_file_uses_is_in_the_example_env(self):
        listed, _, _ = read_env_example()
        missing = sorted(set(references(self.compose)) - set(listed))
        self.assertEqual(missing, [], f"add these to deploy/.env.example: {', '.join(missing)}")

    def test_required_variables_are_set_in_the_example_env(self):
        example = active_env_example()
        for name, modifiers in references(self.compose).items():
            if any(modifier.startswith((":?", "?")) for modifier in modifiers):
                with self.subTest(variable=name):
                    self.assertTrue(example.get(name), f"{name} is required: set it (uncommented) in .env.example")


class EnvExampleTests(SimpleTestCase):
    def test_the_example_env_lists_every_variable_parseq_reads(self):
        read, problems = variables_read_by_settings()
        self.assertEqual(problems, [], "parseq/settings.py reads variables this test cannot name")
        self.assertLessEqual({"SECRET_KEY", "DATABASE_URL", "PARSEQ_BROKER_URL", "PARSEQ_S3_BUCKET"}, read)
        listed, _, _ = read_env_example()
        missing = sorted((read | READ_OUTSIDE_SETTINGS) - set(listed))
        self.assertEqual(missing, [], f"deploy/.env.example does not list: {', '.join(missing)}")

    def test_every_variable_of_the_example_env_has_a_description(self):
        _, undescribed, _ = read_env_example()
        self.assertEqual(undescribed, [], "put a comment above these in deploy/.env.example")

    def test_the_example_env_names_each_variable_once(self):
        _, _, repeated = read_env_example()
        self.assertEqual(repeated, [])

    def test_secrets_in_the_example_env_are_obvious_placeholders(self):
        example = active_env_example()
        for name in SECRETS:
            with self.subTest(variable=name):
                self.assertIn("change-me", example[name])

    def test_the_example_env_has_no_dollar_or_quote_that_compose_would_read_differently(self):
        for name, value in active_env_example().items():
            with self.subTest(variable=name):
                self.assertNotRegex(value, r"[$'\"]")
                self.assertEqual(value, value.strip())

    def test_the_example_env_is_a_production_configuration_of_the_compose_services(self):
        example = active_env_example()
        self.assertEqual(example["DEBUG"], "false")
        user, password, database = example["POSTGRES_USER"], example["POSTGRES_PASSWORD"], example["POSTGRES_DB"]
        self.assertEqual(example["DATABASE_URL"], f"postgres://{user}:{password}@postgres:5432/{database}")
        user, password = example["RABBITMQ_DEFAULT_USER"], example["RABBITMQ_DEFAULT_PASS"]
        self.assertEqual(example["PARSEQ_BROKER_URL"], f"amqp://{user}:{password}@rabbitmq:5672/%2F")
        self.assertEqual(example["PARSEQ_S3_ENDPOINT_URL"], "http://minio:9000")
        self.assertEqual(example["PARSEQ_S3_ADDRESSING_STYLE"], "path")
        self.assertTrue(example["PARSEQ_S3_BUCKET"])
        self.assertGreaterEqual(len(example["MINIO_ROOT_PASSWORD"]), 8, "MinIO refuses shorter passwords")
        self.assertGreaterEqual(len(example["AWS_SECRET_ACCESS_KEY"]), 8, "MinIO refuses shorter secret keys")

    def test_parseq_starts_with_the_example_env(self):
        """Every value of the example passes the settings' own checks (`manage.py check`, in a fresh process)."""
        with tempfile.TemporaryDirectory(prefix="parseq-deploy-check-") as var_dir:
            environment = {
                **active_env_example(),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PARSEQ_VAR_DIR": var_dir,
                "LOG_LEVEL": "ERROR",
            }
            result = subprocess.run(
                [sys.executable, "manage.py", "check"],
                cwd=ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr)


class DockerfileTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.stages = dockerfile_stages()
        cls.builder = next(stage for stage in cls.stages if stage[0] == "builder")
        cls.final = cls.stages[-1]

    def instructions(self, stage, keyword):
        return [arguments for word, arguments in stage[2] if word == keyword]

    def test_the_image_is_built_in_stages_from_python_3_11_slim_on_bookworm(self):
        self.assertGreaterEqual(len(self.stages), 2)
        for name, base, _ in self.stages:
            with self.subTest(stage=name):
                self.assertEqual(base, "python:3.11-slim-bookworm")

    def test_the_final_stage_has_no_build_tools(self):
        packages = apt_packages(self.final[2])
        self.assertEqual(packages & BUILD_PACKAGES, set())
        self.assertEqual({package for package in packages if package.endswith("-dev")}, set())
        for command in self.instructions(self.final, "RUN"):
            with self.subTest(command=command):
                self.assertNotRegex(command, r"\bpip3? install\b", "packages are built in the builder stage")
        self.assertIn("build-essential", apt_packages(self.builder[2]), "the builder is where compilers belong")

    def test_the_final_stage_runs_as_an_unprivileged_user(self):
        users = self.instructions(self.final, "USER")
        self.assertTrue(users, "the final stage sets no USER: it would run as root")
        self.assertNotIn(users[-1].split(":")[0], ("root", "0"))

    def test_the_image_holds_the_app_and_the_sandbox_environments(self):
        builder_runs = " ".join(self.instructions(self.builder, "RUN"))
        self.assertRegex(builder_runs, r"/app/\.venv/bin/pip install --require-hashes -r \S*requirements\.txt")
        self.assertRegex(
            builder_runs,
            rf"{re.escape(SANDBOX_VENV)}/bin/pip install --require-hashes -r \S*sandbox-image/requirements\.txt",
        )
        copies = self.instructions(self.final, "COPY")
        self.assertIn("--from=builder /app/.venv /app/.venv", copies)
        self.assertIn(f"--from=builder {SANDBOX_VENV} {SANDBOX_VENV}", copies)
        environment = " ".join(self.instructions(self.final, "ENV"))
        self.assertIn(f"PARSEQ_SANDBOX_PYTHON={SANDBOX_VENV}/bin/python", environment)

    def test_the_final_stage_has_bubblewrap_and_collects_static_files_as_its_user(self):
        self.assertIn("bubblewrap", apt_packages(self.final[2]))
        words = [word for word, _ in self.final[2]]
        runs = [(index, arguments) for index, (word, arguments) in enumerate(self.final[2]) if word == "RUN"]
        collect = [index for index, arguments in runs if "manage.py collectstatic" in arguments]
        self.assertEqual(len(collect), 1)
        self.assertIn("USER", words[: collect[0]], "static files belong to the user that serves them")

    def test_no_secret_key_is_kept_in_the_image(self):
        for keyword in ("ENV", "ARG"):
            for arguments in self.instructions(self.final, keyword) + self.instructions(self.builder, keyword):
                with self.subTest(instruction=f"{keyword} {arguments}"):
                    self.assertNotIn("SECRET_KEY", arguments)
        collect = next(arguments for arguments in self.instructions(self.final, "RUN") if "collectstatic" in arguments)
        self.assertTrue(shlex.split(collect)[0].startswith("SECRET_KEY="), "a throwaway key for that step only")

    def test_the_build_context_leaves_out_local_environments_data_and_secrets(self):
        patterns = dockerignore_patterns()
        for path in (
            ".venv",
            ".venv-sandbox",
            "var",
            "test-output",
            ".git",
            ".env",
            "deploy/.env",
            "parseq/__pycache__",
        ):
            with self.subTest(path=path):
                self.assertTrue(ignored(path, patterns))

    def test_the_build_context_keeps_what_the_image_needs(self):
        patterns = dockerignore_patterns()
        locks = ("requirements.txt", "sandbox-image/requirements.txt")
        needed = ("parseq", "runner", "parsers", "sandbox-image/requirements.in", *locks, "manage.py")
        for path in (*needed, "deploy/.env.example"):
            with self.subTest(path=path):
                self.assertFalse(ignored(path, patterns))


@require(
    COMPOSE is not None,
    "needs Docker Compose to check deploy/docker-compose.yaml: apt-get install docker-compose (no engine needed)",
)
class ComposeConfigTests(SimpleTestCase):
    def test_compose_accepts_the_file_with_the_example_env(self):
        with tempfile.TemporaryDirectory(prefix="parseq-compose-") as root:
            # A copy, with the example as deploy/.env: the file's `env_file: .env` must exist.
            deploy = Path(root) / "deploy"
            deploy.mkdir()
            shutil.copy(COMPOSE_FILE, deploy / "docker-compose.yaml")
            shutil.copy(DOCKERFILE, deploy / "Dockerfile")
            shutil.copy(ENV_EXAMPLE, deploy / ".env")
            result = subprocess.run(
                [*COMPOSE, "-f", "deploy/docker-compose.yaml", "--env-file", "deploy/.env", "config", "-q"],
                cwd=root,
                # Only the env file configures it, not this test's own environment.
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": root},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("is not set", result.stderr)
