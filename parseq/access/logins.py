"""Failed sign-ins, counted per user and per client address, and the lockout they cause (README: Sign-ins).

Both ways of signing in with a password, the admin's login form and the API's HTTP Basic, go through
`django.contrib.auth.authenticate`, whose `user_login_failed` signal records each failure here. Before
either verifies a password it asks `begin()`: once a user's failures within PARSEQ_LOGIN_LOCKOUT_SECONDS
reach PARSEQ_LOGIN_FAILURES_PER_USER, or an address's reach PARSEQ_LOGIN_FAILURES_PER_ADDRESS, the attempt
is refused without hashing anything, so a password guesser gets a few guesses per window and cannot use
sign-ins to load the CPU. Failures live in the database, so that every process on every host counts them.

Requests that are already verifying while the limit is reached still count: a burst of parallel guesses
may overshoot the limit by the number of requests in flight, no more.

The trade-off: anyone who knows a username can keep that user locked out, with a few wrong passwords per
window. An operator lets the user in again with `manage.py clearlogins --user NAME` (or by deleting the
rows under "Login failures" in the admin); scripts should use tokens, which are never locked out.
"""

import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from parseq.access.models import LoginFailure

USERNAME_LENGTH = LoginFailure._meta.get_field("username").max_length


@dataclass(frozen=True)
class Attempt:
    """A sign-in about to be verified: who, from where, and whether it may be."""

    username: str
    address: str  # "" when unknown
    retry_after: int  # seconds until the lockout ends; 0 when there is none
    failed_before: bool  # this user failed from this address within the window: a success clears that

    @property
    def locked_out(self):
        return self.retry_after > 0


def begin(username, request):
    """The Attempt of `username` from `request`'s client, in one query on the recent failures of either."""
    username, address = _username(username), client_address(request)
    now = timezone.now()
    window = timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    theirs = (Q(username=username) | Q(address=address)) if address else Q(username=username)
    # Few rows: once either count reaches its limit, no more failures are recorded for it.
    rows = list(
        LoginFailure.objects.filter(theirs, failed_time__gt=now - window).values_list(
            "username", "address", "failed_time"
        )
    )
    by_user = [moment for name, _, moment in rows if name == username]
    by_address = [moment for _, place, moment in rows if address and place == address]
    ends = [
        _lockout_end(by_user, settings.LOGIN_FAILURES_PER_USER, window),
        _lockout_end(by_address, settings.LOGIN_FAILURES_PER_ADDRESS, window),
    ]
    end = max((moment for moment in ends if moment), default=now)
    return Attempt(
        username=username,
        address=address,
        retry_after=max(0, math.ceil((end - now).total_seconds())),
        failed_before=any(name == username and place == address for name, place, _ in rows),
    )


def record_failure(username, request):
    """Count a failed sign-in of `username` from `request`'s client, and forget those older than the window."""
    now = timezone.now()
    LoginFailure.objects.filter(failed_time__lte=now - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)).delete()
    LoginFailure.objects.create(username=_username(username), address=client_address(request), failed_time=now)


def record_success(attempt):
    """A verified password clears its user's failures from its address (its other addresses keep theirs)."""
    if attempt.failed_before:
        LoginFailure.objects.filter(username=attempt.username, address=attempt.address).delete()


def clear(username=None, address=None):
    """Forget the failures of `username`, or from `address`, or both at once, or all: ends their lockouts. A count."""
    failures = LoginFailure.objects.all()
    if username is not None:
        failures = failures.filter(username=_username(username))
    if address is not None:
        failures = failures.filter(address=address)
    deleted, _ = failures.delete()
    return deleted


def lockout_message(seconds):
    """What a locked-out sign-in is told, in whole minutes (rounded up)."""
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed sign-ins for this user or from this address: try again in {minutes} {unit}."


def client_address(request):
    """The address failures are counted by: REMOTE_ADDR, or a proxy's X-Forwarded-For entry; "" if unknown.

    With PARSEQ_TRUSTED_PROXY_HOPS=N, the Nth entry from the right of X-Forwarded-For (the one the
    outermost trusted proxy added); the entries further left are the client's to forge. A header with
    fewer entries, or an entry that is not an address, falls back to REMOTE_ADDR.
    """
    if request is None:
        return ""
    hops = settings.TRUSTED_PROXY_HOPS
    if hops:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if len(forwarded) >= hops:
            address = normalized_address(forwarded[-hops])
            if address:
                return address
    return normalized_address(request.META.get("REMOTE_ADDR", ""))


def normalized_address(text):
    """An IPv4 address as is, an IPv6 one as its /64 network (one host gets a whole /64), or "" if not an address."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return ""
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


@receiver(user_login_failed, dispatch_uid="parseq.access.logins.on_login_failed")
def on_login_failed(sender, credentials, request=None, **kwargs):
    """Record every failure `authenticate()` reports (the admin's form, the API's Basic, any other caller)."""
    username = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username"))
    if username is not None:
        record_failure(username, request)


def _username(username):
    return str(username)[:USERNAME_LENGTH]


def _lockout_end(moments, limit, window):
    """When a count of `moments` (failures within the window) drops below `limit`: the limit-th newest ages out."""
    if len(moments) < limit:
        return None
    return sorted(moments)[-limit] + window
