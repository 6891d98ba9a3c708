from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "parseq.alerts"
    label = "alerts"
    verbose_name = "Parseq alerts"

    def ready(self):
        from parseq.alerts import (
            signals,  # noqa: F401 - connects the receivers
            tasks,  # noqa: F401 - declares the queue (a worker started before any alert consumes it), hands deliveries
        )
