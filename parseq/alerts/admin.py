import json

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from parseq.alerts import selectors, services
from parseq.alerts.models import WebhookDelivery
from parseq.core.admin import ParserAdmin
from parseq.core.admin.common import RecordAdmin

LAST_ERROR_CHARS = 120
RECENT_DELIVERIES = 5


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(RecordAdmin):
    """The delivery log: read-only (deliveries go with their runs), except that a failed delivery can be sent again."""

    list_display = [
        "created_time",
        "parser",
        "run_link",
        "event",
        "status",
        "attempts",
        "last_status_code_display",
        "last_error_excerpt",
    ]
    list_filter = ["status", "parser"]
    list_select_related = ["parser"]
    actions = ["retry_delivery"]
    fields = [
        "parser",
        "run_link",
        "event",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "created_time",
        "last_attempt_time",
        "next_attempt_time",
        "delivered_time",
        "payload_display",
    ]
    readonly_fields = fields

    def get_fields(self, request, obj=None):
        # The URL a delivery went to is the parser's webhook URL: a credential, for those who may change parsers.
        if request.user.has_perm("core.change_parser"):
            return self.fields
        return [field for field in self.fields if field != "url"]

    def lookup_allowed(self, lookup, value, request=None):
        # `?url__startswith=` would tell a reader the webhook URL a letter at a time.
        return lookup.split("__")[0] != "url" and super().lookup_allowed(lookup, value, request)

    def has_retry_permission(self, request):
        # Sending again changes a delivery: it takes the model's change permission, which the form never uses.
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.display(description="run")
    def run_link(self, delivery):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:core_run_change", args=[delivery.run_id]), delivery.run_id
        )

    @admin.display(description="last code", ordering="last_status_code")
    def last_status_code_display(self, delivery):
        return delivery.last_status_code or "-"

    @admin.display(description="last error")
    def last_error_excerpt(self, delivery):
        error = delivery.last_error
        return error if len(error) <= LAST_ERROR_CHARS else error[: LAST_ERROR_CHARS - 1] + "…"

    @admin.display(description="payload")
    def payload_display(self, delivery):
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, ensure_ascii=False))

    @admin.action(description="Retry delivery", permissions=["retry"])
    def retry_delivery(self, request, queryset):
        retried = sum(services.retry_delivery(delivery=delivery) for delivery in queryset)
        if retried:
            self.message_user(request, f"{retried} delivery(ies) sent again.", messages.SUCCESS)
        if left := len(queryset) - retried:
            self.message_user(
                request, f"{left} delivery(ies) left alone: only failed ones are retried.", messages.WARNING
            )


@admin.display(description="deliveries")
def webhook_deliveries(parser):
    """The parser's last alert deliveries, on its page."""
    deliveries = selectors.recent_deliveries(parser=parser, limit=RECENT_DELIVERIES)
    return render_to_string("admin/alerts/parser_deliveries.html", {"parser": parser, "deliveries": deliveries})


ParserAdmin.add_panel(webhook_deliveries, section="Failure alerts")
