from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "parseq.core"
    label = "core"
    verbose_name = "Parseq"

    def ready(self):
        from parseq.core import (
            execution,
            signals,  # noqa: F401 - connects the receivers
            tasks,  # noqa: F401 - declares the actor, and hands enqueued runs to it (events.runs_enqueued)
        )

        execution.refuse_an_unusable_sandbox()
        _bound_database_waits()


def _bound_database_waits():
    """Web, workers, schedulers and tests alike: a frozen database holds nothing for long (parseq/database.py)."""
    from django.conf import settings
    from django.db import connections

    if any(connections[alias].vendor == "postgresql" for alias in connections):
        from parseq.database import bound_waits

        bound_waits(seconds=settings.DATABASE_TIMEOUT)
