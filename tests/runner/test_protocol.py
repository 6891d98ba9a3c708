"""The parent's reading of the result channel trusts nothing the child sends."""

import base64
import json
import os
import tempfile
import unittest

from runner import Limits
from runner.protocol import (
    MAX_LINE_BYTES,
    LimitExceeded,
    ProtocolViolation,
    ResultReader,
    ScriptReportedError,
)


def line(**message):
    return json.dumps(message).encode() + b"\n"


def data(content):
    return line(kind="data", data=base64.b64encode(content).decode())


class ResultReaderTests(unittest.TestCase):
    def setUp(self):
        self.tempdir = tempfile.TemporaryDirectory()
        self.addCleanup(self.tempdir.cleanup)
        self.reader = ResultReader(self.tempdir.name, Limits(result_bytes=1000, result_files=3))

    def test_chunks_split_anywhere_make_up_the_files(self):
        stream = line(kind="file", name="a.bin") + data(b"\x00\x01") + data(b"\x02") + line(kind="done")

        for start in range(0, len(stream), 7):
            self.reader.feed(stream[start : start + 7])
        self.reader.finish()

        self.assertTrue(self.reader.done)
        self.assertEqual([(f.name, f.size) for f in self.reader.files], [("a.bin", 3)])
        with open(os.path.join(self.tempdir.name, "a.bin"), "rb") as file:
            self.assertEqual(file.read(), b"\x00\x01\x02")

    def test_malformed_messages_are_protocol_violations(self):
        cases = {
            "not json": b"{oops\n",
            "no kind": line(name="x"),
            "unknown kind": line(kind="launch"),
            "data before a file": data(b"x"),
            "bad base64": line(kind="file", name="a") + line(kind="data", data="***"),
            "data not a string": line(kind="file", name="a") + line(kind="data", data=5),
            "a file sent twice": line(kind="file", name="a") + line(kind="file", name="a"),
            "anything after done": line(kind="done") + line(kind="done"),
        }
        for case, stream in cases.items():
            with self.subTest(case=case):
                reader = ResultReader(tempfile.mkdtemp(dir=self.tempdir.name), Limits())
                with self.assertRaises(ProtocolViolation):
                    reader.feed(stream)

    def test_an_endless_line_is_refused_before_it_fills_memory(self):
        with self.assertRaisesRegex(ProtocolViolation, "too long"):
            for _ in range(MAX_LINE_BYTES // 65536 + 2):
                self.reader.feed(b"x" * 65536)

    def test_a_channel_that_ends_mid_message_is_a_violation(self):
        self.reader.feed(b'{"kind": "do')

        with self.assertRaises(ProtocolViolation):
            self.reader.finish()

    def test_limits_on_size_and_count_hold_across_chunks_and_files(self):
        with self.assertRaisesRegex(LimitExceeded, "result larger than 1000 bytes"):
            self.reader.feed(line(kind="file", name="a") + data(b"x" * 600) + line(kind="file", name="b"))
            self.reader.feed(data(b"x" * 401))
        reader = ResultReader(tempfile.mkdtemp(dir=self.tempdir.name), Limits(result_files=2))
        with self.assertRaisesRegex(LimitExceeded, "more than 2 result files"):
            reader.feed(b"".join(line(kind="file", name=f"{i}") for i in range(3)))

    def test_a_bad_name_is_the_scripts_error_and_nothing_is_created(self):
        with self.assertRaisesRegex(ScriptReportedError, "path separator"):
            self.reader.feed(line(kind="file", name="../escape"))

        self.assertEqual(os.listdir(self.tempdir.name), [])
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.tempdir.name), "escape")))

    def test_an_existing_file_in_the_output_directory_is_never_overwritten(self):
        with open(os.path.join(self.tempdir.name, "a.txt"), "w") as file:
            file.write("mine")

        with self.assertRaises(FileExistsError):
            self.reader.feed(line(kind="file", name="a.txt"))

    def test_discard_removes_everything_written(self):
        self.reader.feed(line(kind="file", name="a") + data(b"1") + line(kind="file", name="b") + data(b"2"))

        self.reader.discard()

        self.assertEqual(os.listdir(self.tempdir.name), [])
