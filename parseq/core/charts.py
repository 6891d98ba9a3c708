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


def rectangles(columns, *, scale_to=None, width=WIDTH, height=HEIGHT):
    """The rectangles of stacked `columns` side by side, the tallest (or `scale_to`) filling the height."""
    if not columns:
        return []
    tallest = scale_to or max(sum(value for value, _ in column.segments) for column in columns) or 1
    step = width / len(columns)
    drawn = []
    for position, column in enumerate(columns):
        bottom = height
        for value, status in column.segments:
            if value <= 0:
                continue
            size = max(value / tallest * height, 1)  # a tiny run stays visible
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
