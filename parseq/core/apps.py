from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "parseq.core"
    label = "core"
    verbose_name = "Parseq"
