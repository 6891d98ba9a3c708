"""Configuration from the environment: typed readers, and start-up that fails in one clear line."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from django.conf import settings
from django.test import SimpleTestCase

from parseq.env import ConfigurationError, database_from_url, env_bool, env_int, env_list


class EnvironmentReaderTests(SimpleTestCase):
    def test_booleans_read_the_usual_spellings_and_refuse_others(self):
        for value, expected in [("true", True), ("1", True), ("yes", True), ("False", False), ("0", False)]:
            with self.subTest(value=value), mock.patch.dict(os.environ, {"FLAG": value}):
                self.assertIs(env_bool("FLAG", None), expected)
        with mock.patch.dict(os.environ, {"FLAG": "maybe"}), self.assertRaisesMessage(ConfigurationError, "FLAG"):
            env_bool("FLAG", False)

    def test_an_unset_or_empty_variable_gives_the_default(self):
        with mock.patch.dict(os.environ, {"EMPTY": ""}):
            self.assertEqual(env_int("EMPTY", 7), 7)
            self.assertEqual(env_list("UNSET_FOR_SURE", ["a"]), ["a"])

    def test_numbers_are_checked(self):
        with mock.patch.dict(os.environ, {"N": "ten"}), self.assertRaisesMessage(ConfigurationError, "N must be"):
            env_int("N", 1)
        with mock.patch.dict(os.environ, {"N": "0"}), self.assertRaisesMessage(ConfigurationError, "at least 1"):
            env_int("N", 1, minimum=1)

    def test_lists_are_comma_separated_and_trimmed(self):
        with mock.patch.dict(os.environ, {"HOSTS": "a.example, b.example,,"}):
            self.assertEqual(env_list("HOSTS", []), ["a.example", "b.example"])

    def test_database_urls(self):
        postgres = database_from_url("DATABASE_URL", "postgres://u:p%40ss@db.local:6432/parseq")
        self.assertEqual(
            (postgres["ENGINE"], postgres["NAME"], postgres["USER"], postgres["PASSWORD"], postgres["HOST"]),
            ("django.db.backends.postgresql", "parseq", "u", "p@ss", "db.local"),
        )
        self.assertEqual(postgres["PORT"], "6432")
        with_options = database_from_url("D", "postgres://u@db.local/parseq?sslmode=require&connect_timeout=5")
        self.assertEqual(with_options["OPTIONS"], {"sslmode": "require", "connect_timeout": 5})
        self.assertEqual(database_from_url("D", "sqlite:////var/lib/p.db")["NAME"], "/var/lib/p.db")
        for bad in ["mysql://x/y", "postgres://host", "nonsense", "sqlite://"]:
            with self.subTest(url=bad), self.assertRaises(ConfigurationError):
                database_from_url("DATABASE_URL", bad)


class StartupTests(SimpleTestCase):
    def start(self, *arguments, **environment):
        clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
        return subprocess.run(
            [sys.executable, "manage.py", "check", *arguments],
            cwd=settings.BASE_DIR,
            env={**clean, **environment},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_without_secret_key_in_production_start_up_fails_with_one_line(self):
        result = self.start(DEBUG="false")

        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stderr, "Configuration error: SECRET_KEY must be set when DEBUG is false\n")

    def test_a_bad_variable_is_named_in_the_one_line(self):
        for variable, value in [
            ("DATABASE_URL", "mysql://x/y"),
            ("PARSEQ_BROKER_URL", "redis://x"),
            ("DEBUG", "y"),
            ("PARSEQ_SANDBOX", "chroot"),
            ("PARSEQ_REAPER_INTERVAL", "30"),  # an outage between two checks would go unseen
            ("PARSEQ_HEARTBEAT_SECONDS", "20"),  # fewer than three heartbeats before a run counts as lost
            ("PARSEQ_WORKER_SLOTS", "0"),
        ]:
            with self.subTest(variable=variable):
                result = self.start(SECRET_KEY="k", **{variable: value})

                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertIn(variable, result.stderr)

    def test_a_good_configuration_starts(self):
        result = self.start(SECRET_KEY="k", DEBUG="false")

        self.assertEqual(result.returncode, 0, result.stderr)


class ProductionConfigurationTests(SimpleTestCase):
    """The example environment of deploy/ is production-safe: Django's deployment checks find nothing."""

    def example_environment(self):
        environment = {}
        with open(settings.BASE_DIR / "deploy" / ".env.example", encoding="utf-8") as example:
            for line in example:
                line = line.strip()
                if line and not line.startswith("#"):
                    name, _, value = line.partition("=")
                    environment[name] = value
        return environment

    def test_check_deploy_finds_nothing_with_the_example_environment_and_a_real_secret_key(self):
        # Given the example environment, with the secret a user must put in, and this machine's services
        environment = {
            **self.example_environment(),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": "sqlite:////tmp/parseq-deploy-check.sqlite3",
            "PARSEQ_VAR_DIR": tempfile.mkdtemp(prefix="parseq-deploy-check-"),
        }
        self.addCleanup(shutil.rmtree, environment["PARSEQ_VAR_DIR"], True)

        result = StartupTests.start(self, "--deploy", "--fail-level", "WARNING", **environment)

        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("System check identified no issues", result.stdout)

    def test_debug_is_off_unless_asked_for(self):
        environment = {k: v for k, v in os.environ.items() if k != "DEBUG"}
        code = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'parseq.settings'); django.setup()"
        code += "; from django.conf import settings; print(settings.DEBUG, settings.LOG_FORMAT)"
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=settings.BASE_DIR,
            env={**environment, "SECRET_KEY": "k"},
            capture_output=True,
            text=True,
            timeout=60,
        )

        self.assertEqual(result.stdout.split(), ["False", "json"], result.stderr)

    def test_links_name_the_port_the_all_in_one_process_listens_on_unless_a_public_url_is_given(self):
        code = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'parseq.settings'); django.setup()"
        code += "; from django.conf import settings; print(settings.PUBLIC_URL)"
        environment = {k: v for k, v in os.environ.items() if k not in ("PORT", "PARSEQ_PUBLIC_URL")}

        def public_url(**variables):
            result = subprocess.run(
                [sys.executable, "-c", code],
                cwd=settings.BASE_DIR,
                env={**environment, "SECRET_KEY": "k", **variables},
                capture_output=True,
                text=True,
                timeout=60,
            )
            return result.stdout.strip() or result.stderr

        self.assertEqual(public_url(), "http://127.0.0.1:8000")
        self.assertEqual(public_url(PORT="9123"), "http://127.0.0.1:9123")
        self.assertEqual(public_url(PORT="9123", PARSEQ_PUBLIC_URL="https://parseq.example/"), "https://parseq.example")


class DatabaseWaitTests(SimpleTestCase):
    """PARSEQ_DATABASE_TIMEOUT bounds the services' waits, not a one-off command's (a migration may wait on a lock)."""

    def wait_callback_in(self, code):
        result = subprocess.run(
            [sys.executable, "-c", code + "\nfrom psycopg2 import extensions\nprint(extensions.get_wait_callback())"],
            cwd=settings.BASE_DIR,
            env={**os.environ, "SECRET_KEY": "k", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/parseq"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def test_the_web_process_bounds_its_database_waits(self):
        self.assertIn("bound_waits.<locals>.wait", self.wait_callback_in("import parseq.wsgi"))

    def test_a_management_command_such_as_migrate_does_not(self):
        code = "import os, django\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'parseq.settings')\ndjango.setup()"
        self.assertEqual(self.wait_callback_in(code), "None")
