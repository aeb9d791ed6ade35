"""Webhooks over HTTP: a rule's webhook delivered by the job layer after the write commits, signed, retried and
dead-lettered; /webhooks/deliveries for admins; the address check at rule creation."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from dust.core.config import Settings
from dust.engine import webhooks
from dust.jobs import Worker
from dust.storage.models import WebhookDelivery
from tests.api.conftest import API, ONE_BACKEND, World
from tests.receiver import receiving

# The default setting, for a test: private addresses refused (a test parametrized with allow_private=False).
STRICT = pytest.mark.parametrize("allow_private", [False])


@pytest.fixture
def allow_private() -> bool:
    return True  # the receiver is on 127.0.0.1


@pytest.fixture
def redis_url() -> str | None:
    return None  # the embedded queue: a SQLite file of the test's own


@pytest.fixture
def settings(database_url: str, tmp_path: Path, allow_private: bool, redis_url: str | None) -> Settings:
    """Private addresses allowed unless the test is ``STRICT``; a tiny backoff; a job queue of the test's own."""
    return Settings(
        database_url=database_url,
        log_level="WARNING",
        secret_key="test-secret-key-" + "x" * 32,
        webhook_allow_private=allow_private,
        webhook_backoff_seconds=0.05,
        webhook_timeout_seconds=2.0,
        webhook_max_attempts=4,
        jobs_path=str(tmp_path / "jobs.db"),
        redis_url=redis_url,
    )


@pytest.fixture
def app(settings: Settings, new_app: FastAPI) -> FastAPI:
    """An app of the test's own: its job queue (a file of the test's own) must hold no other test's messages."""
    return new_app


@pytest.fixture
def worker(app: FastAPI) -> Iterator[Worker]:
    """The job layer consuming the app's queue in this process, as ``dust serve`` (or ``dust worker``) does."""
    app.state.jobs.huey.flush()  # a Redis queue of this database may hold an earlier run's messages
    with Worker(app.state.settings, sessions=app.state.sessions, threads=2) as running:
        yield running


def rule_to(client: TestClient, url: str, name: str = "fever_hook") -> dict[str, Any]:
    rule = {
        "name": name,
        "when": {"kind": "patient", "schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
        "then": [{"action": "webhook", "url": url}],
    }
    response = client.post(f"{API}/triggers", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def fever(client: TestClient, tensor_id: str, time_index: int = 1, value: float = 39.6) -> float:
    """Write a fever; how long the write took, in seconds."""
    started = time.perf_counter()
    cells = [{"time": time_index, "metric": "temperature", "value": value}]
    response = client.post(f"{API}/tensors/{tensor_id}/values", json={"values": cells})
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def deliveries(client: TestClient, **query: Any) -> dict[str, Any]:
    response = client.get(f"{API}/webhooks/deliveries", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def settled(client: TestClient, seconds: float = 20) -> dict[str, Any]:
    """The only delivery, once it is no longer pending."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        (item,) = deliveries(client)["items"]
        if item["state"] != "pending":
            return item
        time.sleep(0.05)
    raise AssertionError(f"still pending after {seconds} s: {item}")


def valid(secret: str, body: bytes, signature: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def enqueue(app: FastAPI, url: str = "https://example.org/hook", trigger_id: uuid.UUID | None = None) -> int:
    with app.state.sessions() as session, session.begin():
        return webhooks.enqueue(
            session, trigger_id=trigger_id, firing_id=None, url=url, payload={"n": 1}, secret="not-to-be-shown"
        )


def set_state(app: FastAPI, delivery_id: int, **values: Any) -> None:
    with app.state.sessions() as session, session.begin():
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))


# --- delivery through the job layer -------------------------------------------------------------------------


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:6379/0"], ids=["embedded-queue", "redis-queue"])
def test_a_fired_rule_is_delivered_once_accepted_with_one_key_and_valid_signatures(
    client: TestClient, world: World, worker: Worker
) -> None:
    with receiving(fail=2) as receiver:
        rule = rule_to(client, receiver.url)
        fever(client, world["TPA"])
        delivery = settled(client)
    assert delivery["state"] == "delivered" and delivery["attempts"] == 3 and delivery["last_status"] == 200
    assert [r.answered for r in receiver.requests] == [500, 500, 200] and len(receiver.accepted) == 1
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1
    assert all(valid(rule["secret"], r.body, r.headers["x-dust-signature"]) for r in receiver.requests)
    payload = json.loads(receiver.requests[0].body)
    assert payload == delivery["payload"]
    assert payload["event"] == "trigger.fired" and payload["trigger"]["id"] == rule["id"]
    assert payload["entity"]["id"] == world["PA"] and payload["value"] == 39.6
    assert (
        delivery["trigger_id"] == rule["id"]
        and delivery["idempotency_key"] == receiver.requests[0].headers["idempotency-key"]
    )


def test_a_dead_receiver_does_not_slow_writes(client: TestClient, world: World, worker: Worker) -> None:
    """The receiver takes the connection and never answers: writes return all the same, while it stalls."""
    with receiving(stall=True) as receiver:
        rule_to(client, receiver.url)
        fever(client, world["TPA"], 1)
        assert receiver.arrived.wait(10), "the job layer never called the receiver"
        fever(client, world["TPA"], 2)  # a worker is stuck on the receiver meanwhile
        fever(client, world["TPA"], 3)
        assert not receiver.released.is_set() and all(r.answered is None for r in receiver.requests)
    assert len(deliveries(client)["items"]) == 3


def test_a_receiver_that_keeps_failing_is_dead_lettered_and_a_retry_delivers_it(
    client: TestClient, world: World, worker: Worker
) -> None:
    with receiving(fail=4, status=502) as receiver:
        rule_to(client, receiver.url)
        fever(client, world["TPA"])
        dead = settled(client)
        assert (dead["state"], dead["attempts"], dead["last_status"]) == ("dead", 4, 502)
        assert dead["last_error"].startswith("HTTP 502 Bad Gateway") and dead["next_attempt_at"] is None
        assert [d["id"] for d in deliveries(client, state="dead")["items"]] == [dead["id"]]

        retried = client.post(f"{API}/webhooks/deliveries/{dead['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["state"] == "pending"
        delivered = settled(client)
    assert (delivered["state"], delivered["attempts"], delivered["last_error"]) == ("delivered", 5, None)
    assert len(receiver.requests) == 5 and len(receiver.accepted) == 1


# --- server-side request forgery ----------------------------------------------------------------------------


@STRICT
@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:9000/hook", "webhook address 127.0.0.1 is loopback"),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/", "private (as 10.0.0.1 inside IPv6)"),
        ("http://metadata.google.internal/", "metadata service"),
    ],
)
def test_a_private_address_webhook_is_refused_without_the_setting(
    client: TestClient, world: World, url: str, said: str
) -> None:
    response = client.post(
        f"{API}/triggers",
        json={
            "name": "leaky",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
            "then": [{"action": "webhook", "url": url}],
        },
    )
    assert response.status_code == 422, response.text
    assert said in response.json()["detail"] and "DUST_WEBHOOK_ALLOW_PRIVATE=true" in response.json()["detail"]
    assert client.get(f"{API}/triggers").json()["items"] == []


# --- /webhooks/deliveries -------------------------------------------------------------------------------------


def test_deliveries_page_newest_first_filter_and_never_show_the_secret(
    client: TestClient, app: FastAPI, world: World
) -> None:
    rule = rule_to(client, "https://example.org/hook")
    ids = [enqueue(app, trigger_id=uuid.UUID(rule["id"]) if n % 2 else None) for n in range(5)]
    set_state(app, ids[0], state="dead", attempts=4, last_status=500, last_error="HTTP 500")
    seen, cursor, pages = [], None, 0
    while True:
        page = deliveries(client, limit=2, cursor=cursor)
        pages += 1
        seen += [item["id"] for item in page["items"]]
        assert all("secret" not in item for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    assert [d["id"] for d in deliveries(client, trigger_id=rule["id"])["items"]] == [ids[3], ids[1]]
    assert [d["id"] for d in deliveries(client, state="dead")["items"]] == [ids[0]]
    assert [d["id"] for d in deliveries(client, state="pending", limit=10)["items"]] == ids[:0:-1]
    listed = client.get(f"{API}/webhooks/deliveries")
    assert "not-to-be-shown" not in listed.text
    (first,) = deliveries(client, state="dead")["items"]
    assert first["payload"] == {"n": 1} and first["url"] == "https://example.org/hook"


def test_retry_requeues_dead_and_pending_deliveries_and_refuses_delivered_ones(
    client: TestClient, app: FastAPI
) -> None:
    dead, waiting, done = enqueue(app), enqueue(app), enqueue(app)
    later = datetime.now(UTC) + timedelta(hours=1)
    set_state(app, dead, state="dead", attempts=4)
    set_state(app, waiting, attempts=2, next_attempt_at=later)
    set_state(app, done, state="delivered", attempts=1, delivered_at=datetime(2026, 1, 1, tzinfo=UTC))
    for delivery_id, attempts in ((dead, 4), (waiting, 2)):
        before = datetime.now(UTC)
        response = client.post(f"{API}/webhooks/deliveries/{delivery_id}/retry")
        assert response.status_code == 200, response.text
        item = response.json()
        assert (item["state"], item["attempts"]) == ("pending", attempts)
        assert before - timedelta(seconds=1) <= datetime.fromisoformat(item["next_attempt_at"]) <= datetime.now(UTC)
    refused = client.post(f"{API}/webhooks/deliveries/{done}/retry")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"webhook delivery {done} was delivered at 2026-01-01T00:00:00+00:00; only a pending or dead delivery "
        "can be retried"
    )
    missing = client.post(f"{API}/webhooks/deliveries/999999/retry")
    assert missing.status_code == 404 and missing.json()["detail"] == "webhook delivery 999999 does not exist"


@ONE_BACKEND
@pytest.mark.parametrize(
    ("query", "said"),
    [({"state": "lost"}, "state"), ({"limit": 0}, "limit"), ({"trigger_id": "x"}, "trigger_id")],
)
def test_bad_filters_are_422(client: TestClient, query: dict[str, Any], said: str) -> None:
    response = client.get(f"{API}/webhooks/deliveries", params=query)
    assert response.status_code == 422 and said in response.json()["detail"]


@ONE_BACKEND
def test_a_bad_delivery_id_is_422(client: TestClient) -> None:
    assert client.post(f"{API}/webhooks/deliveries/0/retry").status_code == 422
    assert client.post(f"{API}/webhooks/deliveries/abc/retry").status_code == 422


@pytest.mark.parametrize("role", ["clinician", "analyst", "viewer", "member"])
def test_only_admins_see_and_retry_deliveries(app: FastAPI, login_as: Callable[..., TestClient], role: str) -> None:
    delivery_id = enqueue(app)
    someone = login_as(role)
    assert someone.get(f"{API}/webhooks/deliveries").status_code == 403
    refused = someone.post(f"{API}/webhooks/deliveries/{delivery_id}/retry")
    assert refused.status_code == 403 and "only an admin" in refused.json()["detail"]
