"""What `parseq` prints: plain lines on stdout (or one JSON document with --json), notes and progress on stderr."""

import json
import sys
import time


class Output:
    """Where a command's results, its notes and its progress go.

    Progress is a line redrawn in place on a terminal; elsewhere (a pipe, a CI log) only its changes
    are printed, one line each, so a log stays short and still tells what was waited for.
    """

    def __init__(self, *, as_json=False, stdout=None, stderr=None):
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._drawn = False
        self._last_progress = None

    def line(self, text=""):
        """A line of the plain output (nothing with --json: the JSON document says it all)."""
        if not self.as_json:
            self.clear_progress()
            print(text, file=self.stdout, flush=True)

    def data(self, document):
        """The JSON document of --json."""
        if self.as_json:
            print(json.dumps(document, indent=2, ensure_ascii=False), file=self.stdout, flush=True)

    def note(self, text):
        self.clear_progress()
        print(text, file=self.stderr, flush=True)

    def log(self, chunk):
        """Bytes a script printed, as they were printed: on stdout, or stderr with --json (stdout holds the JSON)."""
        self.clear_progress()
        stream = self.stderr if self.as_json else self.stdout
        stream.flush()
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(chunk)
            buffer.flush()
        else:
            stream.write(chunk.decode("utf-8", errors="replace"))
            stream.flush()

    def progress(self, state, *, since):
        """Show what is waited for: `state` (a run's status, say) and the seconds since `since` (monotonic)."""
        if self._interactive():
            self.stderr.write(f"\r\x1b[K{state} ({time.monotonic() - since:.0f} s)")
            self.stderr.flush()
            self._drawn = True
        elif state != self._last_progress:
            print(state, file=self.stderr, flush=True)
        self._last_progress = state

    def clear_progress(self):
        if self._drawn:
            self.stderr.write("\r\x1b[K")
            self.stderr.flush()
            self._drawn = False

    def _interactive(self):
        return hasattr(self.stderr, "isatty") and self.stderr.isatty()
