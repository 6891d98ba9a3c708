from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "parseq.scheduling"
    label = "scheduling"
    verbose_name = "Parseq scheduling"

    def ready(self):
        from parseq.scheduling import signals  # noqa: F401 - connects the receivers
