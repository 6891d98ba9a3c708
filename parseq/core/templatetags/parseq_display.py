"""Run badges and durations in templates, drawn as in the admin's lists (display.py)."""

from django import template

from parseq.core import display

register = template.Library()


@register.simple_tag
def status_badge(run):
    return display.status_badge(run)


@register.simple_tag
def run_duration(run):
    return display.duration(run)
