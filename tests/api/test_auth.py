"""Sign-in, tokens and keys: every way a credential can be wrong answers 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from dust.core.config import Settings
from dust.core.security import issue_access_token
from dust.storage.models import ApiKey, LoginFailure
from tests.api.conftest import engines
from tests.conftest import PASSWORD

API = "/api/v1"


@pytest.fixture
def alice(client: TestClient) -> dict:
    response = client.post(f"{API}/users", json={"username": "alice", "password": PASSWORD, "role": "viewer"})
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(anon: TestClient, username: str = "alice", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return anon.post(f"{API}/auth/token", data={"username": username, "password": password})


def me(anon: TestClient, token: str):  # type: ignore[no-untyped-def]
    return anon.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})


def assert_401(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, key: bytes | None) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key, head.encode(), hashlib.sha256).digest()) if key else ""
    return f"{head}.{signature}"


def test_sign_in_and_who_am_i(anon_client: TestClient, alice: dict) -> None:
    tokens = sign_in(anon_client).json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    assert me(anon_client, tokens["access_token"]).json()["username"] == "alice"


def test_no_token_and_wrong_passwords_are_401(anon_client: TestClient, alice: dict) -> None:
    assert_401(anon_client.get(f"{API}/entities"))
    assert_401(sign_in(anon_client, password="wrong password!"))
    assert_401(sign_in(anon_client, username="nobody"))
    assert_401(anon_client.get(f"{API}/entities", headers={"Authorization": "Bearer not-a-token"}))


def test_forged_tokens_are_401(anon_client: TestClient, alice: dict, settings: Settings) -> None:
    claims = {
        "iss": "dust",
        "sub": alice["id"],
        "role": "viewer",
        "ver": 0,
        "typ": "access",
        "jti": "x",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    assert settings.secret_key is not None
    key = settings.secret_key.get_secret_value()
    secret = key.encode()
    assert_401(me(anon_client, forged({"alg": "none", "typ": "JWT"}, claims, None)))
    assert_401(me(anon_client, forged({"alg": "HS256", "typ": "JWT"}, claims, b"another secret")))
    # HS/RS confusion: an RS256 header with an HMAC made from the server's key must not pass.
    assert_401(me(anon_client, forged({"alg": "RS256", "typ": "JWT"}, claims, secret)))
    assert_401(me(anon_client, forged({"alg": "HS512", "typ": "JWT"}, claims, secret)))
    good = forged({"alg": "HS256", "typ": "JWT"}, claims, secret)
    assert me(anon_client, good).status_code == 200  # the forger's recipe itself is right
    refresh_as_access = jwt.encode({**claims, "typ": "refresh"}, key, algorithm="HS256")
    assert_401(me(anon_client, refresh_as_access))


def test_expired_token_is_401(anon_client: TestClient, alice: dict, settings: Settings) -> None:
    assert settings.secret_key is not None
    key = settings.secret_key.get_secret_value()
    token, _ = issue_access_token(key, uuid.UUID(alice["id"]), "viewer", 0, timedelta(seconds=-1))
    response = me(anon_client, token)
    assert_401(response)
    assert "expired" in response.json()["detail"]


def test_disabled_user_and_role_change_revoke_tokens(client: TestClient, anon_client: TestClient, alice: dict) -> None:
    token = sign_in(anon_client).json()["access_token"]
    client.patch(f"{API}/users/{alice['id']}", json={"role": "analyst"})
    assert_401(me(anon_client, token))
    token = sign_in(anon_client).json()["access_token"]
    assert me(anon_client, token).json()["role"] == "analyst"
    client.patch(f"{API}/users/{alice['id']}", json={"disabled": True})
    assert_401(me(anon_client, token))
    assert_401(sign_in(anon_client))


def test_logout_revokes_the_token(anon_client: TestClient, alice: dict) -> None:
    tokens = sign_in(anon_client).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert anon_client.post(f"{API}/auth/logout", headers=headers).status_code == 204
    assert_401(me(anon_client, tokens["access_token"]))
    assert_401(anon_client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}))


def test_refresh_rotates_and_reuse_revokes_the_family(anon_client: TestClient, alice: dict) -> None:
    first = sign_in(anon_client).json()
    second = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second_tokens = second.json()
    assert second_tokens["refresh_token"] != first["refresh_token"]
    assert me(anon_client, second_tokens["access_token"]).status_code == 200
    reuse = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_401(reuse)
    assert "revoked" in reuse.json()["detail"]
    # the thief's replay also kills the legitimate successor
    assert_401(anon_client.post(f"{API}/auth/refresh", json={"refresh_token": second_tokens["refresh_token"]}))


@pytest.fixture
def elsewhere(app: FastAPI) -> Iterator[TestClient]:
    """A client at another address than ``anon_client``'s."""
    with TestClient(app, raise_server_exceptions=False, client=("203.0.113.7", 50000)) as other:
        yield other


def fail_as(username: str, client: str, *ages: timedelta, app: FastAPI) -> None:
    """Failed sign-ins of ``username`` from ``client``, as long ago as ``ages`` (no waiting in tests)."""
    now = datetime.now(UTC)
    with app.state.sessions() as session, session.begin():
        session.add_all(LoginFailure(username=username, client=client, at=now - age) for age in ages)


def test_lockout_after_repeated_failures(
    anon_client: TestClient, elsewhere: TestClient, alice: dict, client: TestClient
) -> None:
    client.post(f"{API}/users", json={"username": "bob", "password": PASSWORD, "role": "viewer"})
    for _ in range(5):
        assert_401(sign_in(anon_client, password="guess guess guess"))
    locked = sign_in(anon_client)  # even the right password, from the client that failed
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= 60  # the first throttle is a minute
    assert "this client" in locked.json()["detail"]
    assert sign_in(elsewhere).status_code == 200  # a stranger's guesses do not lock the owner out
    assert sign_in(anon_client, username="bob").status_code == 200


@pytest.mark.parametrize(("failures", "minutes"), [(5, 1), (6, 2), (7, 4), (8, 8), (9, 15), (12, 15)])
def test_throttle_doubles_with_each_failure_up_to_the_longest(
    anon_client: TestClient, alice: dict, app: FastAPI, failures: int, minutes: int
) -> None:
    fail_as("alice", "testclient", *[timedelta(seconds=1)] * failures, app=app)
    throttled = sign_in(anon_client)
    assert throttled.status_code == 429
    assert minutes * 60 - 5 <= int(throttled.headers["retry-after"]) <= minutes * 60


def test_throttle_ends_and_the_next_failure_doubles_it(anon_client: TestClient, alice: dict, app: FastAPI) -> None:
    # six failures, the last 2 minutes and a second ago: its 2-minute throttle is over
    fail_as("alice", "testclient", *[timedelta(minutes=10)] * 5, timedelta(minutes=2, seconds=1), app=app)
    assert_401(sign_in(anon_client, password="guess guess guess"))  # tried, and failed once more
    throttled = sign_in(anon_client)
    assert throttled.status_code == 429 and 4 * 60 - 5 <= int(throttled.headers["retry-after"]) <= 4 * 60


def test_success_forgets_only_that_clients_failures(
    anon_client: TestClient, elsewhere: TestClient, alice: dict, app: FastAPI
) -> None:
    fail_as("alice", "testclient", *[timedelta(seconds=30)] * 4, app=app)
    fail_as("alice", "203.0.113.7", *[timedelta(seconds=30)] * 5, app=app)
    assert sign_in(anon_client).status_code == 200
    for _ in range(4):  # the four before the success no longer count
        assert_401(sign_in(anon_client, password="guess guess guess"))
    assert sign_in(anon_client).status_code == 200
    assert sign_in(elsewhere).status_code == 429  # the other client's failures stay


def test_rate_limit_per_client(anon_client: TestClient, elsewhere: TestClient, alice: dict, app: FastAPI) -> None:
    # 29 failures stored as the sign-in route stores them (30 through HTTP cost a password hash each, ~15 s),
    # and the 30th made for real
    for i in range(29):
        fail_as(f"ghost-{i}", "testclient", timedelta(seconds=1), app=app)
    assert_401(sign_in(anon_client, username="ghost-29", password="nope nope nope"))
    limited = sign_in(anon_client)
    assert limited.status_code == 429
    assert "client" in limited.json()["detail"]
    assert sign_in(elsewhere).status_code == 200


def test_api_keys_act_as_their_user(anon_client: TestClient, alice: dict) -> None:
    token = sign_in(anon_client).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    created = anon_client.post(f"{API}/auth/api-keys", json={"name": "etl"}, headers=headers)
    assert created.status_code == 201
    key = created.json()["key"]
    assert me(anon_client, key).json()["username"] == "alice"
    listed = anon_client.get(f"{API}/auth/api-keys", headers=headers).json()
    assert [k["name"] for k in listed] == ["etl"] and "key" not in listed[0]
    assert anon_client.delete(f"{API}/auth/api-keys/{created.json()['id']}", headers=headers).status_code == 204
    assert_401(me(anon_client, key))
    assert_401(me(anon_client, key[:-2] + "xx"))


def test_only_admins_make_keys_for_others(login_as: Callable[..., TestClient], alice: dict) -> None:
    viewer = login_as("viewer")
    response = viewer.post(f"{API}/auth/api-keys", json={"name": "sneaky", "user_id": alice["id"]})
    assert response.status_code == 403


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alices_key(anon: TestClient, **fields: Any) -> dict:
    token = sign_in(anon).json()["access_token"]
    created = anon.post(f"{API}/auth/api-keys", json={"name": "etl", **fields}, headers=bearer(token))
    assert created.status_code == 201, created.text
    return {**created.json(), "token": token}


REVOKING_EVENTS: dict[str, Callable[[TestClient, TestClient, dict, str], Any]] = {
    "logout everywhere": lambda admin, anon, alice, token: anon.post(
        f"{API}/auth/logout", params={"everywhere": "true"}, headers=bearer(token)
    ),
    "password reset": lambda admin, anon, alice, token: admin.patch(
        f"{API}/users/{alice['id']}", json={"password": "a brand new password"}
    ),
    "role change": lambda admin, anon, alice, token: admin.patch(f"{API}/users/{alice['id']}", json={"role": "admin"}),
    "disable": lambda admin, anon, alice, token: admin.patch(f"{API}/users/{alice['id']}", json={"disabled": True}),
}


@pytest.mark.parametrize("event_name", list(REVOKING_EVENTS))
def test_signing_out_everywhere_revokes_api_keys(
    client: TestClient, anon_client: TestClient, alice: dict, event_name: str
) -> None:
    key = alices_key(anon_client)
    assert me(anon_client, key["key"]).status_code == 200
    done = REVOKING_EVENTS[event_name](client, anon_client, alice, key["token"])
    assert done.status_code in (200, 204), done.text
    assert_401(me(anon_client, key["key"]))  # and so never acts with a new role either
    listed = {k["id"]: k for k in client.get(f"{API}/auth/api-keys").json()}
    assert listed[key["id"]]["revoked_at"] is not None


def test_api_keys_expire(anon_client: TestClient, alice: dict, app: FastAPI) -> None:
    now = datetime.now(UTC)
    default = alices_key(anon_client)
    short = alices_key(anon_client, expires_in_days=1)
    assert abs(datetime.fromisoformat(default["expires_at"]) - (now + timedelta(days=90))) < timedelta(minutes=1)
    assert abs(datetime.fromisoformat(short["expires_at"]) - (now + timedelta(days=1))) < timedelta(minutes=1)
    listed = anon_client.get(f"{API}/auth/api-keys", headers=bearer(short["token"])).json()
    assert {k["id"]: k["expires_at"] for k in listed}[short["id"]] == short["expires_at"]
    with app.state.sessions() as session, session.begin():
        session.execute(update(ApiKey).where(ApiKey.id == uuid.UUID(short["id"])).values(expires_at=now))
    expired = me(anon_client, short["key"])
    assert_401(expired)
    assert expired.json()["detail"] == "API key has expired"
    assert me(anon_client, default["key"]).status_code == 200


@pytest.mark.parametrize("days", [0, 366, -5])
def test_api_key_lifetime_beyond_the_allowed_range_is_422(anon_client: TestClient, alice: dict, days: int) -> None:
    token = sign_in(anon_client).json()["access_token"]
    refused = anon_client.post(
        f"{API}/auth/api-keys", json={"name": "etl", "expires_in_days": days}, headers=bearer(token)
    )
    assert refused.status_code == 422
    assert "1..365" in refused.json()["detail"]
    assert anon_client.get(f"{API}/auth/api-keys", headers=bearer(token)).json() == []


def test_reused_refresh_token_refuses_that_sign_ins_access_tokens_at_once(anon_client: TestClient, alice: dict) -> None:
    first = sign_in(anon_client).json()
    other_sign_in = sign_in(anon_client).json()
    second = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    assert me(anon_client, first["access_token"]).status_code == 200
    assert me(anon_client, second["access_token"]).status_code == 200
    assert_401(anon_client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}))
    assert_401(me(anon_client, first["access_token"]))
    assert_401(me(anon_client, second["access_token"]))
    assert me(anon_client, other_sign_in["access_token"]).status_code == 200  # another sign-in is not touched


def test_logout_ends_every_access_token_of_that_sign_in(anon_client: TestClient, alice: dict) -> None:
    first = sign_in(anon_client).json()
    other_sign_in = sign_in(anon_client).json()
    second = anon_client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    out = anon_client.post(f"{API}/auth/logout", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert out.status_code == 204
    assert_401(me(anon_client, first["access_token"]))  # issued before the refresh, same sign-in
    assert me(anon_client, other_sign_in["access_token"]).status_code == 200


def test_token_and_sign_in_revocation_cost_one_query(anon_client: TestClient, alice: dict, app: FastAPI) -> None:
    token = sign_in(anon_client).json()["access_token"]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    for engine in engines(app):
        event.listen(engine, "before_cursor_execute", seen)
    try:
        assert me(anon_client, token).status_code == 200
    finally:
        for engine in engines(app):
            event.remove(engine, "before_cursor_execute", seen)
    assert len([s for s in statements if "revoked_tokens" in s]) == 1
