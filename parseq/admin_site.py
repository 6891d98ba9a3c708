"""The admin site, with Parseq's own apps first in its lists and no "Recent actions" box (the audit trail
says who did what, by API too). Above the apps, as urls.py is."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class ParseqAdminSite(admin.AdminSite):
    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        # Parseq's apps first, the core leading; Django's and the libraries' (tokens, APScheduler) after them.
        return sorted(apps, key=lambda app: (app["app_label"] != "core", not app["name"].startswith("Parseq")))


class ParseqAdminConfig(AdminConfig):
    default_site = "parseq.admin_site.ParseqAdminSite"
