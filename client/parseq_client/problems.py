"""What can go wrong on this side, and how text from elsewhere is made safe to print."""

import re

# C0 and C1 controls (newlines too), DEL, and bidirectional overrides: text from elsewhere must not rewrite the
# user's terminal, nor add lines that look like the client's own.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class LocalProblem(Exception):
    """An argument, a file or a setting on this side that cannot be used as it is (exit status 2)."""


def printable(text):
    """`text` (from a server, or a file's name) on one line, its control characters shown as `?`."""
    return CONTROLS.sub("?", str(text))


def seconds(value):
    """A duration the server gave, as `1.5 s`; `-` when it gave none (or no number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} s"
    return "-"
