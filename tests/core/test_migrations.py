import uuid
from importlib import import_module
from io import StringIO

from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from parseq.core.models import Run
from tests.helpers import TemporaryMediaMixin, make_parser


class MigrationTests(TemporaryMediaMixin, TestCase):
    def test_the_models_have_no_changes_missing_from_the_migrations(self):
        output = StringIO()
        try:
            call_command("makemigrations", "--check", "--dry-run", stdout=output)
        except SystemExit:
            self.fail(f"makemigrations found changes without a migration:\n{output.getvalue()}")

    def test_code_from_before_run_attempts_can_still_insert_runs_and_parsers_during_an_upgrade(self):
        # The columns added for attempts have database defaults: an INSERT that names none of them works.
        parser = make_parser("def parse():\n    return {}\n")
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO core_run (run_id, parser_id, status, trigger, created_time, updated_time, error, log,"
                " files, script_sha256, parser_settings) VALUES (%s, %s, 'enqueued', 'manual', %s, %s, '', '',"
                " '[]', '', '{}')",
                [uuid.uuid4().hex, parser.pk, timezone.now(), timezone.now()],
            )

        run = Run.objects.get()
        self.assertEqual((run.attempt, run.worker, run.attempts, run.parser.max_attempts), (1, "", [], 2))

    def test_each_parsers_stored_script_becomes_its_version_one_and_the_runs_that_ran_it_refer_to_it(self):
        parser = make_parser("def parse():\n    return {}\n")
        ran_it = Run.objects.create(parser=parser, script_sha256=parser.script_sha256)
        ran_another = Run.objects.create(parser=parser, script_sha256="0" * 64)
        first_versions = import_module("parseq.core.migrations.0013_first_script_versions").first_versions

        first_versions(apps, schema_editor=None)
        first_versions(apps, schema_editor=None)  # again: nothing more

        version = parser.script_versions.get()
        self.assertEqual(
            (version.number, version.source, version.filename), (1, "def parse():\n    return {}\n", "demo.py")
        )
        self.assertEqual(version.sha256, parser.script_sha256)
        self.assertEqual(Run.objects.get(pk=ran_it.pk).script_version, version)
        self.assertIsNone(Run.objects.get(pk=ran_another.pk).script_version)
