"""Runs in templates, drawn as in the admin's lists (display.py): badges, durations, times, sizes."""

from django import template

from parseq.core import display

register = template.Library()


@register.simple_tag
def status_badge(run):
    return display.status_badge(run)


@register.simple_tag
def run_duration(run):
    return display.duration(run)


@register.filter
def moment(value):
    return display.moment(value) if value else "-"


@register.filter
def last_line(text):
    return display.last_line(text)


@register.filter
def human_size(size):
    return display.human_size(size)


@register.filter
def is_previewable(entry):
    return display.is_previewable(entry)
