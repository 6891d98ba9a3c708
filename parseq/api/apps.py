from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "parseq.api"
    label = "api"
    verbose_name = "Parseq API"
