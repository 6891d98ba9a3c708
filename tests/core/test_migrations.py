from io import StringIO

from django.core.management import call_command
from django.test import TestCase


class MigrationTests(TestCase):
    def test_the_models_have_no_changes_missing_from_the_migrations(self):
        output = StringIO()
        try:
            call_command("makemigrations", "--check", "--dry-run", stdout=output)
        except SystemExit:
            self.fail(f"makemigrations found changes without a migration:\n{output.getvalue()}")
