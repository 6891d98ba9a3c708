"""HTTP Basic for the API: refused during a sign-in lockout, and hashed once a minute rather than every request.

A password is stored as a deliberately slow hash (PBKDF2, 0.2-0.4 s here), and HTTP Basic sends the password
with every request: without help, each request pays for the hash, which makes Basic slow and a cheap way to
load the server. So each web process remembers its recent *successful* verifications for
PARSEQ_BASIC_AUTH_CACHE_SECONDS, and a repeated request with the same credentials costs one query, as a token does.

Why this does not weaken the stored hashes:

- They are untouched: the same slow hash, in the same table. Someone who steals the database has to crack
  exactly what they had to crack before.
- Only successes are remembered. A wrong password is always hashed in full (after the lockout check), so a
  guesser pays the full price per guess, and gets a few guesses per window.
- The cache holds no password and no password hash. Its keys are HMAC-SHA256 of the username and password
  under a random key made when the process starts, which is never stored and never leaves the process; its
  values are a user id and an HMAC of that user's stored hash. Reading it takes reading the process's memory,
  which would show the passwords of the requests in flight anyway.
- A hit counts only while the user is active and its stored hash is the one it was when verified: a password
  change (or a rehash) or a deactivation ends every remembered verification at once, on every process.
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.authentication import BasicScheme
from rest_framework import authentication, exceptions

from parseq.access import logins


class TooManyFailedSignIns(exceptions.Throttled):
    """429 in the API's error shape, with Retry-After: the user or the client's address is locked out."""

    def __init__(self, seconds):
        # No `wait` to the parent, which would add its own sentence; Retry-After comes from `wait` all the same.
        super().__init__(detail=logins.lockout_message(seconds))
        self.wait = seconds


class VerifiedCredentials:
    """This process's recent successful Basic verifications, oldest first, at most `entries` of them; thread-safe.

    credentials' HMAC -> (user id, HMAC of the user's stored hash, when verified). See the module's docstring.
    """

    def __init__(self, entries=1024, *, clock=time.monotonic):
        self.entries = entries
        self.clock = clock  # seconds, as time.monotonic counts them; tests turn it by hand
        self._key = secrets.token_bytes(32)
        self._verified = OrderedDict()
        self._lock = threading.Lock()

    def key(self, username, password):
        """The cache's key for these credentials; the username's length first, so no two pairs share a key."""
        username, password = username.encode(), password.encode()
        message = len(username).to_bytes(4, "big") + username + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def remember(self, key, user):
        """Note that `key`'s credentials were verified just now as `user`'s; the oldest entry goes when full."""
        with self._lock:
            self._verified[key] = (user.pk, self._hash_digest(user), self.clock())
            self._verified.move_to_end(key)
            while len(self._verified) > self.entries:
                self._verified.popitem(last=False)

    def recall(self, key, seconds, username):
        """The user `key`'s credentials were verified as within `seconds`, if still named `username`, active and with
        the same hash; else None. One query (the user), none on a miss. An entry that no longer holds is forgotten.
        """
        with self._lock:
            entry = self._verified.get(key)
        if entry is None:
            return None
        user_id, hash_digest, verified = entry
        user = None
        if self.clock() - verified < seconds:
            user = get_user_model()._default_manager.filter(pk=user_id).first()
        if (
            user is not None
            and user.is_active
            and user.get_username() == username  # renamed, and perhaps someone new took the name
            and hmac.compare_digest(self._hash_digest(user), hash_digest)
        ):
            return user
        self.forget(key)
        return None

    def forget(self, key):
        with self._lock:
            self._verified.pop(key, None)

    def clear(self):
        with self._lock:
            self._verified.clear()

    def __len__(self):
        with self._lock:
            return len(self._verified)

    def _hash_digest(self, user):
        return hmac.new(self._key, user.password.encode(), hashlib.sha256).digest()


verified_credentials = VerifiedCredentials()


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's HTTP Basic with the sign-in lockout, a cache of successful verifications, and no challenge to browsers.

    In order: a locked-out user or address gets 429 without its password being looked at; credentials
    verified within PARSEQ_BASIC_AUTH_CACHE_SECONDS (0: never) are accepted after one query; anything else
    is verified by Django (a failure is recorded through `user_login_failed`). A success clears the user's
    failures from that address.
    """

    def authenticate_credentials(self, userid, password, request=None):
        attempt = logins.begin(userid, request)
        if attempt.locked_out:
            raise TooManyFailedSignIns(attempt.retry_after)
        seconds = settings.BASIC_AUTH_CACHE_SECONDS
        key = verified_credentials.key(userid, password) if seconds else None
        user = verified_credentials.recall(key, seconds, userid) if key else None
        if user is None:
            user, _ = super().authenticate_credentials(userid, password, request)
            if key:
                verified_credentials.remember(key, user)
        logins.record_success(attempt)
        return user, None

    def authenticate_header(self, request):
        """`Basic realm="api"` for API clients; `Token` for a browser, which never prompts for (nor keeps) it.

        A browser that got a Basic challenge would ask for a password and then send it with every request
        to Parseq, including requests other sites make it send. The answer stays a 401 either way.
        """
        if _from_a_browser(request):
            return "Token"
        return super().authenticate_header(request)


class BasicAuthenticationScheme(BasicScheme):
    """The OpenAPI schema's `basicAuth` for this class too (drf-spectacular matches DRF's own class only)."""

    target_class = BasicAuthentication


def _from_a_browser(request):
    """A page load asks for HTML; fetch() and XHR from a page carry Sec-Fetch-Mode, which other clients never send."""
    return "text/html" in request.META.get("HTTP_ACCEPT", "") or "HTTP_SEC_FETCH_MODE" in request.META
