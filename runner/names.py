"""The rule for result file names (see the script contract)."""

RESERVED_NAMES = frozenset({"error.txt"})
MAX_NAME_BYTES = 255
# Bidirectional controls make a name read as something else (`invoice\u202egpj.exe` shows as invoiceexe.jpg).
BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_control(char: str) -> bool:
    """C0 and C1 controls and DEL: nothing a name shows, and things terminals and logs act on."""
    code = ord(char)
    return code < 32 or 127 <= code <= 159


def shows_as_written(text: str) -> bool:
    """Whether `text` has no control character (C0, DEL, C1) and no bidirectional control: it reads as it is."""
    return not any(_is_control(char) or char in BIDI_CONTROLS for char in text)


def filename_problem(name: object) -> str | None:
    """Return why `name` is not an acceptable result file name, or None if it is."""
    if not isinstance(name, str):
        return f"file names must be str, not {type(name).__name__}"
    if name == "":
        return "a file name is empty"
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator"
    if any(_is_control(char) for char in name):
        return f"file name {name!r} contains a control character"
    if any(char in BIDI_CONTROLS for char in name):
        return f"file name {name!r} contains a bidirectional control character, which makes it read as another"
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
