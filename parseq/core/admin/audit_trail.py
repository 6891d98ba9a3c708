"""The audit trail's pages."""

from django.contrib import admin
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils.html import format_html

from parseq.core.admin.common import RecordAdmin
from parseq.core.models import AuditEntry, Parser


@admin.register(AuditEntry)
class AuditEntryAdmin(RecordAdmin):
    """The audit trail: read-only for everyone, superusers included; entries outlive their parsers."""

    list_display = ["time", "username", "action", "source", "parser_link", "run_link", "what"]
    list_filter = ["action", "source"]
    search_fields = ["parser_name", "username"]
    date_hierarchy = "time"
    fields = ["time", "username", "action", "source", "parser_link", "run_link", "what"]
    readonly_fields = fields

    def get_queryset(self, request):
        # Whether each entry's parser still exists, in the list's one query: a deleted one's entries keep its id.
        return (
            super()
            .get_queryset(request)
            .annotate(parser_exists=Exists(Parser.objects.filter(pk=OuterRef("parser_id"))))
        )

    @admin.display(description="parser", ordering="parser_name")
    def parser_link(self, entry):
        if not entry.parser_exists:
            return f"{entry.parser_name} (deleted)"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:core_parser_change", args=[entry.parser_id]), entry.parser_name
        )

    @admin.display(description="run")
    def run_link(self, entry):
        if not entry.run_id:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:core_run_change", args=[entry.run_id]), entry.run_id)

    @admin.display(description="what changed")
    def what(self, entry):
        return ", ".join(entry.fields) or "-"
