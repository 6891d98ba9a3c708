"""Small bar charts drawn on the server as SVG (no script, no library, nothing from a CDN).

A chart is a list of columns, each a stack of (value, status) segments with a title shown on hover
and an optional link; this module works out the rectangles, and the template
admin/core/charts/bars.html draws them, coloured by the status's CSS class.
"""

from dataclasses import dataclass

WIDTH, HEIGHT = 600, 120
GAP = 2  # between columns


@dataclass
class Rectangle:
    x: float
    y: float
    width: float
    height: float
    status: str
    title: str
    href: str = ""


@dataclass
class Column:
    segments: list  # [(value, status)], bottom first
    title: str
    href: str = ""


def tallest(columns):
    """The largest stack of `columns` (0 for none)."""
    return max((sum(value for value, _ in column.segments) for column in columns), default=0)


def rectangles(columns, *, scale_to=None, slots=None, width=WIDTH, height=HEIGHT):
    """The rectangles of stacked `columns` side by side, the tallest (or `scale_to`) filling the height.

    With `slots`, the chart has room for that many columns and fewer keep their width, to the right.
    """
    if not columns:
        return []
    top = scale_to or tallest(columns) or 1
    step = width / max(len(columns), slots or 0)
    first = max((slots or 0) - len(columns), 0)
    drawn = []
    for position, column in enumerate(columns, start=first):
        bottom = height
        for value, status in column.segments:
            if value <= 0:
                continue
            size = max(value / top * height, 1)  # a tiny run stays visible
            drawn.append(
                Rectangle(
                    x=round(position * step, 2),
                    y=round(bottom - size, 2),
                    width=round(max(step - GAP, 1), 2),
                    height=round(size, 2),
                    status=status,
                    title=column.title,
                    href=column.href,
                )
            )
            bottom -= size
    return drawn
