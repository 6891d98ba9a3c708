"""Result files read on the run page: CSV and TSV as tables, JSON pretty-printed, text and Markdown as text.

Only a bounded prefix of a file is read from storage (PREVIEW_BYTES), so a large result costs no more
than a small one; nothing in a file is run or rendered as HTML (the template escapes every cell and
line). Pictures keep their thumbnails (display.is_previewable).
"""

import csv
import io
import json
import logging
from dataclasses import dataclass, field

from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)
PREVIEW_BYTES = 64 * 1024
PREVIEW_ROWS = 100
PREVIEWS_PER_RUN = 5  # a run with a thousand files does not read a thousand prefixes for one page
SNIFF_CHARS = 2048
TABLE_TYPES = {"text/csv": ",", "text/tab-separated-values": "\t"}
JSON_TYPES = ("application/json",)
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")


@dataclass
class Preview:
    name: str
    kind: str  # "table", "json" or "text"
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    partial: bool = False  # only a prefix of the file is shown


def previews(run):
    """Previews of the first PREVIEWS_PER_RUN result files of `run` that have one."""
    shown = []
    for entry in run.files:
        if len(shown) == PREVIEWS_PER_RUN:
            break
        if _kind(entry["content_type"]) is None:
            continue
        try:
            shown.append(preview(name=entry["name"], content_type=entry["content_type"], prefix=_prefix(run, entry)))
        except OSError:  # storage away, or the file gone: the page still shows, without this preview
            logger.warning("could not read %s of run %s for its preview", entry["name"], run.run_id)
    return shown


def preview(*, name, content_type, prefix):
    """The Preview of a file of `content_type` from its first bytes (`prefix`, at most PREVIEW_BYTES + 1)."""
    partial = len(prefix) > PREVIEW_BYTES
    text = prefix[:PREVIEW_BYTES].decode("utf-8", errors="replace")
    kind = _kind(content_type)
    if kind == "table":
        if partial:  # the last line may be cut short
            text = text[: text.rfind("\n") + 1] or text
        try:
            header, rows = _table(text, delimiter=TABLE_TYPES[content_type])
            return Preview(name=name, kind=kind, header=header, rows=rows, partial=partial or len(rows) == PREVIEW_ROWS)
        except csv.Error:
            pass  # not a table after all (a bare carriage return in a field, say): shown as text
    if kind == "json" and not partial:
        try:
            return Preview(name=name, kind=kind, text=json.dumps(json.loads(text), indent=2, ensure_ascii=False))
        except (ValueError, RecursionError):
            pass  # not JSON after all, or nested deeper than Python parses: shown as text
    return Preview(name=name, kind="text", text=text, partial=partial)


def _kind(content_type):
    if content_type in TABLE_TYPES:
        return "table"
    if content_type in JSON_TYPES:
        return "json"
    if content_type in TEXT_TYPES:
        return "text"
    return None


def _prefix(run, entry):
    with default_storage.open(run.stored_path(entry["name"]), "rb") as stored:
        return stored.read(PREVIEW_BYTES + 1)


def _table(text, *, delimiter):
    """(header, up to PREVIEW_ROWS rows); the header is [] when the first row looks like data."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = [row for _, row in zip(range(PREVIEW_ROWS + 1), reader, strict=False)]
    try:
        # A small sample: the sniffer's expressions take seconds on some texts a script could write.
        has_header = csv.Sniffer().has_header(text[:SNIFF_CHARS])
    except csv.Error:
        has_header = False
    if has_header and rows:
        return rows[0], rows[1 : PREVIEW_ROWS + 1]
    return [], rows[:PREVIEW_ROWS]
