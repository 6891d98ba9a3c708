from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "parseq.core"
    label = "core"
    verbose_name = "Parseq"

    def ready(self):
        from parseq.core import signals  # noqa: F401 - connects the receivers
