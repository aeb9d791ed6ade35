"""``Idempotency-Key``: routes that issue credentials ignore it — their answers are never stored or replayed.

The replay of ordinary POSTs is tested beside the routes (tests/api/test_entities.py); its audit record in
tests/api/test_audit.py.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from dust.storage.models import IdempotencyKey
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
