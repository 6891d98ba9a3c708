"""The admin index's dashboard."""

from django import template
from django.utils import timezone

from parseq.core import selectors

register = template.Library()


@register.inclusion_tag("admin/parseq_dashboard.html")
def dashboard():
    return {**selectors.dashboard(now=timezone.now()), "fingerprint": selectors.live_fingerprint(scope="runs")}
