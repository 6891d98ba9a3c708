"""Shared test fixtures: scripts on disk, temporary media, the in-process worker, real services."""

import functools
import os
import shutil
import sys
import tempfile
import textwrap
import unittest
from contextlib import contextmanager
from urllib.parse import quote

import dramatiq
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection
from django.test import override_settings

from parseq.core.models import Parser
from tests.processes import live_processes_with, wait_until  # noqa: F401 - where most tests import them

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition, reason):
    """Skip a test class when a real service is missing; in CI fail instead, since a skip would hide it."""
    if condition:
        return lambda test_class: test_class
    if IN_CI:

        def failing(test_class):
            test_class.setUp = lambda self: self.fail(f"CI=true but this test {reason}")
            return test_class

        return failing
    return unittest.skip(reason)


@functools.cache
def docker_sandbox_availability():
    """(True, "") when a Docker engine answers and holds the sandbox image (`make images`); else (False, why)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as error:
        return False, f"needs a Docker engine (DOCKER_HOST; .ci/run starts one): {error}"
    image = os.environ.get("PARSEQ_SANDBOX_IMAGE", "parseq-sandbox:latest")
    try:
        client.images.get(image)
    except Exception:
        return False, f"needs the sandbox image {image}: make images"
    return True, ""


def rabbitmq_url():
    return os.environ.get("PARSEQ_TEST_BROKER_URL", "")


def database_url():
    """The URL of the *test* database, for the processes a test starts (workers, schedulers)."""
    db = connection.settings_dict
    credentials = quote(db["USER"], safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{quote(db['NAME'], safe='')}"


def requires_postgresql(test_item):
    reason = "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/parseq"
    return require(connection.vendor == "postgresql", reason)(test_item)


def requires_postgresql_and_rabbitmq(test_item):
    vendor = connection.vendor
    reason = None
    if vendor != "postgresql":
        reason = "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/parseq"
    elif not rabbitmq_url():
        reason = "needs RabbitMQ: set PARSEQ_TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F"
    return require(reason is None, reason)(test_item)


def script(source):
    return textwrap.dedent(source).lstrip().encode("utf-8")


def write_script(directory, source, name="parser.py"):
    path = os.path.join(directory, name)
    with open(path, "wb") as file:
        file.write(script(source))
    return path


def make_parser(source, *, name="demo", filename="demo.py", **fields):
    return Parser.objects.create(name=name, script=ContentFile(script(source), name=filename), **fields)


class TemporaryMediaMixin:
    """Each test class gets its own media directory, removed afterwards."""

    @classmethod
    def setUpClass(cls):
        cls.media_dir = tempfile.mkdtemp(prefix="parseq-test-media-")
        storages = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": cls.media_dir},
            },
        }
        cls._media_override = override_settings(STORAGES=storages, MEDIA_ROOT=cls.media_dir)
        cls._media_override.enable()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._media_override.disable()
        shutil.rmtree(cls.media_dir, ignore_errors=True)


@contextmanager
def in_process_worker(threads=2):
    """A Dramatiq worker on the in-memory broker, as `runparseq` runs one."""
    import parseq.core.tasks  # noqa: F401 - declares the actor

    broker = dramatiq.get_broker()
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=threads)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        # A stopped worker leaves its middleware on the broker; the next one would add a second.
        broker.middleware[:] = [m for m in broker.middleware if type(m).__name__ != "_WorkerMiddleware"]


class ManualClock:
    """A clock that moves only when the test turns it (`advance`): for code taking a `clock=`, instead of sleeping."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def on_failure(report):
    """A test decorator: when the test fails, call `report(test)` first, to show what explains the failure."""

    def decorator(test_method):
        @functools.wraps(test_method)
        def wrapper(self, *args, **kwargs):
            try:
                return test_method(self, *args, **kwargs)
            except unittest.SkipTest:
                raise
            except Exception:
                report(self)
                raise

        return wrapper

    return decorator


def _print_process_logs(test):
    for path in test.process_logs:
        with open(path, encoding="utf-8", errors="replace") as log:
            print(f"\n===== {os.path.basename(path)} =====\n{log.read()}", file=sys.stderr)


# The processes a test started hold the cause of its failure: print the logs listed in `self.process_logs`.
shows_process_logs_on_failure = on_failure(_print_process_logs)
