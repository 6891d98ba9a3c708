"""Talking to a Parseq server over its REST API (the operations of /api/schema/), with the standard library only.

Every failure becomes a `ServerProblem` whose message names the cause: the server unreachable, the
token refused, a permission missing (the server names it), no such object, the server's own trouble.
"""

import base64
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from parseq_client import __version__
from parseq_client.problems import printable

# Seconds for a whole answer (not a download, which may be large): PARSEQ_TIMEOUT, else this.
TIMEOUT_SECONDS = 30
# No answer of Parseq's API comes near this (a page of 500 runs, a log); a larger one is not Parseq's.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
USER_AGENT = f"parseq-client/{__version__}"


class ServerProblem(Exception):
    """The server could not do what was asked; the message says why, for a person to read."""

    def __init__(self, message, *, status=None, errors=None):
        super().__init__(message)
        self.status = status
        self.errors = errors or {}


class UnexpectedAnswer(ServerProblem):
    """An answer that is not what Parseq's API gives: another server, or another version of Parseq."""


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects within the server only: urllib would send the token along to wherever a redirect points."""

    def redirect_request(self, request, fp, code, message, headers, new_url):
        origin = urllib.parse.urlsplit(request.full_url)[:2]
        if urllib.parse.urlsplit(new_url)[:2] != origin:
            raise ServerProblem(
                f"the server redirected elsewhere ({printable(new_url)}); not following it with your token"
            )
        return super().redirect_request(request, fp, code, message, headers, new_url)


OPENER = urllib.request.build_opener(SameOriginRedirects)


class Answer:
    """One response: its status, headers and body."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise UnexpectedAnswer("the server's answer is not JSON") from None


class Server:
    """A Parseq server at `url`, as the user with `token` (or `username` and `password`, for `login`)."""

    def __init__(self, url, *, token=None, username=None, password=None, timeout=TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.token, self.username, self.password = token, username, password
        self.timeout = timeout

    def get(self, path, **query):
        return self.call("GET", path, query=query).json()

    def post(self, path, body=None):
        return self.call("POST", path, body=body).json()

    def patch(self, path, body):
        return self.call("PATCH", path, body=body).json()

    def call(self, method, path, *, query=None, body=None):
        """The answer to one request, whole within the timeout; a ServerProblem for any status from 400 on, an
        answer too large or too slow, or none at all."""
        deadline = time.monotonic() + self.timeout
        chunks, size = [], 0
        with self._open(method, path, query=query, body=body) as response:
            while chunk := response.read1(64 * 1024):  # what came, so that a trickle meets the deadline too
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise UnexpectedAnswer(f"the server's answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise ServerProblem(f"the server sent no whole answer in {self.timeout} s (PARSEQ_TIMEOUT)")
        return Answer(response.status, response.headers, b"".join(chunks))

    def download(self, url, destination):
        """Stream the file at `url` (an address the server gave) to the path `destination`; its size in bytes."""
        if not isinstance(url, str) or not url.startswith(self.url + "/"):
            raise ServerProblem(f"the server linked a file elsewhere ({printable(url)}); not following it")
        directory = os.path.dirname(destination) or "."
        descriptor, partial = tempfile.mkstemp(prefix=".parseq-download-", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as file, self._open("GET", url[len(self.url) :]) as response:
                shutil.copyfileobj(response, file, 1024 * 1024)
                size = file.tell()
            os.replace(partial, destination)
        except BaseException:
            os.unlink(partial)
            raise
        return size

    def all_pages(self, path, **query):
        """Every item of a paged list, following `next` (at most 500 a page)."""
        page = self.get(path, **query, page_size=500)
        yield from page["results"]
        while page.get("next"):
            page = self.call("GET", self._relative(page["next"])).json()
            yield from page["results"]

    def _relative(self, url):
        parts = urllib.parse.urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _open(self, method, path, *, query=None, body=None):
        address = self.url + path
        given = {name: value for name, value in (query or {}).items() if value is not None}
        if given:
            address += ("&" if "?" in address else "?") + urllib.parse.urlencode(given)
        headers = {"Accept": "application/json, */*", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        elif self.username is not None:
            pair = f"{self.username}:{self.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        # http(s) only: the address went through login.server_address
        request = urllib.request.Request(address, data=data, headers=headers, method=method)  # noqa: S310
        try:
            return OPENER.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            with error:
                raise self._problem(error.code, error.read(MAX_ANSWER_BYTES), error.headers) from None
        except urllib.error.URLError as error:
            raise ServerProblem(f"cannot reach the Parseq server at {self.url}: {_reason(error.reason)}") from None
        except (TimeoutError, ConnectionError) as error:
            raise ServerProblem(f"cannot reach the Parseq server at {self.url}: {_reason(error)}") from None

    def _problem(self, status, body, headers):
        """The ServerProblem of an answer from 400 on, in the API's error shape or not."""
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        detail = printable(answer.get("detail") or f"HTTP {status}").rstrip(".")
        given = answer.get("errors") if isinstance(answer.get("errors"), dict) else {}
        errors = {
            printable(field): [printable(problem) for problem in _listed(listed)] for field, listed in given.items()
        }
        if status == 400 and errors:
            message = "; ".join(f"{field}: {' '.join(problems)}" for field, problems in errors.items())
        else:
            message = self._says(status, detail, retry=printable(headers.get("Retry-After") or ""))
        return ServerProblem(message, status=status, errors=errors)

    def _says(self, status, detail, *, retry):
        if status == 401 and self.token:
            return f"the server refused the token: log in again (parseq login {self.url})"
        if status == 401:
            return f"the server refused the user name or password: {detail}"
        if status == 403:
            return f"permission missing: {detail}"
        if status == 404:
            return f"not found on the server: {detail}"
        if status == 429:
            return f"refused for now: {detail}"
        if status >= 500:
            return f"the server is in trouble (HTTP {status}): {detail}" + (f"; retry in {retry} s" if retry else "")
        return f"the server refused it (HTTP {status}): {detail}"


def _listed(problems):
    return problems if isinstance(problems, list) else [problems]


def _reason(reason):
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is it running, and is the address right?)"
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    return getattr(reason, "strerror", None) or str(reason)
