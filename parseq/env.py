"""Typed readers for environment variables that fail loudly on bad values.

Every setting Parseq reads from the environment goes through these helpers, so
that a bad value stops start-up with one line naming the variable.
"""

import ipaddress
import os
from urllib.parse import urlsplit

import dj_database_url


class ConfigurationError(Exception):
    """A variable of the environment has a value Parseq cannot use."""


def env_str(name, default=None):
    value = os.environ.get(name, "")
    return value if value != "" else default


def env_bool(name, default):
    value = env_str(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def env_int(name, default, *, minimum=None):
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name, default):
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name, default=()):
    """A comma-separated list of networks in CIDR notation (`10.0.0.0/8, fd00::/8`), as ipaddress networks."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as error:
            raise ConfigurationError(f"{name} must be comma-separated networks like 10.0.0.0/8: {error}") from None
    return networks


def env_choice(name, default, choices):
    value = env_str(name, default)
    if value not in choices:
        named = ", ".join(choice for choice in choices if choice is not None)
        raise ConfigurationError(f"{name} must be one of {named}, not {value!r}")
    return value


def database_from_url(name, url):
    """Turn a `sqlite:///path` or `postgres://user:pass@host:port/db?options` URL into a DATABASES entry.

    dj-database-url reads it, query options (`?sslmode=require`) included; Parseq adds its own
    settings for each engine and refuses what it does not run on, naming the variable.
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ConfigurationError(f"{name} must start with sqlite:// or postgres://, not {scheme or url!r}")
    try:
        database = dj_database_url.parse(url)
    except ValueError as error:
        raise ConfigurationError(f"{name} cannot be read: {error}") from None
    if scheme == "sqlite":
        return sqlite_database(name, database)
    if not database.get("NAME"):
        raise ConfigurationError(f"{name} must name a database, as in postgres://user@host:5432/parseq")
    # A database that does not answer (down, frozen, or a network that drops packets) fails a new connection
    # in 5 s rather than libpq's default of waiting for ever; `?connect_timeout=N` in the URL says otherwise.
    options = {"connect_timeout": 5, **database.get("OPTIONS", {})}
    return {
        **database,
        "OPTIONS": options,
        "PORT": str(database.get("PORT") or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def sqlite_database(name, database):
    path = database.get("NAME") or ""
    if not path or path == ":memory:":
        raise ConfigurationError(f"{name} needs a file path, as in sqlite:////abs/path/db.sqlite3")
    return {
        **database,
        # A file, not memory, for tests too: worker threads then wait on locks like in production.
        "TEST": {"NAME": os.path.join(os.path.dirname(path), "test_" + os.path.basename(path))},
        # Web and worker threads share the file: wait for locks instead of failing.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
            **database.get("OPTIONS", {}),
        },
    }
