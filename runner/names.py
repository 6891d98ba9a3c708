"""The rule for result file names (see the script contract)."""

RESERVED_NAMES = frozenset({"error.txt"})
MAX_NAME_BYTES = 255


def filename_problem(name):
    """Return why `name` is not an acceptable result file name, or None if it is."""
    if not isinstance(name, str):
        return f"file names must be str, not {type(name).__name__}"
    if name == "":
        return "a file name is empty"
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return f"file name {name!r} contains a control character"
    if name.startswith("."):
        return f"file name {name!r} starts with a dot"
    if name.lower() in RESERVED_NAMES:
        return f"file name {name!r} is reserved for the run's error"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name {name!r} is not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"file name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes"
    return None
