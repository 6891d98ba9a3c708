"""Alerts about runs that ended: recorded with the run's end, POSTed by the workers, retried, never in a run's way."""

import contextlib
import functools
import http.client
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from parseq.alerts.events import delivery_due
from parseq.alerts.models import WebhookDelivery
from parseq.core.environment import MASK, mask_values
from parseq.core.models import ERROR_FILENAME, Parser, Run
from runner import addresses

logger = logging.getLogger(__name__)

USER_AGENT = "Parseq-webhook/1"
EVENTS = {
    Run.Status.COMPLETED.value: "run.completed",
    Run.Status.ERROR.value: "run.error",
    Run.Status.CANCELLED.value: "run.cancelled",
}
ERROR_CHARS = 2000
SUMMARY_CHARS = 200
MAX_BACKOFF_SECONDS = 3600
# Of an endpoint's answer, only this much is read, and at most this much is kept: enough to say why it
# refused (Slack answers `invalid_payload`), never a page of HTML nor a stream that does not end.
ANSWER_EXCERPT_BYTES = 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a request target may hold as they are; the rest (spaces, non-ASCII) is percent-encoded.
TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"


def record_run_alert(*, run_id, status):
    """Record the alert about a run that just ended, if its parser wants one; it is sent when the change commits.

    Returns the delivery, or None when the parser wants no alert for this run. The work happens in
    a savepoint: should it fail, only the alert is rolled back, never the change that ended the run.
    """
    event = EVENTS.get(str(status))
    if event is None:
        return None
    with transaction.atomic():
        run = Run.objects.select_related("parser", "cancelled_by").get(pk=run_id)
        parser = run.parser
        if not parser.webhook_url:
            return None
        if status != Run.Status.ERROR and parser.webhook_on != Parser.WebhookOn.FINISH:
            return None
        delivery, created = WebhookDelivery.objects.get_or_create(
            run=run,
            event=event,
            defaults={"parser": parser, "url": parser.webhook_url, "payload": run_alert_payload(run=run, event=event)},
        )
        if created:
            # Robust: a broker failure here is the alert's problem, not that of whoever ended the run.
            transaction.on_commit(functools.partial(send_delivery, delivery_id=delivery.pk, attempt=1), robust=True)
    return delivery


def run_alert_payload(*, run, event):
    """The JSON a webhook receives about `run`; never the parser's environment values, never the run's log."""
    environment = run.parser.environment
    admin_url = absolute_url(reverse("admin:core_run_change", args=[run.run_id]))
    error_url = None
    if run.status == Run.Status.ERROR:
        error_url = absolute_url(reverse("download", args=[run.run_id, ERROR_FILENAME]))
    files = []
    if run.status == Run.Status.COMPLETED:
        files = [
            {
                "name": entry["name"],
                "size": entry["size"],
                "url": absolute_url(reverse("download", args=[run.run_id, entry["name"]])),
            }
            for entry in run.files
        ]
    duration = run.duration
    return {
        "event": event,
        "text": mask_values(f"{_summary(run)} — {admin_url}", environment=environment),
        "run": {
            "run_id": str(run.run_id),
            "status": run.status,
            "trigger": run.trigger,
            "created_time": _iso(run.created_time),
            "started_time": _iso(run.started_time),
            "finished_time": _iso(run.finished_time),
            "duration_seconds": round(duration.total_seconds(), 3) if duration is not None else None,
            # The end of a traceback says what went wrong; masked first, so that no cut leaves half a secret.
            "error": mask_values(run.error, environment=environment)[-ERROR_CHARS:],
            "cancelled_by": run.cancelled_by.get_username() if run.cancelled_by else None,
            "links": {
                "admin": admin_url,
                "api": absolute_url(reverse("api:run-detail", kwargs={"run_id": run.run_id})),
                "error": error_url,
            },
            "files": files,
        },
        "parser": {"id": run.parser.pk, "name": run.parser.name},
    }


def absolute_url(path):
    """`path` of Parseq as users reach it from outside (PARSEQ_PUBLIC_URL)."""
    return settings.PUBLIC_URL + path


def send_delivery(*, delivery_id, attempt, delay=None):
    """Have attempt number `attempt` handed to the workers after `delay` seconds: the actors' module does it."""
    delivery_due.send(sender=WebhookDelivery, delivery_id=delivery_id, attempt=attempt, delay=delay)


def fail_unsent_delivery(*, delivery_id, attempt, error):
    """A delivery the broker did not accept ends `failed` (the admin's Retry delivery sends it again)
    rather than staying pending with nothing to move it.
    """
    WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.FAILED,
        next_attempt_time=None,
        last_error=f"could not enqueue attempt {attempt}: the broker did not accept it ({error})",
    )


def attempt_delivery(*, delivery_id, attempt):
    """The worker's job: POST a delivery's payload, record how it went, and schedule the next attempt if one is due.

    Only the attempt that comes next is made: a delivery that is no longer pending, or whose
    attempt `attempt` was recorded already (a message delivered twice), is left alone. No database
    connection is held while the endpoint answers. Returns the delivery, or None if it was deleted.
    """
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None:
        logger.info("webhook delivery %s no longer exists (its run was deleted); message dropped", delivery_id)
        return None
    if delivery.status != WebhookDelivery.Status.PENDING or delivery.attempts != attempt - 1:
        logger.info(
            "webhook delivery %s is %s after %d attempt(s); attempt %d dropped",
            delivery_id,
            delivery.status,
            delivery.attempts,
            attempt,
        )
        return delivery
    if not connection.in_atomic_block:
        connection.close()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Parseq-Event": delivery.event,
        # Deliveries are at least once: a receiver may drop one whose id it has seen.
        "X-Parseq-Delivery": str(delivery.pk),
    }
    body = json.dumps(delivery.payload).encode("utf-8")
    outcome = _post(url=delivery.url, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT)
    return _record_attempt(delivery=delivery, attempt=attempt, outcome=outcome)


def retry_delay(*, attempt):
    """Seconds to wait after failed attempt number `attempt`: the backoff, doubling, at most an hour."""
    return min(settings.WEBHOOK_BACKOFF * 2 ** min(attempt - 1, 32), MAX_BACKOFF_SECONDS)


def retry_delivery(*, delivery):
    """Start a new round of attempts for a failed delivery, sent once the change commits.

    Returns False, changing nothing, for a delivery that is pending or delivered.
    """
    restarted = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.FAILED).update(
        status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_time=None
    )
    if restarted:
        transaction.on_commit(functools.partial(send_delivery, delivery_id=delivery.pk, attempt=1), robust=True)
    delivery.refresh_from_db()
    return bool(restarted)


@dataclass(frozen=True)
class Outcome:
    """How one POST went: the answer's status code if there was an answer, and the error if it failed.

    A `final` failure will not get better by waiting (a destination the address policy refuses):
    the delivery fails at once, without the remaining attempts.
    """

    status_code: int | None
    error: str = ""
    final: bool = False

    @property
    def delivered(self):
        return not self.error


def _post(*, url, body, headers, timeout):
    """POST `body` to `url`, following no redirect; a 2xx answer is delivered, anything else an error.

    The host is resolved once and checked against the address policy (runner.addresses, with
    settings.WEBHOOK_ALLOWED_NETWORKS), and the connection goes to exactly that checked address:
    a name that resolves somewhere else a moment later cannot redirect the POST.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        return Outcome(None, "only http:// and https:// webhook URLs can be posted to", final=True)
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
        host = host.encode("idna").decode("ascii") if host else host
    except (ValueError, UnicodeError) as error:
        return Outcome(None, f"the webhook URL is not valid: {error}", final=True)
    if not host:
        return Outcome(None, "the webhook URL names no host", final=True)
    try:
        address = addresses.resolve(
            host, port, allowed=settings.WEBHOOK_ALLOWED_NETWORKS, refused=settings.REFUSED_NETWORKS
        )
    except addresses.Unresolvable as error:
        return Outcome(None, f"cannot resolve the host {host}: {error.reason}")  # perhaps only for now: retried
    except addresses.Refused as error:
        return Outcome(None, f"refused by the address policy: {error}", final=True)
    connection = _connection(parts.scheme, host, port, address=address, timeout=timeout)
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=TARGET_SAFE)
    # The timeout bounds each wait on the socket; a receiver that drips its answer a byte at a time, or
    # sends "100 Continue" forever, never lets one expire. The attempt as a whole gets twice the timeout.
    expired = threading.Event()
    watchdog = threading.Timer(2 * timeout, _hang_up, args=(connection, expired))
    watchdog.start()
    try:
        # http.client sends the URL's own Host header, and TLS checks the URL's host name (SNI too).
        connection.request("POST", target, body=body, headers=headers)
        with connection.getresponse() as response:
            answer = response.read(ANSWER_EXCERPT_BYTES)
    except (OSError, http.client.HTTPException) as error:  # a refused connection, a timeout, a reset, TLS
        if expired.is_set():
            return Outcome(None, f"the answer took longer than {2 * timeout:g} s in all")
        return Outcome(None, _describe(error, timeout=timeout))
    finally:
        watchdog.cancel()
        connection.close()
    return _judge_answer(response, answer)


def _hang_up(connection, expired):
    """End an attempt that ran out of time: what waits on its socket returns at once."""
    expired.set()
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)


def _connection(scheme, host, port, *, address, timeout):
    """An HTTP(S) connection to `host` that connects to the checked `address`, never to a new lookup's."""
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def connect_to_checked_address(_, timeout, source_address=None):
        return socket.create_connection(address, timeout, source_address)

    connection._create_connection = connect_to_checked_address
    return connection


def _judge_answer(response, answer):
    """The Outcome of an answer whose first bytes are `answer`; what it keeps of the answer is clipped."""
    if 200 <= response.status < 300:
        return Outcome(response.status)
    if 300 <= response.status < 400:
        where = _clip(response.getheader("Location", "nowhere"))
        return Outcome(response.status, f"HTTP {response.status}: redirected to {where}; redirects are not followed")
    excerpt = _excerpt(answer)
    reason = _clip(response.reason)
    return Outcome(response.status, f"HTTP {response.status} {reason}" + (f": {excerpt}" if excerpt else ""))


def without_url_secrets(text, *, url):
    """`text` with the webhook URL's path and query masked, as is, decoded or encoded.

    In a Slack or Discord webhook URL they are the credential, and receivers echo them back (a
    redirect's Location, "Cannot POST /path"): the error is shown to people who may not read the URL.
    """
    parts = urlsplit(url)
    pieces = {parts.path, unquote(parts.path), quote(unquote(parts.path)), parts.query, unquote(parts.query)}
    for piece in sorted((p for p in pieces if len(p) > 1), key=len, reverse=True):
        text = text.replace(piece, MASK)
    return text


def _record_attempt(*, delivery, attempt, outcome):
    now = timezone.now()
    changes = {
        "attempts": attempt,
        "last_status_code": outcome.status_code,
        "last_error": without_url_secrets(outcome.error, url=delivery.url),
        "last_attempt_time": now,
        "next_attempt_time": None,
    }
    delay = None
    if outcome.delivered:
        changes.update(status=WebhookDelivery.Status.DELIVERED, delivered_time=now)
    elif outcome.final or attempt >= settings.WEBHOOK_ATTEMPTS:
        changes.update(status=WebhookDelivery.Status.FAILED)
    else:
        delay = retry_delay(attempt=attempt)
        changes.update(next_attempt_time=now + timedelta(seconds=delay))
    # Conditional: a duplicate message that raced this one may have recorded attempt `attempt` already.
    recorded = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=attempt - 1
    ).update(**changes)
    if not recorded:
        logger.warning("webhook delivery %s: attempt %d was recorded elsewhere first", delivery.pk, attempt)
        return delivery
    for name, value in changes.items():
        setattr(delivery, name, value)
    if outcome.delivered:
        logger.info("webhook delivery %s delivered at attempt %d", delivery.pk, attempt)
    elif outcome.final:
        logger.warning("webhook delivery %s failed without retries: %s", delivery.pk, outcome.error)
    else:
        logger.warning("webhook delivery %s: attempt %d failed: %s", delivery.pk, attempt, outcome.error)
    if delay is not None:
        send_delivery(delivery_id=delivery.pk, attempt=attempt + 1, delay=delay)
    return delivery


def _describe(reason, *, timeout):
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host: {reason.strerror}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return f"connection failed: {reason.strerror}"
    return f"connection failed: {reason or type(reason).__name__}"


def _excerpt(answer):
    """The first bytes of an answer as one line of text, at most ANSWER_EXCERPT_BYTES in UTF-8."""
    # A replacement character takes three bytes for the one it replaces: _clip cuts again.
    return _clip(" ".join(answer[:ANSWER_EXCERPT_BYTES].decode("utf-8", errors="replace").split()))


def _clip(text):
    """`text` cut to at most ANSWER_EXCERPT_BYTES in UTF-8, on a character boundary."""
    return text.encode("utf-8")[:ANSWER_EXCERPT_BYTES].decode("utf-8", errors="ignore")


def _summary(run):
    name = " ".join(run.parser.name.split())
    subject = f"Parseq: parser {name} run {str(run.run_id)[:8]}"
    if run.status == Run.Status.ERROR:
        lines = [line.strip() for line in run.error.splitlines() if line.strip()]
        reason = lines[-1] if lines else "no error text"
        if len(reason) > SUMMARY_CHARS:
            reason = reason[: SUMMARY_CHARS - 1] + "…"
        return f"{subject} ended in error: {reason}"
    if run.status == Run.Status.CANCELLED:
        who = run.cancelled_by.get_username() if run.cancelled_by else "a user"
        return f"{subject} was cancelled by {who}"
    count = len(run.files)
    return f"{subject} completed with {count} file{'' if count == 1 else 's'}"


def _iso(moment):
    return moment.isoformat() if moment else None
