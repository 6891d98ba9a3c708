"""The admin index's dashboard."""

from django import template
from django.utils import timezone

from parseq.core import selectors

register = template.Library()


@register.inclusion_tag("admin/parseq_dashboard.html", takes_context=True)
def dashboard(context):
    # The user's permissions decide which parts and buttons it shows.
    dashboard = selectors.dashboard(now=timezone.now())
    return {**dashboard, "fingerprint": selectors.live_fingerprint(scope="runs"), "perms": context["perms"]}
