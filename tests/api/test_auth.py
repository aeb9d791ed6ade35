"""Sign-in, tokens and keys: every way a credential can be wrong answers 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from dust.core.config import Settings
from dust.core.security import issue_access_token
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
    secret = (settings.secret_key or "").encode()
    assert_401(me(anon_client, forged({"alg": "none", "typ": "JWT"}, claims, None)))
    assert_401(me(anon_client, forged({"alg": "HS256", "typ": "JWT"}, claims, b"another secret")))
    # HS/RS confusion: an RS256 header with an HMAC made from the server's key must not pass.
    assert_401(me(anon_client, forged({"alg": "RS256", "typ": "JWT"}, claims, secret)))
    assert_401(me(anon_client, forged({"alg": "HS512", "typ": "JWT"}, claims, secret)))
    good = forged({"alg": "HS256", "typ": "JWT"}, claims, secret)
    assert me(anon_client, good).status_code == 200  # the forger's recipe itself is right
    refresh_as_access = jwt.encode({**claims, "typ": "refresh"}, settings.secret_key, algorithm="HS256")
    assert_401(me(anon_client, refresh_as_access))


def test_expired_token_is_401(anon_client: TestClient, alice: dict, settings: Settings) -> None:
    token, _ = issue_access_token(settings.secret_key or "", uuid.UUID(alice["id"]), "viewer", 0, timedelta(seconds=-1))
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


def test_lockout_after_repeated_failures(anon_client: TestClient, alice: dict, client: TestClient) -> None:
    client.post(f"{API}/users", json={"username": "bob", "password": PASSWORD, "role": "viewer"})
    for _ in range(5):
        assert_401(sign_in(anon_client, password="guess guess guess"))
    locked = sign_in(anon_client)  # even the right password
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert sign_in(anon_client, username="bob").status_code == 200


def test_rate_limit_per_client(login_as: Callable[..., TestClient], anon_client: TestClient, alice: dict) -> None:
    for i in range(30):
        sign_in(anon_client, username=f"ghost-{i}", password="nope nope nope")
    limited = sign_in(anon_client)
    assert limited.status_code == 429
    assert "client" in limited.json()["detail"]


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
