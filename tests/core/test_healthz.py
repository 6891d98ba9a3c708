"""`/healthz`: 200 when the database, the broker and the storage answer, 503 with the reason otherwise."""

import json
import os
import subprocess
import unittest
from unittest import mock

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db import connection
from django.test import TestCase
from django.urls import reverse

import runner
from parseq.core import execution
from parseq.health import STORAGE_PROBE_DIRECTORY
from parseq.scheduling.coordination import coordinator_for_database
from tests.helpers import TemporaryMediaMixin, rabbitmq_url, require


class HealthTests(TemporaryMediaMixin, TestCase):
    def test_healthy_with_a_database_and_the_in_memory_broker(self):
        with self.settings(BROKER_URL=None, SANDBOX_BACKEND="bwrap", STORAGE_MIN_FREE_MB=0):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {
                "status": "ok",
                "database": "ok",
                "broker": "ok",
                "storage": "ok",
                "sandbox": "bwrap",
                "run_limits": execution.run_limits_description(),
                "scheduler": "none running",
            },
        )

    def test_an_active_scheduler_is_reported(self):
        coordinator = coordinator_for_database()
        self.assertTrue(coordinator.try_lead())
        self.addCleanup(coordinator.release)

        response = self.client.get("/healthz")

        self.assertEqual((response.status_code, response.json()["scheduler"]), (200, "active"))

    def test_the_weaker_subprocess_sandbox_is_said_plainly(self):
        with self.settings(BROKER_URL=None, SANDBOX_BACKEND="subprocess"):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.json()["sandbox"].startswith("subprocess (weaker:"))

    @unittest.skipUnless(runner.cgroups_availability()[0], "this machine has no cgroup per run to compare with")
    def test_a_cgroup_per_run_is_said_where_the_worker_can_make_them(self):
        with self.settings(BROKER_URL=None):
            response = self.client.get("/healthz")

        self.assertEqual(response.json()["run_limits"], "a cgroup per run (memory of all its processes, processes)")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to ask as another user")
    def test_a_worker_that_cannot_make_cgroups_says_why_in_healthz_and_the_admin(self):
        # What this machine answers to a worker without root, asked for real; then served as this process's answer.
        asked = subprocess.run(
            [settings.SANDBOX_PYTHON, "-I", os.path.join(settings.BASE_DIR, "runner", "cgroups.py")],
            cwd=settings.BASE_DIR,
            user=65534,
            capture_output=True,
            text=True,
            check=True,
        )
        works, reason = json.loads(asked.stdout)
        self.assertFalse(works)
        self.assertTrue(reason)
        admin = User.objects.create_superuser("root", password="pw")
        self.client.force_login(admin)

        answer = mock.patch.object(runner, "cgroups_availability", return_value=(works, reason))
        with answer, self.settings(BROKER_URL=None, SANDBOX_BACKEND="bwrap"):
            response = self.client.get("/healthz")
            page = self.client.get(reverse("admin:core_parser_add"))

        expected = f"rlimits only (weaker: memory per process, processes per user id): {reason}"
        self.assertEqual(response.json()["run_limits"], expected)
        self.assertContains(page, f"Run limits: {expected}")

    def test_an_unreachable_broker_is_503_with_the_reason(self):
        with self.settings(BROKER_URL="amqp://guest:guest@127.0.0.1:1/%2F"):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["status"], "unavailable")
        self.assertTrue(response.json()["broker"].startswith("unreachable at 127.0.0.1:1: AMQPConnectionError"))

    def test_a_failing_database_is_503_with_the_reason(self):
        with mock.patch.object(connection, "cursor", side_effect=RuntimeError("connection refused")):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["database"], "unreachable: connection refused")


@require(bool(rabbitmq_url()), "needs RabbitMQ: set PARSEQ_TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F")
class RealBrokerHealthTests(TestCase):
    def test_healthy_with_a_real_rabbitmq(self):
        with self.settings(BROKER_URL=rabbitmq_url()):
            response = self.client.get("/healthz")

        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["broker"], "ok")


class StorageHealthTests(TemporaryMediaMixin, TestCase):
    def test_the_storage_probe_leaves_nothing_behind(self):
        self.client.get("/healthz")

        self.assertEqual(default_storage.listdir(STORAGE_PROBE_DIRECTORY), ([], []))

    def test_storage_low_on_space_is_degraded_but_still_serves(self):
        with self.settings(BROKER_URL=None, STORAGE_MIN_FREE_MB=10**12):
            response = self.client.get("/healthz")

        body = response.json()
        self.assertEqual((response.status_code, body["status"]), (200, "degraded"))
        self.assertRegex(
            body["storage"], r"^degraded: \d+ MiB free, under PARSEQ_STORAGE_MIN_FREE_MB \(1000000000000\)$"
        )

    def test_storage_that_cannot_be_written_makes_parseq_unavailable(self):
        # A file where the storage's directory should be: no write can succeed, even as root.
        blocker = os.path.join(self.media_dir, "not-a-directory")
        with open(blocker, "w") as file:
            file.write("x")
        storages = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": {"location": blocker}}}

        with self.settings(BROKER_URL=None, STORAGES=storages):
            response = self.client.get("/healthz")

        self.assertEqual((response.status_code, response.json()["status"]), (503, "unavailable"))
        self.assertTrue(response.json()["storage"].startswith("unwritable: "), response.json()["storage"])
