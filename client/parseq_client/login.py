"""Which server, as whom: the login `parseq login` stores, and the variables that override it.

The login is a JSON file in the user's configuration directory (`$XDG_CONFIG_HOME/parseq`, else
`~/.config/parseq`; `%APPDATA%\\parseq` on Windows; `PARSEQ_CONFIG_DIR` overrides), readable by its
owner only (mode 600, in a directory of mode 700). It holds the server's address, the user name
and an API token, never a password. `PARSEQ_URL` and `PARSEQ_TOKEN` override what it holds.
"""

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

FILENAME = "login.json"


class NotLoggedIn(Exception):
    pass


class BadAddress(ValueError):
    pass


def server_address(text):
    """A server's address as given (`https://parseq.example.com/`), without its trailing slash; BadAddress if none."""
    url = text.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadAddress(f"not a server address: {text!r} (give it as https://parseq.example.com)")
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
    stored = stored_login()
    url = os.environ.get("PARSEQ_URL") or (stored.url if stored else "")
    token = os.environ.get("PARSEQ_TOKEN") or (stored.token if stored and stored.url == url.rstrip("/") else "")
    if not url:
        raise NotLoggedIn("not logged in: run `parseq login URL`, or set PARSEQ_URL and PARSEQ_TOKEN")
    if not token:
        raise NotLoggedIn(f"not logged in to {url}: run `parseq login {url}`, or set PARSEQ_TOKEN")
    return Login(url=server_address(url), token=token)


def stored_login():
    try:
        with open(login_path(), encoding="utf-8") as file:
            data = json.load(file)
        return Login(url=data["url"], token=data["token"], username=data.get("username", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NotLoggedIn(f"the stored login ({login_path()}) cannot be read ({error}): log in again") from None


def store_login(login):
    """Write the login where `current_login` finds it, readable by the user only; its path."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / FILENAME
    partial = directory / f".{FILENAME}.{os.getpid()}"
    # Created with mode 600 from the start: a token must never be readable by others, not even for a moment.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump({"url": login.url, "username": login.username, "token": login.token}, file, indent=2)
        file.write("\n")
    os.chmod(partial, 0o600)  # O_CREAT's mode counts only for a new file
    os.replace(partial, path)
    return path


def forget_login():
    """Remove the stored login; whether there was one."""
    try:
        login_path().unlink()
        return True
    except FileNotFoundError:
        return False
