"""The result channel: JSON lines, with file contents in base64 chunks of at most CHUNK_BYTES.

The child sends, for each file, {"kind": "file", "name": ...} followed by any number
of {"kind": "data", "data": <base64>}, and at the end {"kind": "done"}; or
{"kind": "error", "message": ...} when the script failed. The parent writes each
chunk to disk as it arrives, so neither side's channel buffer grows with a file's
size. Nothing the child sends is trusted: names, sizes and counts are checked here.
"""

import base64
import binascii
import contextlib
import json
import os
from typing import IO, Any

from runner.names import filename_problem
from runner.outcome import Limits, ResultFile

CHUNK_BYTES = 1024 * 1024
# A data line is 4/3 of its chunk plus a little JSON around it.
MAX_LINE_BYTES = CHUNK_BYTES * 4 // 3 + 4096


class ProtocolViolation(Exception):
    """The child sent something that is not a well-formed result."""


class LimitExceeded(Exception):
    """The result is bigger than the run's limits allow."""


class ScriptReportedError(Exception):
    """The child reported that the script failed; the message is for the user."""


class ResultReader:
    """Consumes bytes from the result channel and writes the files into `out_dir`."""

    def __init__(self, out_dir: str, limits: Limits) -> None:
        self.out_dir = out_dir
        self.limits = limits
        self.buffer = bytearray()
        self.files: list[ResultFile] = []
        self.current: IO[bytes] | None = None
        self.total_bytes = 0
        self.done = False

    def feed(self, chunk: bytes) -> None:
        search_from = len(self.buffer)
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n", search_from)
            if end < 0:
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            search_from = 0
            self.handle_line(line)
        if len(self.buffer) > MAX_LINE_BYTES:
            raise ProtocolViolation("a message on the result channel is too long")

    def finish(self) -> None:
        if self.buffer:
            raise ProtocolViolation("the result channel ended in the middle of a message")

    def handle_line(self, line: bytes) -> None:
        if self.done:
            raise ProtocolViolation("data after the end of the result")
        try:
            message = json.loads(line)
            kind = message["kind"]
        except (ValueError, TypeError, KeyError):
            raise ProtocolViolation("a message on the result channel is not valid JSON") from None
        if kind == "file":
            self.open_file(message.get("name"))
        elif kind == "data":
            self.append(message.get("data"))
        elif kind == "done":
            self.close_current()
            self.done = True
        elif kind == "error":
            raise ScriptReportedError(str(message.get("message", "the script failed")))
        else:
            raise ProtocolViolation(f"unknown message kind {kind!r}")

    def open_file(self, name: Any) -> None:
        self.close_current()
        problem = filename_problem(name)
        if problem:
            raise ScriptReportedError(f"parse() returned a bad file name: {problem}")
        if any(existing.name == name for existing in self.files):
            raise ProtocolViolation(f"file {name!r} was sent twice")
        if len(self.files) >= self.limits.result_files:
            raise LimitExceeded(f"more than {self.limits.result_files} result files")
        # O_EXCL: never follow or overwrite anything already in the output directory.
        fd = os.open(os.path.join(self.out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.files.append(ResultFile(name=name, size=0))
        self.current = os.fdopen(fd, "wb")

    def append(self, data: Any) -> None:
        if self.current is None:
            raise ProtocolViolation("file data before any file name")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ProtocolViolation(f"the data of {self.files[-1].name!r} is not valid base64") from None
        self.total_bytes += len(content)
        if self.total_bytes > self.limits.result_bytes:
            raise LimitExceeded(f"result larger than {format_size(self.limits.result_bytes)}")
        self.current.write(content)
        last = self.files[-1]
        self.files[-1] = ResultFile(name=last.name, size=last.size + len(content))

    def close_current(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def discard(self) -> None:
        """Remove every file written so far: a failed run keeps none."""
        self.close_current()
        for result_file in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.out_dir, result_file.name))
        self.files = []


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"
