"""The UI's sessions: sign-in and sign-out pages, a signed cookie holding the tokens the users engine issued, a
gate in front of every page and callback, and ``signed_session`` — the engine session with the signed-in user's
principal on it, exactly as the API's ``SessionDep`` puts it there (``users.authenticate`` then
``access.principal_for`` / ``access.act_as``).

The cookie holds an access token and its refresh token, signed (itsdangerous, keyed by DUST_SECRET_KEY) so that a
tampered cookie is refused before any token is read; HttpOnly (no script reads it), SameSite=Lax (a cross-site POST
never carries it). An access token that has expired is traded for a new pair with the refresh token, which rotates
as over the API; sign-out revokes the sign-in (``users.logout``).

Cross-site request forgery: besides SameSite=Lax, every POST must come from this origin — its ``Origin`` header,
which browsers send on every POST (the UI's pages ask for ``Referrer-Policy: same-origin`` so that it is the real
origin, not ``null``), must name this server — and Dash's callback route takes only ``application/json``, which no
HTML form can send and no other site's script can send without a CORS preflight that this server does not grant.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit

from flask import Flask, Response, current_app, g, redirect, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session
from starlette.datastructures import State
from werkzeug.wrappers import Response as BaseResponse

from dust.api.deps import transaction
from dust.core.config import Settings
from dust.core.errors import Unauthorized
from dust.engine import access, users

COOKIE = "dust_ui"
SALT = "dust.ui.session"
STATE = "DUST_STATE"  # Flask config key: the FastAPI app's state (sessions, settings, caches, writer)
# What answers without a session: the sign-in page and the static files every page loads (library code and the
# stylesheet, the same for everyone). Every other page, Dash's layout and every callback need a session.
PUBLIC_PREFIXES = ("/login", "/assets/", "/_dash-component-suites/", "/_favicon.ico")
CALLBACK = "/_dash-update-component"


def install(server: Flask, state: State) -> None:
    """The sign-in and sign-out routes and the gate, on the Flask server Dash runs on."""
    server.config[STATE] = state
    server.add_url_rule("/login", "dust_login", login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "dust_logout", logout, methods=["POST"])
    server.before_request(gate)
    server.after_request(finish)


def _state() -> State:
    return current_app.config[STATE]


def settings() -> Settings:
    """The app's settings (as the API's ``SettingsDep``)."""
    settings: Settings = _state().settings
    return settings


def _serializer() -> URLSafeTimedSerializer:
    secret = _state().settings.secret_key
    assert secret is not None  # create_app refuses to start without one
    return URLSafeTimedSerializer(secret.get_secret_value(), salt=SALT)


def encode(tokens: dict[str, str]) -> str:
    return _serializer().dumps(tokens)


def decode(cookie: str | None) -> dict[str, str] | None:
    """The tokens in a cookie we signed, or None (no cookie, a forged or expired one)."""
    if not cookie:
        return None
    max_age = _state().settings.refresh_token_days * 86_400  # past it the refresh token is dead too
    try:
        tokens = _serializer().loads(cookie, max_age=max_age)
    except BadSignature:
        return None
    return tokens if isinstance(tokens, dict) and {"a", "r"} <= tokens.keys() else None


# --- the gate -----------------------------------------------------------------------------------------------


def gate(path: str | None = None) -> BaseResponse | None:
    """Before every request: forged posts refused; without a valid session, pages go to sign-in and Dash's
    routes answer 401."""
    path = path or request.path
    if request.method == "POST" and not same_origin():
        return _refusal(403, "cross-site request refused: post from the DUST UI itself")
    if path.startswith(PUBLIC_PREFIXES):
        return None
    if path == CALLBACK and not request.is_json:
        return _refusal(415, "callbacks take application/json")
    if signed_in_token() is not None:
        return None
    if path.startswith("/_dash-"):
        return _refusal(401, "sign in first")
    target = request.full_path.rstrip("?") if request.query_string else request.path
    return redirect(f"{request.script_root}/login?next={quote(request.script_root + target)}")


def same_origin() -> bool:
    """A POST from a page of this server: its Origin (when the browser sends one) names this host."""
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's post (browsers send Origin on every POST); it still needs the cookie
        return True
    return origin == f"{request.scheme}://{request.host}"


def signed_in_token() -> str | None:
    """The access token of this request's session, refreshed if it had expired; None without a valid session."""
    if "dust_token" in g:
        return g.dust_token
    tokens = decode(request.cookies.get(COOKIE))
    token = None
    if tokens is not None:
        token = tokens["a"] if _valid(tokens["a"]) else _refreshed(tokens["r"])
    g.dust_token = token
    return token


def _valid(token: str) -> bool:
    try:
        with transaction(_state(), read_only=True) as session:
            users.authenticate(session, _state().settings, token)
    except users.AuthError:
        return False
    return True


def _refreshed(refresh_token: str) -> str | None:
    """A new pair for the refresh token (which retires it), kept for ``finish`` to put in the cookie."""
    with transaction(_state(), read_only=False) as session:
        pair = users.refresh(session, _state().settings, refresh_token)
    if isinstance(pair, users.Refused):
        g.dust_clear = True
        return None
    g.dust_cookie = encode({"a": pair.access_token, "r": pair.refresh_token})
    return pair.access_token


def finish(response: Response) -> Response:
    """After every request: a refreshed cookie set, a dead one cleared, and headers for the UI's pages."""
    if "dust_cookie" in g:
        _set_cookie(response, g.dust_cookie)
    elif g.get("dust_clear"):
        response.delete_cookie(COOKIE, path=request.script_root or "/")
    # same-origin: the browser then sends the real Origin on our POSTs, which the gate checks (no-referrer,
    # the API's policy, would make it "null").
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith(("/assets/", "/_dash-component-suites/")):
        response.headers["Cache-Control"] = "no-store"
    return response


def _set_cookie(response: BaseResponse, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        httponly=True,
        samesite="Lax",
        secure=request.scheme == "https",
        path=request.script_root or "/",
    )


def _refusal(status: int, detail: str) -> Response:
    return Response(f'{{"detail": "{detail}"}}', status=status, mimetype="application/json")


# --- the engine session -----------------------------------------------------------------------------------------


@contextmanager
def signed_session(*, write: bool = False) -> Iterator[Session]:
    """A transaction with the signed-in user's principal on it, committed if the block succeeds. Raises
    Unauthorized without a valid session (the gate has already turned such requests away)."""
    token = signed_in_token()
    if token is None:
        raise Unauthorized("sign in first")
    state = _state()
    with transaction(state, read_only=not write) as session:
        try:
            signed = users.authenticate(session, state.settings, token)
        except users.AuthError as problem:
            raise Unauthorized(str(problem)) from None
        who = access.principal_for(
            signed.user,
            state.settings,
            request_id=request.headers.get("X-Request-ID"),
            client=request.remote_addr,
            method=request.method,
            path=request.path[:512],
        )
        access.act_as(session, who)
        yield session


def whoami() -> access.Principal | None:
    """The signed-in user's principal, for what the layout shows (name, role, admin-only parts)."""
    if signed_in_token() is None:
        return None
    with signed_session() as session:
        return access.principal(session)


# --- sign-in and sign-out pages ---------------------------------------------------------------------------------


def login() -> BaseResponse:
    """GET: the sign-in form. POST: sign in with the users engine; on success, the cookie and the page asked for."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return _login_page(target, None, 200)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    if not username or not password:
        return _login_page(target, "Enter your username and password.", 422)
    client = (request.remote_addr or "-")[:64]
    with transaction(_state(), read_only=False) as session:  # a refusal is returned: its failure count commits
        result = users.login(session, _state().settings, username, password, client)
    if isinstance(result, users.Refused):
        return _login_page(target, result.detail, result.status)
    response = redirect(target)
    _set_cookie(response, encode({"a": result.access_token, "r": result.refresh_token}))
    return response


def logout() -> BaseResponse:
    """Revoke the session's sign-in (its access and refresh tokens) and forget the cookie."""
    token = signed_in_token()
    if token is not None:
        with transaction(_state(), read_only=False) as session:
            try:
                signed = users.authenticate(session, _state().settings, token)
            except users.AuthError:
                signed = None
            if signed is not None:
                users.logout(session, _state().settings, signed.user.id, signed.claims, False)
    g.pop("dust_cookie", None)
    response = redirect(f"{request.script_root}/login")
    response.delete_cookie(COOKIE, path=request.script_root or "/")
    return response


def _safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path of the UI only, never another site (no open redirect)."""
    root = request.script_root or ""
    home = f"{root}/"
    if not value:
        return home
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(home) or value.startswith("//") or "\\" in value:
        return home
    return value


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · DUST</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}/assets/bootstrap.min.css"></head>
<body class="bg-light"><main class="container" style="max-width: 26rem; margin-top: 10vh">
<h1 class="h3 mb-3">Sign in to DUST</h1>{error}
<form method="post" action="{root}/login" class="card card-body shadow-sm">
<input type="hidden" name="next" value="{next}">
<div class="mb-3"><label for="username" class="form-label">Username</label>
<input id="username" name="username" class="form-control" autocomplete="username" required autofocus></div>
<div class="mb-3"><label for="password" class="form-label">Password</label>
<input id="password" name="password" type="password" class="form-control" autocomplete="current-password" required>
</div><button type="submit" class="btn btn-primary w-100">Sign in</button></form>
<p class="text-muted small mt-3">The same users as the API. `dust demo` prints the demo admin's password.</p>
</main></body></html>"""


def _login_page(target: str, error: str | None, status: int) -> Response:
    shown = f'<div class="alert alert-danger" role="alert">{html.escape(error)}</div>' if error else ""
    body = _PAGE.format(root=html.escape(request.script_root), next=html.escape(target), error=shown)
    return Response(body, status=status, mimetype="text/html")
