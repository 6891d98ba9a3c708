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
