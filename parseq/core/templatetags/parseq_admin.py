"""The admin index's dashboard."""

from django import template
from django.utils import timezone

from parseq.core import history, selectors

register = template.Library()


@register.inclusion_tag("admin/parseq_dashboard.html", takes_context=True)
def dashboard(context):
    # The user's permissions decide which parts and buttons it shows.
    now = timezone.now()
    dashboard = selectors.dashboard(now=now)
    return {
        **dashboard,
        "chart": history.dashboard_chart(now=now),
        "fingerprint": selectors.live_fingerprint(scope="runs"),
        "perms": context["perms"],
    }
