"""The UI's sessions, on SQLite and PostgreSQL: nothing answers without one, the cookie is the users engine's
tokens (HttpOnly, SameSite=Lax, signed), sign-out revokes them, and other sites cannot drive a callback."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer

from dust.core.config import Settings
from dust.core.security import Role, issue_access_token
from dust.engine import users
from dust.engine.users import UserCreate
from dust.ui.auth import COOKIE, SALT

PASSWORD = "a long enough password"
HERE = "http://testserver"
# What the browser posts when the Explore page loads: its search callback.
CALLBACK = {
    "output": "explore-results.children",
    "outputs": {"id": "explore-results", "property": "children"},
    "inputs": [
        {"id": "explore-go", "property": "n_clicks", "value": None},
        {"id": "explore-q", "property": "value", "value": "doe"},
        {"id": "explore-kind", "property": "value", "value": ""},
        {"id": "explore-attrs", "property": "value", "value": None},
    ],
    "changedPropIds": [],
    "state": [],
}


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    with app.state.sessions() as session, session.begin():
        users.create(session, UserCreate(username="ui-admin", password=PASSWORD, role=Role.admin))
    return TestClient(app, follow_redirects=False)


def _sign_in(client: TestClient) -> None:
    signed = client.post(
        "/ui/login",
        data={"username": "ui-admin", "password": PASSWORD, "next": "/ui/insights"},
        headers={"Origin": HERE},
    )
    assert signed.status_code == 302 and signed.headers["location"] == "/ui/insights"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie


def _callback(client: TestClient, **headers: str) -> object:
    return client.post("/ui/_dash-update-component", json=CALLBACK, headers={"Origin": HERE, **headers})


def test_root_goes_to_the_ui_and_pages_ask_to_sign_in(browser: TestClient) -> None:
    assert browser.get("/").headers["location"] == "/ui/"
    page = browser.get("/ui/insights?x=1")
    assert page.status_code == 302 and page.headers["location"] == "/ui/login?next=/ui/insights%3Fx%3D1"
    assert browser.get("/ui/login").status_code == 200
    assert browser.get("/ui/_dash-layout").status_code == 401
    assert _callback(browser).status_code == 401  # type: ignore[attr-defined]


def test_a_signed_in_callback_answers_with_the_engine_s_results(browser: TestClient) -> None:
    _sign_in(browser)
    answer = _callback(browser)
    assert answer.status_code == 200, answer.text  # type: ignore[attr-defined]
    assert "No entity matches" in answer.text  # type: ignore[attr-defined]
    assert browser.get("/ui/").status_code == 200


def test_a_wrong_password_is_refused_with_the_engine_s_words(browser: TestClient) -> None:
    refused = browser.post("/ui/login", data={"username": "ui-admin", "password": "wrong password"})
    assert refused.status_code == 401 and "wrong username or password" in refused.text
    assert COOKIE not in refused.headers.get("set-cookie", "")


def test_sign_out_revokes_the_session_s_tokens(browser: TestClient) -> None:
    _sign_in(browser)
    kept = browser.cookies.get(COOKIE)
    assert browser.post("/ui/logout", headers={"Origin": HERE}).status_code == 302
    browser.cookies.set(COOKIE, kept, path="/ui")  # a copy of the cookie taken before: its tokens are revoked
    assert _callback(browser).status_code == 401  # type: ignore[attr-defined]


def test_a_forged_cookie_is_no_session(browser: TestClient) -> None:
    _sign_in(browser)
    cookie = browser.cookies.get(COOKIE)
    # One character of the signature changed: not the last, whose low bits base64 may not use.
    forged = cookie[:-5] + ("A" if cookie[-5] != "A" else "B") + cookie[-4:]
    browser.cookies.clear()
    browser.cookies.set(COOKIE, forged, path="/ui")
    assert _callback(browser).status_code == 401  # type: ignore[attr-defined]


def test_other_sites_cannot_drive_a_callback_or_sign_in(browser: TestClient) -> None:
    _sign_in(browser)
    assert _callback(browser, Origin="https://evil.example").status_code == 403  # type: ignore[attr-defined]
    form = browser.post(
        "/ui/_dash-update-component",
        content=json.dumps(CALLBACK),
        headers={"Origin": HERE, "Content-Type": "text/plain"},
    )
    assert form.status_code == 415  # what an HTML form can send is not a callback
    login = browser.post(
        "/ui/login", data={"username": "ui-admin", "password": PASSWORD}, headers={"Origin": "https://evil.example"}
    )
    assert login.status_code == 403


def test_after_sign_in_only_pages_of_the_ui_are_gone_to(browser: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/entities"):
        signed = browser.post("/ui/login", data={"username": "ui-admin", "password": PASSWORD, "next": target})
        assert signed.headers["location"] == "/ui/"


def test_an_expired_access_token_is_renewed_once_and_its_refresh_token_retired(
    browser: TestClient, settings: Settings
) -> None:
    _sign_in(browser)
    secret = settings.secret_key.get_secret_value()  # type: ignore[union-attr]
    cookies = URLSafeTimedSerializer(secret, salt=SALT)
    tokens = cookies.loads(browser.cookies[COOKIE])
    claims = jwt.decode(tokens["a"], options={"verify_signature": False})
    lapsed = timedelta(seconds=-1)  # the session's own access token, as it is after its 15 minutes
    expired, _ = issue_access_token(
        secret, uuid.UUID(claims["sub"]), claims["role"], claims["ver"], lapsed, uuid.UUID(claims["sid"])
    )

    (jar,) = [c for c in browser.cookies.jar if c.name == COOKIE]

    def with_tokens(access: str, refresh: str) -> None:
        browser.cookies.clear()
        browser.cookies.set(COOKIE, cookies.dumps({"a": access, "r": refresh}), domain=jar.domain, path=jar.path)

    with_tokens(expired, tokens["r"])
    answer = _callback(browser)
    assert answer.status_code == 200, answer.text  # type: ignore[attr-defined]
    renewed = cookies.loads(browser.cookies[COOKIE])  # the answer set a new pair
    assert renewed["r"] != tokens["r"] and renewed["a"] != expired
    assert _callback(browser).status_code == 200  # type: ignore[attr-defined]
    # the old refresh token was retired by its use: played again, it ends the whole sign-in
    with_tokens(expired, tokens["r"])
    assert _callback(browser).status_code == 401  # type: ignore[attr-defined]
    with_tokens(renewed["a"], renewed["r"])
    assert _callback(browser).status_code == 401  # type: ignore[attr-defined]
