"""Webhook delivery through the outbox (dust.engine.webhooks), against a real receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dust.core.config import Settings
from dust.core.errors import InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import webhooks
from dust.storage.db import make_sessionmaker
from dust.storage.models import WebhookDelivery
from dust.storage.repositories import webhooks as repo
from tests.receiver import Received, receiving

SECRET = "s3cret-of-the-rule"
PAYLOAD = {"event": "trigger.fired", "value": 39.5, "entity": {"name": "Jane Doe"}}


@pytest.fixture
def sessions(db: Dust) -> sessionmaker[Session]:
    return make_sessionmaker(db.engine)


def settings_for(db: Dust, **changes: Any) -> Settings:
    """Settings for tests: private addresses allowed (the receiver is on 127.0.0.1), a tiny backoff."""
    defaults: dict[str, Any] = {
        "webhook_allow_private": True,
        "webhook_backoff_seconds": 0.01,
        "webhook_timeout_seconds": 2.0,
        "webhook_max_attempts": 5,
    }
    return Settings(database_url=str(db.engine.url.render_as_string(hide_password=False)), **(defaults | changes))


@pytest.fixture
def settings(db: Dust) -> Settings:
    return settings_for(db)


def enqueue(db: Dust, url: str, payload: dict[str, Any] | None = None, secret: str = SECRET) -> int:
    with db.session() as s:
        return webhooks.enqueue(s, trigger_id=None, firing_id=None, url=url, payload=payload or PAYLOAD, secret=secret)


def row(db: Dust, delivery_id: int) -> WebhookDelivery:
    with db.session() as s:
        found = s.get(WebhookDelivery, delivery_id)
        assert found is not None
        return found


def until_settled(sessions: sessionmaker[Session], settings: Settings, delivery_id: int) -> int:
    """Run the delivery as the job layer would (again after each delay) until it settles; how many runs."""
    runs = 0
    while True:
        runs += 1
        delay = webhooks.deliver(sessions, settings, delivery_id)
        if delay is None:
            return runs
        assert delay < 5
        time.sleep(delay)


def signed(request: Received, secret: str = SECRET) -> bool:
    """The receiver's check, as docs/webhooks.md tells receivers to make it."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.headers["x-dust-signature"])


# --- delivery ---------------------------------------------------------------------------------------------


def test_a_receiver_failing_twice_gets_one_accepted_delivery_with_one_key_and_valid_signatures(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with receiving(fail=2) as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert until_settled(sessions, settings, delivery_id) == 3
    assert [r.answered for r in receiver.requests] == [500, 500, 200]
    assert len(receiver.accepted) == 1
    first = receiver.requests[0]
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert all(signed(r) for r in receiver.requests)
    assert not signed(first, "another secret")
    assert [r.headers["x-dust-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert first.headers["x-dust-delivery"] == str(delivery_id)
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"].startswith("DUST/")
    assert first.method == "POST" and first.path == "/hooks/dust"
    assert json.loads(first.body) == PAYLOAD
    done = row(db, delivery_id)
    assert (done.state, done.attempts, done.last_status, done.last_error) == ("delivered", 3, 200, None)
    assert done.delivered_at is not None
    assert first.headers["idempotency-key"] == done.idempotency_key


def test_the_body_is_compact_json_with_sorted_keys_and_plain_types(db: Dust) -> None:
    entity = uuid.uuid4()
    payload = {"z": 1, "a": {"id": entity, "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}, "v": float("nan")}
    delivery = row(db, enqueue(db, "https://example.org/hook", payload))
    assert delivery.body == f'{{"a":{{"at":"2026-01-02T03:04:05Z","id":"{entity}"}},"v":null,"z":1}}'
    assert len(delivery.idempotency_key) == 32 and int(delivery.idempotency_key, 16) >= 0
    assert (delivery.state, delivery.attempts, delivery.secret) == ("pending", 0, SECRET)


def test_a_delivery_is_dead_after_the_last_attempt_and_keeps_why(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    failing = settings_for(db, webhook_max_attempts=3)
    with receiving(fail=100, status=503) as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert until_settled(sessions, failing, delivery_id) == 3
        assert webhooks.deliver(sessions, failing, delivery_id) is None  # dead: nothing more is sent
    assert len(receiver.requests) == 3
    dead = row(db, delivery_id)
    assert (dead.state, dead.attempts, dead.last_status) == ("dead", 3, 503)
    assert dead.last_error == "HTTP 503 Service Unavailable: receiver says no"


def test_what_a_failing_receiver_says_is_kept_short_and_printable(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with receiving(fail=1, status=500, says=b"bad\x00\x01 input\r\n\xff\xfe" + b"x" * 100_000) as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert webhooks.deliver(sessions, settings, delivery_id) is not None
    error = row(db, delivery_id).last_error or ""
    assert error.startswith("HTTP 500 Internal Server Error: bad input \ufffd\ufffdxxx")
    assert len(error) < 300 and error.isprintable()


def test_the_backoff_doubles_with_each_attempt(db: Dust, sessions: sessionmaker[Session]) -> None:
    slow = settings_for(db, webhook_backoff_seconds=10.0)
    with receiving(fail=100) as receiver:
        delivery_id = enqueue(db, receiver.url)
        delays = []
        for _ in range(3):
            delay = webhooks.deliver(sessions, slow, delivery_id)
            assert delay is not None
            delays.append(delay)
            with db.session() as s:  # due again now, rather than waiting for it
                s.execute(update(WebhookDelivery).values(next_attempt_at=datetime.now(UTC)))
    for delay, expected in zip(delays, (10, 20, 40), strict=True):
        assert expected <= delay <= expected * 1.1
    assert row(db, delivery_id).attempts == 3


def test_a_redirect_is_a_failure_and_is_not_followed(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with receiving() as elsewhere, receiving(fail=1, status=302, location=elsewhere.url) as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert webhooks.deliver(sessions, settings, delivery_id) is not None
    assert elsewhere.requests == []
    assert (row(db, delivery_id).last_status, row(db, delivery_id).state) == (302, "pending")


def test_a_receiver_that_never_answers_times_out_and_is_tried_again(db: Dust, sessions: sessionmaker[Session]) -> None:
    impatient = settings_for(db, webhook_timeout_seconds=0.3)
    with receiving(stall=True) as receiver:
        delivery_id = enqueue(db, receiver.url)
        started = time.perf_counter()
        assert webhooks.deliver(sessions, impatient, delivery_id) is not None
        assert time.perf_counter() - started < 3
    failed = row(db, delivery_id)
    assert (failed.state, failed.attempts, failed.last_status) == ("pending", 1, None)
    assert failed.last_error == "no answer within 0.3 s"


def test_an_attempt_ends_at_the_timeout_however_slowly_the_receiver_answers(
    db: Dust, sessions: sessionmaker[Session]
) -> None:
    """Each byte of the answer comes before a read would time out, but the whole would take seconds."""
    impatient = settings_for(db, webhook_timeout_seconds=0.5)
    with receiving(drip=0.2) as receiver:
        delivery_id = enqueue(db, receiver.url)
        started = time.perf_counter()
        assert webhooks.deliver(sessions, impatient, delivery_id) is not None
        took = time.perf_counter() - started
    assert took < 1.5, took
    assert row(db, delivery_id).last_error == "no answer within 0.5 s"


def test_a_closed_port_is_a_failed_attempt_not_an_exception(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    delivery_id = enqueue(db, f"http://127.0.0.1:{port}/hook")
    assert webhooks.deliver(sessions, settings, delivery_id) is not None
    assert row(db, delivery_id).last_error.startswith("ConnectError: ")  # type: ignore[union-attr]


def test_only_one_worker_sends_a_delivery_at_a_time(db: Dust, sessions: sessionmaker[Session]) -> None:
    """Two workers handed the same delivery (a message delivered twice): one claims and sends, the other finds
    it no longer due and sends nothing."""
    slow = settings_for(db, webhook_timeout_seconds=5.0)
    with receiving(stall=True) as receiver:
        delivery_id = enqueue(db, receiver.url)
        first = threading.Thread(target=webhooks.deliver, args=(sessions, slow, delivery_id))
        first.start()
        assert receiver.arrived.wait(5)
        assert webhooks.deliver(sessions, slow, delivery_id) is None  # while the first is still sending
        receiver.released.set()
        first.join(10)
    assert len(receiver.requests) == 1


def test_a_stale_worker_does_not_overwrite_a_newer_outcome(db: Dust) -> None:
    """A worker whose lease ran out records its failure after another worker's success: the success stands."""
    delivery_id = enqueue(db, "https://example.org/hook")
    now = datetime.now(UTC)
    with db.session() as s:
        stale = repo.claim(s, delivery_id, now, now)  # a lease that is over at once
        again = repo.claim(s, delivery_id, now, now + timedelta(minutes=1))
        assert stale is not None and again is not None and stale.attempts == again.attempts == 0
        assert repo.delivered(s, delivery_id, now, 200)
        assert not repo.failed(s, stale, status=500, error="late", next_attempt_at=now, dead=False)
    assert (row(db, delivery_id).state, row(db, delivery_id).last_status) == ("delivered", 200)


def test_a_delivered_delivery_is_not_sent_again(db: Dust, sessions: sessionmaker[Session], settings: Settings) -> None:
    with receiving() as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert webhooks.deliver(sessions, settings, delivery_id) is None
        assert webhooks.deliver(sessions, settings, delivery_id) is None
    assert len(receiver.requests) == 1


def test_deliver_due_sends_what_is_due_and_pending_lists_what_a_worker_must_defer(
    db: Dust, sessions: sessionmaker[Session], settings: Settings
) -> None:
    with receiving(fail=1) as receiver:
        ids = [enqueue(db, receiver.url) for _ in range(3)]
        later = datetime.now(UTC) + timedelta(hours=1)
        with db.session() as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == ids[2]).values(next_attempt_at=later))
        assert {i for i, delay in webhooks.pending(sessions)} == set(ids)
        assert webhooks.deliver_due(sessions, settings) == 2  # the first fails, the second is delivered
        time.sleep(0.05)
        assert webhooks.deliver_due(sessions, settings) == 1  # the first, again
    assert [row(db, i).state for i in ids] == ["delivered", "delivered", "pending"]
    (left,) = webhooks.pending(sessions)
    assert left[0] == ids[2] and 3590 < left[1] <= 3600


def test_the_embedded_api_lists_and_retries_deliveries(db: Dust) -> None:
    first, second = enqueue(db, "https://example.org/a"), enqueue(db, "https://example.org/b")
    with db.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == first).values(state="dead", attempts=5))
    assert [d.id for d in db.webhook_deliveries().items] == [second, first]
    (dead,) = db.webhook_deliveries(state="dead").items
    assert (dead.id, dead.url, dead.payload, dead.next_attempt_at) == (first, "https://example.org/a", PAYLOAD, None)
    retried = db.retry_webhook_delivery(first)
    assert (retried.state, retried.attempts) == ("pending", 5) and retried.next_attempt_at is not None
    with pytest.raises(InvalidInput):
        db.webhook_deliveries(state="lost")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        db.retry_webhook_delivery(10_000)


# --- server-side request forgery ----------------------------------------------------------------------------


def test_a_private_address_is_refused_at_delivery_without_the_setting(
    db: Dust, sessions: sessionmaker[Session]
) -> None:
    strict = settings_for(db, webhook_allow_private=False)
    with receiving() as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert webhooks.deliver(sessions, strict, delivery_id) is None  # refused for good: trying again cannot help
    assert receiver.requests == []
    dead = row(db, delivery_id)
    assert (dead.state, dead.attempts, dead.last_status) == ("dead", 1, None)
    assert "127.0.0.1 is loopback" in (dead.last_error or "")
    assert "DUST_WEBHOOK_ALLOW_PRIVATE=true" in (dead.last_error or "")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1 is loopback"),
        ("http://10.1.2.3/hook", "10.1.2.3 is private"),
        ("http://192.168.0.10:8080/hook", "is private"),
        ("http://172.16.5.4/", "is private"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://169.254.10.10/", "link-local"),
        ("http://100.64.0.1/", "shared (carrier-grade NAT"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::1]/", "::1 is loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),
        ("http://[fc00::5]/", "private"),
        ("http://[::ffff:127.0.0.1]/", "loopback (as 127.0.0.1 inside IPv6)"),
        ("http://[::ffff:a9fe:a9fe]/", "a cloud metadata address (as 169.254.169.254 inside IPv6)"),
        ("http://[64:ff9b::a00:1]/", "private (as 10.0.0.1 inside IPv6)"),
        ("http://[2002:7f00:1::]/", "loopback (as 127.0.0.1 inside IPv6)"),
        ("http://2130706433/", "resolves to 127.0.0.1, which is loopback"),  # 127.0.0.1 as one number
        ("http://0x7f.1/", "resolves to 127.0.0.1, which is loopback"),
        ("http://localhost:8000/", "names this machine"),
        ("http://LOCALHOST./", "names this machine"),
        ("http://api.localhost/", "names this machine"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata service"),
        ("http://metadata/", "metadata service"),
        ("http://printer.local/", "the local network"),
    ],
)
def test_addresses_that_are_not_public_are_refused(url: str, said: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_url(url, allow_private=False)
    assert said in refused.value.detail
    assert "DUST_WEBHOOK_ALLOW_PRIVATE=true" in refused.value.detail
    webhooks.check_url(url, allow_private=True)  # the setting lifts it


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://example.org/hook", "must be http:// or https://, not 'ftp'"),
        ("example.org/hook", "must be http:// or https://"),
        ("https:///hook", "has no valid host name"),
        ("https://exa mple.org/", "has no valid host name"),
        ("https://user:pw@example.org/hook", "must not carry a user name or password"),
        ("https://example.org/" + "x" * 2040, "2060 characters long; at most 2048"),
        ("https://example.org:0/", "port 0 is not in 1..65535"),
        ("https://exam\x00ple.org/", "not a valid URL"),
    ],
)
def test_urls_that_are_not_http_urls_are_refused_whatever_the_setting(url: str, said: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(InvalidInput) as refused:
            webhooks.check_url(url, allow_private=allow_private)
        assert said in refused.value.detail


def test_public_addresses_pass() -> None:
    for url in ("https://93.184.215.14/hook", "http://[2606:4700:4700::1111]:8443/x", "https://8.8.8.8/"):
        webhooks.check_url(url, allow_private=False)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Names made up for a test: ``resolver[name]`` is the answers to give, one list per lookup (the last one
    repeats); other names and IP literals resolve as usual."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        given = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in given]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_name_is_refused_if_any_of_its_addresses_is_not_public(resolver: dict[str, list[list[str]]]) -> None:
    resolver["hooks.example.org"] = [["93.184.215.14", "10.0.0.7"]]
    with pytest.raises(InvalidInput, match=r"'hooks.example.org' resolves to 10.0.0.7, which is private"):
        webhooks.check_url("https://hooks.example.org/x", allow_private=False)
    resolver["ok.example.org"] = [["93.184.215.14"]]
    assert webhooks.target("https://ok.example.org/x", allow_private=False).addresses == ("93.184.215.14",)


def test_a_name_that_does_not_resolve_is_refused_and_at_delivery_tried_again(
    db: Dust, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(InvalidInput, match=r"webhook host 'nowhere.invalid' does not resolve"):
        webhooks.check_url("https://nowhere.invalid/hook", allow_private=False)
    delivery_id = enqueue(db, "https://nowhere.invalid/hook")
    assert webhooks.deliver(sessions, settings_for(db, webhook_allow_private=False), delivery_id) is not None
    assert row(db, delivery_id).state == "pending"


def test_delivery_connects_to_the_address_it_checked_not_to_a_rebound_name(
    db: Dust, sessions: sessionmaker[Session], resolver: dict[str, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to the receiver when checked, and elsewhere (127.0.0.2: nothing listens there) on every
    later lookup, as a rebinding name would: the POST still reaches the checked address, with the name as Host."""
    strict = settings_for(db, webhook_allow_private=False)
    checked = webhooks.forbidden
    # 127.0.0.1 stands for a public address here: the receiver has to be on this machine.
    monkeypatch.setattr(webhooks, "forbidden", lambda a: None if str(a) == "127.0.0.1" else checked(a))
    with receiving() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        resolver["hooks.example.org"] = [["127.0.0.1"], ["127.0.0.2"]]
        delivery_id = enqueue(db, f"http://hooks.example.org:{port}/hooks/dust")
        assert webhooks.deliver(sessions, strict, delivery_id) is None
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.example.org:{port}"
    assert row(db, delivery_id).state == "delivered"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("http_proxy", "http://10.9.9.9:3128")
    yield


def test_proxies_of_the_environment_are_not_used(
    db: Dust, sessions: sessionmaker[Session], settings: Settings, clean_env: None
) -> None:
    """A proxy would resolve and connect on its own, around the address check."""
    with receiving() as receiver:
        delivery_id = enqueue(db, receiver.url)
        assert webhooks.deliver(sessions, settings, delivery_id) is None
    assert len(receiver.accepted) == 1
