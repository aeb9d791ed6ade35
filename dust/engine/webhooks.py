"""Webhooks: signed POSTs to a rule's receiver, through an outbox, delivered at least once after commit.

A firing rule's webhook is a row of ``webhook_deliveries`` written in the write's own transaction (``enqueue``):
a rejected write sends nothing, and a committed one is never lost. The job layer runs ``deliver`` for the row
once the transaction has committed, so no write ever waits for a receiver. ``deliver`` claims the row (one
worker at a time), POSTs its body, and records the outcome: delivered on a 2xx, else pending again after an
exponential backoff, and dead after ``DUST_WEBHOOK_MAX_ATTEMPTS`` attempts (admins list and retry deliveries).

Every attempt of a delivery sends the same body, ``Idempotency-Key`` and signature, so a receiver can drop the
duplicates that at-least-once delivery allows (a worker that dies after sending and before recording sends
again). docs/webhooks.md is the receiver's side of this.

Server-side request forgery: unless ``DUST_WEBHOOK_ALLOW_PRIVATE``, a URL whose host is, or resolves to, a
loopback, private, link-local (cloud metadata), shared, multicast or reserved address is refused when a rule
is saved (``check_url``) and again at each delivery, after resolving the name; the delivery then connects to
the very address it checked (the ``Host`` header and TLS name stay the URL's), so a name that resolves
differently between the check and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from dust import __version__
from dust.core.config import Settings
from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.core.logging import get_logger
from dust.engine import audit
from dust.engine.paging import id_next_cursor, id_walk
from dust.jobs.queue import Context, defer
from dust.jobs.registry import on_sweep, task
from dust.storage.db import unit_of_work
from dust.storage.models import WebhookDelivery, utcnow
from dust.storage.repositories import webhooks as repo
from dust.storage.repositories.webhooks import DELIVERED, PENDING, Claimed

log = get_logger(__name__)

MAX_URL = 2048
MAX_ADDRESSES = 3  # resolved addresses tried in turn when one refuses the connection
MAX_BACKOFF = 24 * 3600.0  # seconds: the longest wait between attempts, however many there are
MAX_ERROR = 1000  # characters of last_error kept (its column)
SNIPPET = 200  # bytes of a failing receiver's answer kept in last_error
EARLY = timedelta(seconds=1)  # a delivery run this much before it is due still goes (clocks of workers differ)
SWEEP_BATCH = 10_000  # pending deliveries a starting worker defers again at once
SIGNATURE = "X-Dust-Signature"
DELIVER = "webhooks.deliver"  # the job layer's task
State = Literal["pending", "delivered", "dead"]
ALLOW = "set DUST_WEBHOOK_ALLOW_PRIVATE=true to allow it (tests, private deployments)"
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")  # a DNS name (IDNs arrive as xn--), or an IP literal
# Names that lead to this machine, the local network or a cloud's metadata service whatever they resolve to.
_LOCAL_NAMES = ("localhost", "metadata", "instance-data")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")  # .internal: metadata.google.internal, *.ec2.internal
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_NETWORKS = (  # blocks the ipaddress module counts as global, which no webhook has a business calling
    (ipaddress.ip_network("100.64.0.0/10"), "shared (carrier-grade NAT, 100.64.0.0/10)"),
    (ipaddress.ip_network("192.0.0.0/24"), "reserved for protocol assignments (Oracle Cloud metadata is here)"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- models -----------------------------------------------------------------------------------------------


class DeliveryPublic(BaseModel):
    """One webhook call and how its delivery went. The rule's signing secret is never shown."""

    id: int
    trigger_id: uuid.UUID | None = Field(description="The rule that fired; null once the rule is deleted.")
    firing_id: int | None
    url: str
    state: State = Field(description="pending: to be tried (again); delivered: a 2xx answered; dead: gave up.")
    attempts: int = Field(description="Attempts made so far.")
    next_attempt_at: datetime | None = Field(description="When it is tried next; null unless pending.")
    last_status: int | None = Field(description="The HTTP status of the last attempt; null if none came back.")
    last_error: str | None = Field(description="Why the last attempt failed; null once delivered.")
    idempotency_key: str = Field(description="The Idempotency-Key header, the same on every attempt.")
    payload: dict[str, Any] = Field(description="The JSON body sent (signed as its exact compact text).")
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


# --- URLs -------------------------------------------------------------------------------------------------


class Unresolved(InvalidInput):
    """The URL's host name does not resolve (at delivery: maybe for now only, so the attempt is retried)."""


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: its URL, and the vetted addresses to connect to (none: connect by name)."""

    url: httpx.URL
    addresses: tuple[str, ...] = ()


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (``InvalidInput``) a webhook URL that is not http(s), has no host, carries a user name, is longer
    than 2048 characters, or, unless ``allow_private``, whose host is or resolves to an address that is not
    public (loopback, private, link-local and cloud metadata, shared, multicast, unspecified or reserved)."""
    target(url, allow_private=allow_private)


def target(url: str, *, allow_private: bool) -> Target:
    """``url`` checked as ``check_url`` does, with the addresses its host resolved to (all of them vetted)."""
    parsed = _parse(url)
    if allow_private:
        return Target(parsed)
    host = parsed.raw_host.decode("ascii").rstrip(".").lower()
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise InvalidInput(
            f"webhook host '{host}' names this machine, the local network or a metadata service; {ALLOW}"
        )
    addresses = _resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    for address in addresses:
        reason = forbidden(ipaddress.ip_address(address))
        if reason is not None:
            what = f"address {host} is" if address == host else f"host '{host}' resolves to {address}, which is"
            raise InvalidInput(f"webhook {what} {reason}, not a public address; {ALLOW}")
    return Target(parsed, tuple(addresses))


def _parse(url: str) -> httpx.URL:
    if len(url) > MAX_URL:
        raise InvalidInput(f"webhook URL is {len(url)} characters long; at most {MAX_URL} are allowed")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as problem:
        raise InvalidInput(f"webhook URL is not a valid URL ({problem})") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidInput(f"webhook URL must be http:// or https://, not '{parsed.scheme or url[:40]}'")
    if not parsed.raw_host or not _HOST.fullmatch(parsed.raw_host.decode("ascii")):
        raise InvalidInput(f"webhook URL '{url[:200]}' has no valid host name")
    if parsed.userinfo:
        raise InvalidInput("webhook URL must not carry a user name or password: receivers check the signature")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InvalidInput(f"webhook URL port {parsed.port} is not in 1..65535")
    return parsed


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is itself), in the resolver's order, without repeats."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass  # a name (or a number that only the resolver reads as an address, as 2130706433: checked below)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as problem:
        raise Unresolved(f"webhook host '{host}' does not resolve ({problem})") from None
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in found))


def forbidden(address: Address) -> str | None:
    """Why a webhook may not call ``address`` (an IPv4 address inside an IPv6 one counts as itself), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded(address)
        reason = None if inner is None else forbidden(inner)
        if reason is not None:
            return f"{reason} (as {inner} inside IPv6)"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address in _METADATA, "a cloud metadata address"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        *((address in network, what) for network, what in _NETWORKS if network.version == address.version),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "not globally routable"),
    )
    return next((what for found, what in checks if found), None)


def _embedded(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: mapped, 6to4, Teredo (the client) or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


# --- the outbox -------------------------------------------------------------------------------------------


def enqueue(
    session: Session,
    *,
    trigger_id: uuid.UUID | None,
    firing_id: int | None,
    url: str,
    payload: dict[str, Any],
    secret: str,
) -> int:
    """Put a webhook call in the outbox in ``session``'s transaction, and have it delivered once that commits;
    the delivery's id. The body is ``payload`` as compact JSON with sorted keys (UUIDs as strings, times as ISO
    8601 UTC, NaN as null): the exact text signed and sent on every attempt."""
    now = utcnow()
    row = {
        "trigger_id": trigger_id,
        "firing_id": firing_id,
        "url": url,
        "body": body_of(payload),
        "idempotency_key": uuid.uuid4().hex,
        "secret": secret,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    delivery_id = repo.add(session, row)
    _deliver_after_commit(session, delivery_id)
    return delivery_id


def body_of(payload: dict[str, Any]) -> str:
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(payload, option=options).decode()


def sign(secret: str, body: bytes) -> str:
    """The ``X-Dust-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 of it keyed by ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _deliver_after_commit(session: Session, delivery_id: int, delay: float = 0.0) -> None:
    """Have the job layer run the delivery once ``session``'s transaction commits (``delay`` seconds later).
    A session without a queue (a script) defers nothing: the row waits for a worker's start-up sweep."""
    defer(session, DELIVER, delivery_id, delay=delay)


@task(DELIVER)
def _deliver_task(context: Context, delivery_id: int) -> None:
    try:
        deliver(context.sessions, context.settings, delivery_id)  # it defers its own next attempt
    except Exception:  # the database away, most likely (a receiver's fault never raises)
        log.exception("webhook delivery could not run; trying again once its claim has lapsed", delivery=delivery_id)
        context.queue.send(DELIVER, [delivery_id], lease(context.settings).total_seconds())


@on_sweep("webhooks")
def _sweep(context: Context) -> None:
    """At a worker's start, every pending delivery goes back to the queue, due when it is due: a message lost
    (an in-memory queue, a crash between commit and enqueue) never loses a delivery. A delivery queued twice is
    sent once: the second run finds it claimed or done."""
    due = pending(context.sessions)
    with context.session() as session:
        for delivery_id, delay in due:
            _deliver_after_commit(session, delivery_id, delay)
    if due:
        log.info("webhook deliveries swept", pending=len(due))


# --- delivery ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``ok`` on a 2xx; ``final`` when trying again cannot help (a refused address)."""

    ok: bool = False
    status: int | None = None
    error: str | None = None
    final: bool = False


def deliver(sessions: sessionmaker[Session], settings: Settings, delivery_id: int) -> float | None:
    """Make one attempt of a delivery, if it is pending and due and no other worker holds it: the seconds until
    it is due again (its next run is deferred to then, if ``sessions`` have a queue), or None when there is
    nothing more to do here (delivered, dead, not due, or another worker's). A receiver's fault never raises:
    it is recorded on the delivery."""
    now = utcnow()
    with unit_of_work(sessions) as session:
        claimed = repo.claim(session, delivery_id, now + EARLY, now + lease(settings))
    if claimed is None:
        return None
    outcome = attempt(claimed, settings)
    with unit_of_work(sessions) as session:
        return _record(session, claimed, outcome, settings)


def lease(settings: Settings) -> timedelta:
    """How long a claim holds a delivery: well past the longest attempt (the timeout, and the time to resolve the
    name and record the outcome), so that no second worker sends it while the first may still be at it."""
    return timedelta(seconds=settings.webhook_timeout_seconds * 2 + 30)


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts: the setting, doubled each attempt after the first, and
    up to 10% more at random so that deliveries that failed together are not retried together; at most a day."""
    return min(MAX_BACKOFF, settings.webhook_backoff_seconds * 2.0 ** (attempts - 1) * random.uniform(1.0, 1.1))


def attempt(claimed: Claimed, settings: Settings) -> Outcome:
    """POST ``claimed`` once: the URL checked again (after resolving its name), the vetted address connected."""
    try:
        where = target(claimed.url, allow_private=settings.webhook_allow_private)
    except Unresolved as problem:
        return Outcome(error=problem.detail)
    except InvalidInput as problem:  # a refused address: trying again cannot help
        return Outcome(error=problem.detail, final=True)
    body = claimed.body.encode()
    timeout = settings.webhook_timeout_seconds
    try:
        return _post(where, body, headers(claimed, body), timeout)
    except httpx.TimeoutException:
        return Outcome(error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as problem:
        return Outcome(error=f"{type(problem).__name__}: {problem}")
    except Exception as problem:  # a bug here must not stop the worker; the delivery is tried again later
        log.exception("webhook attempt failed unexpectedly", delivery=claimed.id)
        return Outcome(error=f"{type(problem).__name__}: {problem}")


def headers(claimed: Claimed, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",  # a failing answer's start is kept as text
        "Idempotency-Key": claimed.idempotency_key,
        SIGNATURE: sign(claimed.secret, body),
        "X-Dust-Delivery": str(claimed.id),
        "X-Dust-Attempt": str(claimed.attempts + 1),
        "User-Agent": f"DUST/{__version__}",
    }


def _post(where: Target, body: bytes, sent: dict[str, str], timeout: float) -> Outcome:
    """POST to each vetted address in turn until one takes the connection (to the URL's host when there are
    none), all within ``timeout``; redirects are not followed (a 3xx is a failure), nor proxies of the
    environment used."""
    refused: httpx.ConnectError | None = None
    # A client per attempt: a pooled connection made for one host name must not carry another's request.
    with (
        httpx.Client(follow_redirects=False, trust_env=False, verify=_tls()) as client,
        _Deadline(timeout) as deadline,
    ):
        for address in where.addresses[:MAX_ADDRESSES] or (None,):
            if deadline.left() <= 0:
                break
            request = client.build_request("POST", where.url, content=body, headers=sent, timeout=deadline.left())
            request.extensions["trace"] = deadline.trace
            if address is not None and address != where.url.host:
                _pin(request, where.url, address)
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as problem:
                refused = problem
                continue
            except httpx.TransportError:
                if deadline.expired:
                    raise httpx.TimeoutException("the attempt's deadline passed") from None
                raise
            try:
                return _answered(response)
            finally:
                response.close()
    if refused is None:
        raise httpx.ConnectTimeout("no address took the connection in time")
    raise refused


class _Deadline:
    """Ends an attempt ``seconds`` after it began, however slowly the receiver answers: httpx's timeouts bound
    each step (connecting, each read), so a receiver sending a byte at a time could hold a worker for hours. At
    the deadline the attempt's sockets are shut down, and the read blocked on one fails at once."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    def left(self) -> float:
        return self.ends - time.monotonic()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension: keep each connection's socket as it is made."""
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._sockets.append(sock)
                if self.expired:
                    _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


def _pin(request: httpx.Request, url: httpx.URL, address: str) -> None:
    """Send ``request`` to ``address`` as if by ``url``'s name: Host header, TLS server name and certificate
    check are the name's."""
    request.url = url.copy_with(host=address)
    request.headers["Host"] = url.netloc.decode("ascii")
    if url.scheme == "https":
        request.extensions["sni_hostname"] = url.raw_host.decode("ascii")


def _answered(response: httpx.Response) -> Outcome:
    if 200 <= response.status_code < 300:
        return Outcome(ok=True, status=response.status_code)
    said = ""
    # The start of the answer only, as sent: a receiver could send gigabytes, or a compressed bomb.
    with contextlib.suppress(httpx.HTTPError):
        said = next(response.iter_raw(SNIPPET), b"")[:SNIPPET].decode("utf-8", "replace")
    error = f"HTTP {response.status_code} {response.reason_phrase}" + (f": {said}" if said.strip() else "")
    return Outcome(status=response.status_code, error=error)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every attempt (loading the CA bundle costs milliseconds)."""
    return httpx.create_ssl_context()


def _record(session: Session, claimed: Claimed, outcome: Outcome, settings: Settings) -> float | None:
    now = utcnow()
    fields = {"delivery": claimed.id, "attempt": claimed.attempts + 1, "status": outcome.status}
    if outcome.ok:
        assert outcome.status is not None
        repo.delivered(session, claimed.id, now, outcome.status)
        log.info("webhook delivered", **fields)
        return None
    attempts = claimed.attempts + 1
    dead = outcome.final or attempts >= settings.webhook_max_attempts
    delay = 0.0 if dead else backoff(settings, attempts)
    error = _printable(outcome.error or "failed")
    recorded = repo.failed(
        session, claimed, status=outcome.status, error=error, next_attempt_at=now + timedelta(seconds=delay), dead=dead
    )
    log.warning("webhook dead" if dead else "webhook attempt failed", error=error, **fields)
    if not recorded or dead:
        return None
    _deliver_after_commit(session, claimed.id, delay)
    return delay


def _printable(text: str) -> str:
    """``text`` on one line of printable characters, at most ``MAX_ERROR``: what a receiver says may hold
    anything, and PostgreSQL refuses a NUL in text."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:MAX_ERROR]


def deliver_due(sessions: sessionmaker[Session], settings: Settings, *, limit: int = SWEEP_BATCH) -> int:
    """Attempt every delivery due now, one after another, here; how many were due. (The job layer runs each
    delivery on its own; this is for tests and maintenance.)"""
    with unit_of_work(sessions) as session:
        due = repo.due(session, utcnow() + EARLY, limit)
    for delivery_id in due:
        deliver(sessions, settings, delivery_id)
    return len(due)


def pending(sessions: sessionmaker[Session], *, limit: int = SWEEP_BATCH) -> list[tuple[int, float]]:
    """(id, seconds until due; 0 if overdue) of every pending delivery, soonest first: what a starting worker
    hands to the job layer again, so that a message lost with a crash or restart never loses a delivery."""
    now = utcnow()
    with unit_of_work(sessions) as session:
        rows = repo.pending(session, limit)
    return [(delivery_id, max(0.0, (at - now).total_seconds())) for delivery_id, at in rows]


# --- admin ------------------------------------------------------------------------------------------------


def list_deliveries(
    session: Session,
    *,
    state: State | None = None,
    trigger_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryList:
    """Webhook deliveries, newest first: those of a ``state`` (dead: the dead letters), of one rule."""
    walk = id_walk(cursor)
    rows, in_progress = repo.page(session, state, trigger_id, walk, limit + 1)
    shown = rows[:limit]
    audit.record_each(session, "read", "webhook_delivery", [(row.id, (None,)) for row in shown])
    return DeliveryList(
        items=[public(row) for row in shown], next_cursor=id_next_cursor(walk, rows, in_progress, limit)
    )


def retry(session: Session, delivery_id: int) -> DeliveryPublic:
    """A dead or pending delivery pending again, due now, and handed to the job layer. A dead one gets one
    attempt more (it is dead again if that fails); a pending one keeps its count. 409 if already delivered."""
    row = repo.requeue(session, delivery_id, utcnow())
    if row is None:
        raise NotFound(f"webhook delivery {delivery_id} does not exist")
    if row.state == DELIVERED:
        assert row.delivered_at is not None
        raise Conflict(
            f"webhook delivery {delivery_id} was delivered at {row.delivered_at.isoformat()}; only a pending or "
            "dead delivery can be retried"
        )
    audit.record(session, "update", "webhook_delivery", row.id)
    _deliver_after_commit(session, row.id)
    return public(row)


def public(row: WebhookDelivery) -> DeliveryPublic:
    return DeliveryPublic(
        id=row.id,
        trigger_id=row.trigger_id,
        firing_id=row.firing_id,
        url=row.url,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.state == PENDING else None,
        last_status=row.last_status,
        last_error=row.last_error,
        idempotency_key=row.idempotency_key,
        payload=orjson.loads(row.body),
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )
