"""A parser's script coming in, from the admin's form, the API or the demo loader: one set of rules.

A script comes as an uploaded file or as text (the admin's editor, the API's `script_text`),
never both; a new parser needs one. Before it is saved a new script is checked, and so is
the stored one when restricted mode is switched on.
"""

import codecs
import os
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.text import slugify

from parseq.core.models import sha256_of
from parseq.core.validation import MAX_SCRIPT_BYTES, Problem, validate_script

BOTH_GIVEN = "Give the script as a file or as text, not both."
NONE_GIVEN = "A script is required: a .py file that defines parse(), uploaded or written as text."


def incoming_script(*, upload, text, parser, parser_name, restricted):
    """The script a form or a request brings, checked; None when the stored script stays as it is.

    `upload` is the uploaded file and `text` the source as text (each None when not given);
    `parser` is the parser as saved (None, or unsaved, for a new one); `restricted` is the
    restricted mode it will have. Raises ValidationError({field: messages}), the field being
    `script` or `script_text`.
    """
    if upload is not None and text is not None:
        raise ValidationError({"script_text": BOTH_GIVEN})
    script = script_from_text(text=text, parser_name=parser_name) if text is not None else without_bom(upload)
    stored = parser.script if parser is not None and parser.pk and parser.script else None
    if script is None and stored is None:
        raise ValidationError({"script": NONE_GIVEN})
    newly_restricted = restricted and stored is not None and not parser.restricted
    to_check = script or (stored if newly_restricted else None)
    if to_check is not None:
        try:
            check_script(uploaded_file=to_check, restricted=restricted)
        except ValidationError as error:
            raise ValidationError({"script_text" if text is not None else "script": error.messages}) from None
    return script


def check_script(*, uploaded_file, restricted):
    """Raise ValidationError listing every way the uploaded script breaks the contract."""
    problems = problems_of(uploaded_file=uploaded_file, restricted=restricted)
    if problems:
        raise ValidationError([str(problem) for problem in problems])


@dataclass(frozen=True)
class Verdict:
    """What a save would make of a script: its problems (none: it would be taken) and the hash it would have."""

    problems: list[Problem]
    sha256: str

    @property
    def valid(self):
        return not self.problems


def judge_script(*, text, parser_name, restricted):
    """What a save would make of a script given as text, without saving anything: a Verdict.

    The API's `check`, which `parseq check` and `parseq push` ask before saving.
    """
    script = script_from_text(text=text, parser_name=parser_name)
    return Verdict(problems=problems_of(uploaded_file=script, restricted=restricted), sha256=sha256_of(script))


def problems_of(*, uploaded_file, restricted):
    uploaded_file.seek(0)
    content = uploaded_file.read(MAX_SCRIPT_BYTES + 1)
    uploaded_file.seek(0)
    name, size = os.path.basename(uploaded_file.name), uploaded_file.size
    return validate_script(filename=name, content=content, size=size, restricted=restricted)


def script_from_text(*, text, parser_name):
    """A script written as text, as an upload named after its parser."""
    filename = f"{slugify(parser_name).replace('-', '_') or 'parser'}.py"
    return SimpleUploadedFile(filename, text.removeprefix("\ufeff").encode("utf-8"), content_type="text/x-python")


def without_bom(upload):
    """The upload without the byte order mark that Windows editors (Notepad) put before UTF-8 text, if it has one.

    Python reads a script with one, but the restricted policy's compiler and the editor would not.
    """
    if upload is None:
        return None
    upload.seek(0)
    content = upload.read(MAX_SCRIPT_BYTES + 1)
    upload.seek(0)
    if not content.startswith(codecs.BOM_UTF8) or upload.size > MAX_SCRIPT_BYTES:
        return upload  # a script too large is refused as it is
    return SimpleUploadedFile(upload.name, content[len(codecs.BOM_UTF8) :], content_type="text/x-python")


def script_source(*, parser):
    """The parser's script as text, for showing and editing; undecodable bytes are shown replaced."""
    # Through the storage, not the field: closing the field's file would break a form that checks it next.
    with parser.script.storage.open(parser.script.name, "rb") as source:
        return source.read(MAX_SCRIPT_BYTES + 1).decode("utf-8", errors="replace")


def refused_upload_text(upload):
    """A refused upload as text for the editor; None when it is no text to edit (too large, not UTF-8)."""
    upload.seek(0)
    content = upload.read(MAX_SCRIPT_BYTES + 1)
    upload.seek(0)
    if len(content) > MAX_SCRIPT_BYTES or b"\0" in content:
        return None
    try:
        return content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None
