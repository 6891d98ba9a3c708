"""The alert settings are read from the environment, and a bad value stops start-up in one line naming it."""

import os
import subprocess
import sys

from django.conf import settings
from django.test import SimpleTestCase


def start(show="PUBLIC_URL", **environment):
    """Start Django with `environment` and print the setting `show`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARSEQ_", "DATABASE_URL"))}
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "--no-imports",
            "-c",
            f"from django.conf import settings; print(settings.{show})",
        ],
        cwd=settings.BASE_DIR,
        env={**clean, "SECRET_KEY": "k", "DEBUG": "false", **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


class AlertSettingsTests(SimpleTestCase):
    def test_the_public_url_defaults_to_the_local_server_and_loses_its_trailing_slash(self):
        self.assertEqual(start().stdout, "http://127.0.0.1:8000\n")
        self.assertEqual(start(PARSEQ_PUBLIC_URL="https://parseq.example.com/").stdout, "https://parseq.example.com\n")

    def test_a_public_url_that_is_not_http_stops_start_up_naming_the_variable(self):
        for value in ["parseq.example.com", "ftp://parseq.example.com", "https://"]:
            with self.subTest(value=value):
                result = start(PARSEQ_PUBLIC_URL=value)

                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertIn("PARSEQ_PUBLIC_URL must start with http:// or https://", result.stderr)

    def test_webhook_numbers_are_checked(self):
        for variable in ["PARSEQ_WEBHOOK_TIMEOUT", "PARSEQ_WEBHOOK_ATTEMPTS", "PARSEQ_WEBHOOK_BACKOFF"]:
            with self.subTest(variable=variable):
                result = start(**{variable: "0"})

                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(result.stderr, f"Configuration error: {variable} must be at least 1, not 0\n")

    def test_the_webhook_allow_list_is_empty_by_default_and_read_as_networks(self):
        self.assertEqual(start("WEBHOOK_ALLOWED_NETWORKS").stdout, "[]\n")
        result = start("WEBHOOK_ALLOWED_NETWORKS", PARSEQ_WEBHOOK_ALLOWED_NETWORKS=" 10.20.0.0/16, fd00:20::/32 ")
        self.assertEqual(result.stdout, "[IPv4Network('10.20.0.0/16'), IPv6Network('fd00:20::/32')]\n", result.stderr)

    def test_a_bad_network_in_the_webhook_allow_list_stops_start_up_naming_the_variable(self):
        for value in ["10.0.0.0/8,intranet", "10.0.0.1/8", "300.0.0.0/8"]:
            with self.subTest(value=value):
                result = start(PARSEQ_WEBHOOK_ALLOWED_NETWORKS=value)

                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertTrue(
                    result.stderr.startswith(
                        "Configuration error: PARSEQ_WEBHOOK_ALLOWED_NETWORKS must be comma-separated networks"
                    ),
                    result.stderr,
                )
