"""Indexes for the run lists at a million runs: the newest change (the live pages), and the errors' trigrams."""

import logging

from django.db import DatabaseError, migrations, models, transaction

logger = logging.getLogger(__name__)
ERROR_TRIGRAMS = (
    "CREATE INDEX IF NOT EXISTS core_run_error_trigrams ON core_run USING gin (UPPER(error) gin_trgm_ops) "
    "WHERE error <> ''"
)
# Without statistics of UPPER(error), PostgreSQL takes any word for a rare one: a word in 100,000 errors was
# read through the trigrams and sorted (300 ms), where walking the newest runs finds a page of them in 2 ms.
ERROR_STATISTICS = "CREATE STATISTICS IF NOT EXISTS core_run_error_upper ON (UPPER(error)) FROM core_run"


def index_the_errors_trigrams(apps, schema_editor):
    """The search box's `error` words, as Django asks for them (UPPER(error) LIKE UPPER('%word%')), on PostgreSQL.

    pg_trgm is a trusted extension: the database's owner may create it. Where it cannot be had, the
    search still works, by reading every run in error.
    """
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(ERROR_TRIGRAMS)
            schema_editor.execute(ERROR_STATISTICS)  # PostgreSQL 14 and later
    except DatabaseError as error:
        logger.warning("no trigram index for the search of errors (%s): it reads every run in error instead", error)


def drop_the_errors_trigrams(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP STATISTICS IF EXISTS core_run_error_upper")
        schema_editor.execute("DROP INDEX IF EXISTS core_run_error_trigrams")


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0013_first_script_versions"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["updated_time"], name="core_run_updated_time"),
        ),
        migrations.RunPython(index_the_errors_trigrams, drop_the_errors_trigrams),
    ]
