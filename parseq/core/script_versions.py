"""A parser's script versions: appended on every change of its script, compared, and restored as a new one.

Appending happens inside `services.save_parser` (admin, API and `loaddemo` all save through it);
restoring is a save of the old content. Versions are never rewritten: restoring version 1 of
three makes version 4.
"""

import difflib
import os
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db.models import Max

from parseq.core.intake import check_script
from parseq.core.models import ScriptVersion
from parseq.core.validation import MAX_SCRIPT_BYTES

MAX_MESSAGE_CHARS = ScriptVersion._meta.get_field("message").max_length
DIFF_CONTEXT_LINES = 3


def incoming_content(parser):
    """The bytes of the script `parser` is about to store, or None when it keeps the stored one."""
    if not parser.script or parser.script._committed:
        return None
    upload = parser.script.file
    upload.seek(0)
    content = upload.read(MAX_SCRIPT_BYTES + 1)
    upload.seek(0)
    return content


def append(*, parser, content, user, message=""):
    """Add the next version of `parser`'s script (its row is locked by the caller's save): the stored content."""
    latest = parser.script_versions.aggregate(latest=Max("number"))["latest"] or 0
    signed = user is not None and user.is_authenticated
    return ScriptVersion.objects.create(
        parser=parser,
        number=latest + 1,
        source=content.decode("utf-8", errors="replace"),
        filename=os.path.basename(parser.script.name),
        sha256=parser.script_sha256,
        author=user if signed else None,
        author_name=user.get_username() if signed else "",
        message=message[:MAX_MESSAGE_CHARS],
    )


def as_upload(*, version, restricted):
    """Version `version`'s script as an upload for its parser, checked as any new script is (restricted mode
    may have been switched on since). Raises ValidationError with the script's problems.
    """
    upload = ContentFile(version.source.encode("utf-8"), name=version.filename)
    try:
        check_script(uploaded_file=upload, restricted=restricted)
    except ValidationError as error:
        problems = "; ".join(error.messages)
        raise ValidationError(f"Version {version.number} cannot be restored as it is: {problems}") from None
    return upload


def latest_version(*, parser):
    return parser.script_versions.order_by("-number").first()


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "context", "added", "removed" or "hunk" (a hunk's header: where it starts)
    old_number: int | None
    new_number: int | None
    text: str


def diff(*, older, newer):
    """The lines that differ between two versions (with a few lines around them), for a highlighted diff.

    The lines both share at the start and at the end are set aside first, and the matcher treats lines
    found all over (autojunk) as noise: comparing 40 000 equal lines must not take minutes.
    """
    old_lines, new_lines = older.source.splitlines(), newer.source.splitlines()
    head = _common_prefix(old_lines, new_lines)
    tail = _common_prefix(old_lines[head:][::-1], new_lines[head:][::-1])
    middle = difflib.SequenceMatcher(
        a=old_lines[head : len(old_lines) - tail], b=new_lines[head : len(new_lines) - tail], autojunk=True
    )
    opcodes = [("equal", 0, head, 0, head)] if head else []
    opcodes += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle.get_opcodes()]
    if tail:
        opcodes.append(("equal", len(old_lines) - tail, len(old_lines), len(new_lines) - tail, len(new_lines)))
    matcher = _Opcodes(opcodes)
    lines = []
    for group in matcher.get_grouped_opcodes(DIFF_CONTEXT_LINES):
        first_old, first_new = group[0][1], group[0][3]
        where = f"line {first_new + 1}" + (f" (line {first_old + 1} before)" if first_old != first_new else "")
        lines.append(DiffLine("hunk", first_old + 1, first_new + 1, where))
        for tag, old_start, old_end, new_start, new_end in group:
            if tag == "equal":
                lines += [
                    DiffLine("context", old_start + offset + 1, new_start + offset + 1, old_lines[old_start + offset])
                    for offset in range(old_end - old_start)
                ]
                continue
            lines += [DiffLine("removed", number + 1, None, old_lines[number]) for number in range(old_start, old_end)]
            lines += [DiffLine("added", None, number + 1, new_lines[number]) for number in range(new_start, new_end)]
    return lines


def _common_prefix(a, b):
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


class _Opcodes(difflib.SequenceMatcher):
    """A matcher whose opcodes are given: get_grouped_opcodes() groups them with their context."""

    def __init__(self, opcodes):
        super().__init__()
        self.opcodes = opcodes or [("equal", 0, 0, 0, 0)]

    def get_opcodes(self):
        return self.opcodes
