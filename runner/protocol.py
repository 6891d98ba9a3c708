"""The parent's side of the result channel: JSON lines, one per file, base64 content.

Files are decoded and written to disk as their lines arrive, so a run's result is
never held in memory whole. Nothing the child sends is trusted: names, sizes and
counts are checked here again.
"""

import base64
import binascii
import contextlib
import json
import os

from runner.names import filename_problem
from runner.outcome import ResultFile


class ProtocolViolation(Exception):
    """The child sent something that is not a well-formed result."""


class LimitExceeded(Exception):
    """The result is bigger than the run's limits allow."""


class ScriptReportedError(Exception):
    """The child reported that the script failed; the message is for the user."""


class ResultReader:
    """Consumes bytes from the result channel and writes the files into `out_dir`."""

    def __init__(self, out_dir, limits):
        self.out_dir = out_dir
        self.limits = limits
        self.buffer = bytearray()
        self.files = []
        self.total_bytes = 0
        self.done = False
        # A base64 line is 4/3 of its file plus a little JSON around it.
        self.max_line = limits.result_bytes * 4 // 3 + 64 * 1024

    def feed(self, chunk):
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self.handle_line(line)
        if len(self.buffer) > self.max_line:
            raise LimitExceeded(f"result larger than {format_size(self.limits.result_bytes)}")

    def finish(self):
        if self.buffer:
            raise ProtocolViolation("the result channel ended in the middle of a message")

    def handle_line(self, line):
        if self.done:
            raise ProtocolViolation("data after the end of the result")
        try:
            message = json.loads(line)
            kind = message["kind"]
        except (ValueError, TypeError, KeyError):
            raise ProtocolViolation("a message on the result channel is not valid JSON") from None
        if kind == "file":
            self.write_file(message)
        elif kind == "done":
            self.done = True
        elif kind == "error":
            raise ScriptReportedError(str(message.get("message", "the script failed")))
        else:
            raise ProtocolViolation(f"unknown message kind {kind!r}")

    def write_file(self, message):
        name, data = message.get("name"), message.get("data")
        problem = filename_problem(name)
        if problem:
            raise ScriptReportedError(f"parse() returned a bad file name: {problem}")
        if not isinstance(data, str):
            raise ProtocolViolation(f"file {name!r} has no data")
        if any(existing.name == name for existing in self.files):
            raise ProtocolViolation(f"file {name!r} was sent twice")
        if len(self.files) >= self.limits.result_files:
            raise LimitExceeded(f"more than {self.limits.result_files} result files")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolViolation(f"file {name!r} is not valid base64") from None
        self.total_bytes += len(content)
        if self.total_bytes > self.limits.result_bytes:
            raise LimitExceeded(f"result larger than {format_size(self.limits.result_bytes)}")
        # O_EXCL: never follow or overwrite anything already in the output directory.
        fd = os.open(os.path.join(self.out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        self.files.append(ResultFile(name=name, size=len(content)))

    def discard(self):
        """Remove every file written so far: a failed run keeps none."""
        for result_file in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.out_dir, result_file.name))
        self.files = []


def format_size(size):
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"
