import uuid
from io import StringIO

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
