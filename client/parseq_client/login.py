"""Which server, as whom: the login `parseq login` stores, and the variables that override it.

The login is a JSON file in the user's configuration directory (`$XDG_CONFIG_HOME/parseq`, else
`~/.config/parseq`; `%APPDATA%\\parseq` on Windows; `PARSEQ_CONFIG_DIR` overrides), readable by its
owner only (mode 600, in a directory of mode 700). It holds the server's address, the user name
and an API token, never a password. `PARSEQ_URL` and `PARSEQ_TOKEN` override what it holds.
"""

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from parseq_client.problems import LocalProblem

FILENAME = "login.json"
TOKEN = re.compile(r"[!-~]{1,256}")  # printable ASCII, as it must go in a header


class NotLoggedIn(LocalProblem):
    pass


class BadAddress(LocalProblem):
    pass


def server_address(text):
    """A server's address as given (`https://parseq.example.com/`), without its trailing slash; BadAddress if none."""
    url = text.rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it: a port that is no number, or past 65535, raises
    except ValueError:  # that, or a bracketed host that is no IPv6 address
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or not url.isprintable()
        or " " in url
    ):
        raise BadAddress(f"not a server address: {text!r} (give it as https://parseq.example.com[:port])")
    return url


@dataclass(frozen=True)
class Login:
    url: str
    token: str
    username: str = ""


def config_dir():
    if os.environ.get("PARSEQ_CONFIG_DIR"):
        return Path(os.environ["PARSEQ_CONFIG_DIR"])
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "parseq"
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "parseq"


def login_path():
    return config_dir() / FILENAME


def current_login():
    """The server and token to use: PARSEQ_URL and PARSEQ_TOKEN, else the stored login; NotLoggedIn if neither."""
    url, token = os.environ.get("PARSEQ_URL", ""), os.environ.get("PARSEQ_TOKEN", "")
    if not (url and token):  # the stored login only when the variables do not say it all
        stored = stored_login()
        url = url or (stored.url if stored else "")
        token = token or (stored.token if stored and stored.url == url.rstrip("/") else "")
    if not url:
        raise NotLoggedIn("not logged in: run `parseq login URL`, or set PARSEQ_URL and PARSEQ_TOKEN")
    if not token:
        raise NotLoggedIn(f"not logged in to {url}: run `parseq login {url}`, or set PARSEQ_TOKEN")
    if not TOKEN.fullmatch(token):
        where = "PARSEQ_TOKEN" if os.environ.get("PARSEQ_TOKEN") else str(login_path())
        raise NotLoggedIn(f"the token in {where} is not one a server gives (printable ASCII, no spaces)")
    return Login(url=server_address(url), token=token)


def stored_login():
    try:
        with open(login_path(), encoding="utf-8") as file:
            data = json.load(file)
        login = Login(url=data["url"], token=data["token"], username=data.get("username", ""))
        if not all(isinstance(value, str) for value in (login.url, login.token, login.username)):
            raise TypeError("its values must be text")
        return login
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NotLoggedIn(f"the stored login ({login_path()}) cannot be read ({error}): log in again") from None


def store_login(login):
    """Write the login where `current_login` finds it, readable by the user only; its path."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and directory.stat().st_uid != os.getuid():
        raise LocalProblem(f"{directory} belongs to another user: a token kept there is theirs to read or swap")
    directory.chmod(0o700)  # one made before, by hand, may let others swap the file
    path = directory / FILENAME
    partial = directory / f".{FILENAME}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    # A new file (never one put there, nor a link's target) with mode 600 from the start: a token must never be
    # readable by others, not even for a moment.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(partial, flags, 0o600), "w", encoding="utf-8") as file:
            json.dump({"url": login.url, "username": login.username, "token": login.token}, file, indent=2)
            file.write("\n")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)  # a token is never left behind in a file nobody looks for
        raise LocalProblem(f"cannot store the login in {path}: {error.strerror}") from None
    return path


def forget_login():
    """Remove the stored login; whether there was one."""
    try:
        login_path().unlink()
        return True
    except FileNotFoundError:
        return False
