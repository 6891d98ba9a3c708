"""What the core's admin pages share."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html


class RecordAdmin(admin.ModelAdmin):
    """Pages of records nobody adds, changes or deletes by hand (the audit trail, the alert deliveries)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows and their pages: a list of a million runs says "more than 10,000" (its
    pagination.html) rather than counting them all for every page; filters and searches narrow it.
    """

    CAP = 10_000

    @cached_property
    def count(self):
        return self.object_list.order_by()[: self.CAP + 1].count()  # in no order: the first CAP + 1 found


def owned_objects_go_along(self, objs, request):
    """As the admin's, but what the objects own (a parser's runs, a run's alert deliveries) needs no permission
    of its own: deleting the owner is permission enough, as in the API.
    """
    deleted, counts, _, protected = admin.ModelAdmin.get_deleted_objects(self, objs, request)
    return deleted, counts, set(), protected


def run_link(run):
    """A run's id, linked to its page: for messages."""
    return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[run.run_id]), run.run_id)
