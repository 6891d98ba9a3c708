from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "parseq.core"
    label = "core"
    verbose_name = "Parseq"

    def ready(self):
        from django.conf import settings

        import runner
        from parseq.core import (
            signals,  # noqa: F401 - connects the receivers
            tasks,  # noqa: F401 - declares the actor, and hands enqueued runs to it (events.runs_enqueued)
        )
        from parseq.env import ConfigurationError

        if settings.SANDBOX_BACKEND == "bwrap" and not runner.bwrap_works():
            raise ConfigurationError(
                "PARSEQ_SANDBOX is bwrap, but bubblewrap cannot make a jail here "
                "(install the bubblewrap package; unprivileged user namespaces must be allowed)"
            )
