from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "parseq.access"
    label = "access"
    verbose_name = "Parseq sign-ins"

    def ready(self):
        from django.contrib import admin

        from parseq.access import logins  # noqa: F401 - connects the receiver that records failed sign-ins
        from parseq.access.forms import ThrottledAdminLoginForm

        # The admin's login form checks the lockout before it verifies a password.
        admin.site.login_form = ThrottledAdminLoginForm
