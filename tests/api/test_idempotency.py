"""``Idempotency-Key``: routes that issue credentials ignore it — their answers are never stored or replayed.

The replay of ordinary POSTs is tested beside the routes (tests/api/test_entities.py); its audit record in
tests/api/test_audit.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from dust.storage.models import IdempotencyKey
from dust.storage.repositories import idempotency as repo
from tests.api.test_auth import assert_401, bearer, me, sign_in
from tests.conftest import PASSWORD

API = "/api/v1"
SAME_KEY = {"Idempotency-Key": "the-same-key-every-time"}


@pytest.fixture
def alice(client: TestClient) -> dict:
    response = client.post(f"{API}/users", json={"username": "alice", "password": PASSWORD, "role": "viewer"})
    assert response.status_code == 201, response.text
    return response.json()


def stored(app: FastAPI) -> list[bytes | None]:
    """Every answer the idempotency store holds."""
    with app.state.sessions() as session:
        return list(session.scalars(select(IdempotencyKey.body)))


def assert_issued_afresh(first: Response, again: Response, secret: str) -> None:
    assert first.is_success and again.is_success, (first.text, again.text)
    assert "idempotent-replayed" not in again.headers
    assert first.json()[secret] != again.json()[secret]


def test_sign_in_ignores_the_idempotency_key(anon_client: TestClient, alice: dict, app: FastAPI) -> None:
    # Signed in already, so the middleware knows the caller and would otherwise store the answer.
    headers = {**SAME_KEY, **bearer(sign_in(anon_client).json()["access_token"])}
    form = {"username": "alice", "password": PASSWORD}
    first = anon_client.post(f"{API}/auth/token", data=form, headers=headers)
    again = anon_client.post(f"{API}/auth/token", data=form, headers=headers)
    assert_issued_afresh(first, again, "refresh_token")
    assert stored(app) == []


def test_refresh_ignores_the_idempotency_key_and_reuse_still_revokes(
    anon_client: TestClient, alice: dict, app: FastAPI
) -> None:
    signed = sign_in(anon_client).json()
    headers = {**SAME_KEY, **bearer(signed["access_token"])}
    first = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": signed["refresh_token"]}, headers=headers)
    again = anon_client.post(
        f"{API}/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}, headers=headers
    )
    assert_issued_afresh(first, again, "refresh_token")
    # The spent token again, with the key of the request that spent it: not a replayed 200 but a theft.
    reused = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": signed["refresh_token"]}, headers=headers)
    assert_401(reused)
    assert "already used" in reused.json()["detail"]
    assert_401(anon_client.post(f"{API}/auth/refresh", json={"refresh_token": again.json()["refresh_token"]}))
    assert_401(me(anon_client, again.json()["access_token"]))
    assert stored(app) == []


def test_api_key_creation_ignores_the_idempotency_key(client: TestClient, app: FastAPI) -> None:
    first = client.post(f"{API}/auth/api-keys", json={"name": "etl"}, headers=SAME_KEY)
    again = client.post(f"{API}/auth/api-keys", json={"name": "etl"}, headers=SAME_KEY)
    assert_issued_afresh(first, again, "key")
    assert first.json()["id"] != again.json()["id"]
    assert len(client.get(f"{API}/auth/api-keys").json()) == 2
    assert stored(app) == []


def test_other_posts_are_still_stored_without_credentials(client: TestClient, app: FastAPI) -> None:
    created = client.post(f"{API}/entities", json={"kind": "patient", "name": "Retry Rita"}, headers=SAME_KEY)
    client.post(f"{API}/auth/api-keys", json={"name": "etl"}, headers={"Idempotency-Key": "another"})
    assert [body and created.json()["id"].encode() in body for body in stored(app)] == [True]


# --- a claim outliving its request: the process died, or ran past its lease ------------------------------------


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def _as_if_in_flight(app: FastAPI, **fields: Any) -> None:
    """Turn the one stored answer back into a claim without one, held as ``fields`` say."""
    with app.state.sessions() as session, session.begin():
        row = session.scalars(select(IdempotencyKey)).one()
        row.status = row.body = None
        for name, value in fields.items():
            setattr(row, name, value)


def _post(client: TestClient, name: str = "Jane") -> Response:
    return client.post(f"{API}/entities", json={"kind": "patient", "name": name}, headers=SAME_KEY)


def _patients(client: TestClient) -> int:
    return len(client.get(f"{API}/entities", params={"kind": "patient"}).json()["items"])


HOST = socket.gethostname()
SOON = timedelta(seconds=20)


@pytest.mark.parametrize(
    "holder",
    ["dead process of this host", "lease run out elsewhere", "lease run out here"],
)
def test_a_retry_runs_a_request_whose_process_is_gone_and_whose_work_never_committed(
    client: TestClient, app: FastAPI, holder: str
) -> None:
    assert _post(client).status_code == 201
    now = datetime.now(UTC)
    owner, lease = {
        "dead process of this host": (f"{HOST}:{_dead_pid()}:1:gone", now + SOON),
        "lease run out elsewhere": ("elsewhere:1:1:old", now - timedelta(seconds=1)),
        "lease run out here": (f"{HOST}:{os.getpid()}:1:old", now - timedelta(seconds=1)),
    }[holder]
    _as_if_in_flight(app, owner=owner, lease_until=lease, committed_at=None)
    retried = _post(client)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers, retried.text
    again = _post(client)
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == retried.json()


def test_a_retry_waits_for_a_live_owner_within_its_lease(client: TestClient, app: FastAPI) -> None:
    assert _post(client).status_code == 201
    _as_if_in_flight(app, owner="elsewhere:1:1:busy", lease_until=datetime.now(UTC) + SOON)
    retried = _post(client)
    assert retried.status_code == 409 and retried.json()["type"].endswith("/idempotency-in-progress")
    assert _patients(client) == 1


def test_work_that_committed_is_never_run_again_even_if_its_answer_was_lost(client: TestClient, app: FastAPI) -> None:
    """The process died between the commit and keeping the answer: the retry is told, and nothing is made twice."""
    assert _post(client).status_code == 201
    committed = datetime.now(UTC)
    _as_if_in_flight(app, owner=f"{HOST}:{_dead_pid()}:1:gone", lease_until=committed, committed_at=committed)
    retried = _post(client)
    assert retried.status_code == 409 and retried.json()["type"].endswith("/conflict"), retried.text
    assert "not run again" in retried.json()["detail"]
    assert _patients(client) == 1


def test_a_request_whose_claim_was_taken_over_cannot_commit(app: FastAPI) -> None:
    """The old owner (alive after all) can no longer mark the claim, so its transaction rolls back: one run only."""
    with app.state.sessions() as session, session.begin():
        assert repo.claim(session, "u:t", "k", "f", "old", datetime.now(UTC)) is None
    as_read = IdempotencyKey(scope="u:t", key="k", owner="old")  # what a retry saw
    with app.state.sessions() as session, session.begin():
        assert repo.take_over(session, as_read, "new", datetime.now(UTC) + SOON)
        assert not repo.take_over(session, as_read, "third", datetime.now(UTC) + SOON)  # no longer as read
    with app.state.sessions() as session, session.begin():
        assert not repo.commit_mark(session, "u:t", "k", "old")
        assert repo.commit_mark(session, "u:t", "k", "new")
        as_read = IdempotencyKey(scope="u:t", key="k", owner="new")
        assert not repo.take_over(session, as_read, "third", datetime.now(UTC) + SOON)  # committed: never again
        assert not repo.release(session, "u:t", "k", "new")  # committed work keeps its key


def test_a_claim_is_marked_committed_by_the_requests_own_transaction(client: TestClient, app: FastAPI) -> None:
    assert _post(client).status_code == 201
    failed = client.post(f"{API}/entities", json={"kind": "patient"}, headers={"Idempotency-Key": "bad"})
    assert failed.status_code == 422
    with app.state.sessions() as session:
        rows = session.scalars(select(IdempotencyKey)).all()
    assert [(r.key, r.status, r.committed_at is not None, r.owner is not None) for r in rows] == [
        (SAME_KEY["Idempotency-Key"], 201, True, True)
    ]


def test_a_request_that_lost_its_claim_rolls_back_its_work(
    client: TestClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if a retry took the claim over while this request ran: its transaction cannot mark it, so nothing it did
    commits and it answers 409."""
    monkeypatch.setattr(repo, "commit_mark", lambda *args: False)
    lost = _post(client)
    assert lost.status_code == 409 and "taken over" in lost.json()["detail"], lost.text
    monkeypatch.undo()
    assert _patients(client) == 0
