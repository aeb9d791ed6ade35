"""``Idempotency-Key`` on POST: a retried request gets the first response instead of doing the work twice.

The key is claimed before the request runs, so two concurrent retries cannot both create; a successful
(2xx) response is stored and replayed; any other outcome releases the key so the client may try again.
A replay is a read of what the first request made, so it goes to the audit trail.

Routes that issue credentials (``passthrough``: sign-in, refresh, new API keys) ignore the header: a stored
answer would keep the secret at rest for hours and could hand it out again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dust.api.deps import transaction
from dust.api.middleware import buffered, header
from dust.api.problems import problem
from dust.core.config import Settings
from dust.core.errors import ProblemType
from dust.engine import users
from dust.storage.db import unit_of_work
from dust.storage.models import utcnow
from dust.storage.repositories import audit as audit_repo
from dust.storage.repositories import idempotency as repo

MAX_KEY = 255


@dataclass(frozen=True)
class _Caller:
    id: uuid.UUID
    username: str
    role: str


class Idempotency:
    def __init__(
        self,
        app: ASGIApp,
        state: State,
        settings: Settings,
        passthrough: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.state = state  # the app's: sessions, caches, batch writer
        self.sessions: sessionmaker[Session] = state.sessions
        self.settings = settings
        self.ttl = timedelta(hours=settings.idempotency_ttl_hours)
        self.passthrough = passthrough  # paths (with the API prefix) whose answers are never stored

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST" or _route_path(scope) in self.passthrough:
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= MAX_KEY:
            refused = problem(400, f"Idempotency-Key must be 1..{MAX_KEY} characters", type_=ProblemType.bad_request)
            await refused(scope, receive, send)
            return
        caller = await to_thread.run_sync(self._caller, header(scope, b"authorization") or "")
        if caller is None:  # not signed in: the app answers 401 and there is nothing to remember
            await self.app(scope, receive, send)
            return
        body, replay_receive = await buffered(receive)
        target = f"{scope['path']}?{scope.get('query_string', b'').decode('latin-1')}".encode()
        # Keys are per user: another user's identical request must never be answered from this one's.
        where = f"{caller.id}:{hashlib.sha256(target).hexdigest()}"
        fingerprint = hashlib.sha256(target + b"\n" + body).hexdigest()
        held = await to_thread.run_sync(self._claim, where, key, fingerprint, _audit_row(scope, caller))
        if held is not None:
            await held(scope, receive, send)
            return
        status, chunks = 500, []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            await to_thread.run_sync(self._settle, where, key, status, b"".join(chunks))

    def _caller(self, authorization: str) -> _Caller | None:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return None
        try:
            with transaction(self.state, read_only=True) as session:
                user = users.authenticate(session, self.settings, credential.strip()).user
            return _Caller(user.id, user.username, user.role)
        except users.AuthError:
            return None

    def _claim(self, where: str, key: str, fingerprint: str, audit: dict[str, Any]) -> Response | None:
        """Claim the key; or the answer for a key already held, a replay recorded in the same transaction."""
        with unit_of_work(self.sessions) as session:
            repo.expire(session, datetime.now(UTC) - self.ttl)
            row = repo.claim(session, where, key, fingerprint)
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                detail = "this Idempotency-Key was already used with a different request; use a new key"
                return problem(422, detail, type_=ProblemType.idempotency_mismatch)
            if row.status is None:
                detail = "a request with this Idempotency-Key is still in progress; retry shortly"
                return problem(409, detail, type_=ProblemType.idempotency_in_progress)
            resource_id = _resource_id(row.body) or where.partition(":")[2]
            audit_repo.append(session, [{**audit, "at": utcnow(), "resource_id": resource_id}])
            return _replay(row.status, row.body or b"")

    def _settle(self, where: str, key: str, status: int, body: bytes) -> None:
        with unit_of_work(self.sessions) as session:
            if 200 <= status < 300:
                repo.finish(session, where, key, status, body)
            else:
                repo.release(session, where, key)


def _route_path(scope: Scope) -> str:
    """The path the routes see: without a mount's ``root_path`` or a trailing slash."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def _audit_row(scope: Scope, caller: _Caller) -> dict[str, Any]:
    """The audit record of a replay, but for when and what: who asked, from where, in which request."""
    return {
        "user_id": caller.id,
        "username": caller.username,
        "role": caller.role,
        "action": "read",
        "resource": "replay",
        "entity_id": None,
        "request_id": scope.get("state", {}).get("request_id"),
        "client": scope["client"][0][:64] if scope.get("client") else None,
        "method": scope["method"],
        "path": scope["path"][:512],
    }


def _resource_id(body: bytes | None) -> str | None:
    """The id of what the first request made (``{"id": …}`` in its answer), if it names one."""
    try:
        made = json.loads(body or b"null")
    except ValueError:
        return None
    found = made.get("id") if isinstance(made, dict) else None
    return found if isinstance(found, str) and len(found) <= 64 else None


def _replay(status: int, body: bytes) -> Response:
    media = "application/json"
    try:
        json.loads(body or b"null")
    except ValueError:
        media = "application/octet-stream"
    return Response(body, status_code=status, media_type=media, headers={"Idempotent-Replayed": "true"})
