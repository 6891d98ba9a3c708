"""What the core's admin pages share."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html


class RecordAdmin(admin.ModelAdmin):
    """Pages of records nobody adds, changes or deletes by hand (the audit trail, the alert deliveries)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def owned_objects_go_along(self, objs, request):
    """As the admin's, but what the objects own (a parser's runs, a run's alert deliveries) needs no permission
    of its own: deleting the owner is permission enough, as in the API.
    """
    deleted, counts, _, protected = admin.ModelAdmin.get_deleted_objects(self, objs, request)
    return deleted, counts, set(), protected


def run_link(run):
    """A run's id, linked to its page: for messages."""
    return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[run.run_id]), run.run_id)
