"""``Idempotency-Key`` on POST: a retried request gets the first response instead of doing the work twice.

The key is claimed before the request runs, so two concurrent retries cannot both create; a successful
(2xx) response is stored and replayed; any other outcome releases the key so the client may try again.
A replay is a read of what the first request made, so it goes to the audit trail.

A process may die with a request in flight. So a claim has an owner (this process: host, pid, start time)
and a lease it renews while the request runs, and the request's own transaction marks the claim committed as
it commits (``deps.transaction``'s ``before_commit``). A retry of a claim whose work never committed takes it
over once the owner is known to be gone (a process of this host that no longer runs) or its lease has run
out, and runs the request; the old owner, were it still alive, could then no longer mark the claim, and its
transaction rolls back. A claim whose work committed is never run again: its answer is replayed, or, if the
process died before it could keep it, a retry is told so (409).

Routes that issue credentials (``passthrough``: sign-in, refresh, new API keys) ignore the header: a stored
answer would keep the secret at rest for hours and could hand it out again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from anyio import sleep, to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dust.api.deps import BEFORE_COMMIT, transaction
from dust.api.middleware import buffered, header
from dust.api.problems import problem
from dust.core.config import Settings
from dust.core.errors import Conflict, ProblemType
from dust.core.logging import get_logger
from dust.engine import users
from dust.storage.db import unit_of_work
from dust.storage.models import IdempotencyKey, utcnow
from dust.storage.repositories import audit as audit_repo
from dust.storage.repositories import idempotency as repo

MAX_KEY = 255
LEASE = timedelta(seconds=30)  # a claim's owner renews it every third of this while its request runs
log = get_logger(__name__)


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
        owner = this_process(os.getpid())
        held = await to_thread.run_sync(self._claim, where, key, fingerprint, owner, _audit_row(scope, caller))
        if held is not None:
            await held(scope, receive, send)
            return
        scope.setdefault("state", {})[BEFORE_COMMIT] = functools.partial(_mark, where=where, key=key, owner=owner)
        status, chunks = 500, []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        renewing = asyncio.ensure_future(self._renew(where, key, owner))
        try:
            await self.app(scope, replay_receive, capture)
        finally:
            renewing.cancel()
            await to_thread.run_sync(self._settle, where, key, owner, status, b"".join(chunks))

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

    def _claim(self, where: str, key: str, fingerprint: str, owner: str, audit: dict[str, Any]) -> Response | None:
        """Claim the key (or take over an abandoned claim); or the answer for a key already held, a replay
        recorded in the same transaction."""
        with unit_of_work(self.sessions) as session:
            now = datetime.now(UTC)
            repo.expire(session, now - self.ttl)
            row = repo.claim(session, where, key, fingerprint, owner, now + LEASE)
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                detail = "this Idempotency-Key was already used with a different request; use a new key"
                return problem(422, detail, type_=ProblemType.idempotency_mismatch)
            if row.status is None:
                return self._unsettled(session, row, owner, now)
            resource_id = _resource_id(row.body) or where.partition(":")[2]
            audit_repo.append(session, [{**audit, "at": utcnow(), "resource_id": resource_id}])
            return _replay(row.status, row.body or b"")

    def _unsettled(self, session: Session, row: IdempotencyKey, owner: str, now: datetime) -> Response | None:
        """A claim without an answer: None once taken over (its owner is gone and its work never committed),
        else why the retry cannot run."""
        abandoned = now >= (row.lease_until or row.created_at + LEASE) or _gone(row.owner)
        if not abandoned:
            detail = "a request with this Idempotency-Key is still in progress; retry shortly"
            return problem(409, detail, type_=ProblemType.idempotency_in_progress)
        previous = row.owner
        if row.committed_at is None and repo.take_over(session, row, owner, now + LEASE):
            log.warning("idempotency claim taken over: its process is gone", previous_owner=previous)
            return None
        detail = (
            "the request with this Idempotency-Key was carried out, but the server stopped before it could keep "
            "the answer; it is not run again: read what it changed (or retry with a new key to do it again)"
        )
        return problem(409, detail, type_=ProblemType.conflict)

    async def _renew(self, where: str, key: str, owner: str) -> None:
        """Keep the claim's lease while its request runs."""
        while True:
            await sleep(LEASE.total_seconds() / 3)
            try:
                await to_thread.run_sync(self._extend, where, key, owner)
            except Exception as error:  # the database is busy or gone: the request will meet it too
                log.warning("idempotency lease not renewed", error=str(error))

    def _extend(self, where: str, key: str, owner: str) -> None:
        with unit_of_work(self.sessions) as session:
            repo.renew(session, where, key, owner, datetime.now(UTC) + LEASE)

    def _settle(self, where: str, key: str, owner: str, status: int, body: bytes) -> None:
        """Keep a 2xx answer; free the key after any other, unless the work committed (then keep that answer:
        the work must not run twice)."""
        with unit_of_work(self.sessions) as session:
            if 200 <= status < 300 or not repo.release(session, where, key, owner):
                repo.finish(session, where, key, owner, status, body)


def _mark(session: Session, *, where: str, key: str, owner: str) -> None:
    """The last statement of the request's transaction: its work is committing under this claim."""
    if not repo.commit_mark(session, where, key, owner):
        raise Conflict(
            "this request's Idempotency-Key was taken over by a retry while it ran, so it was not carried out; "
            "the retry's answer is the one to use"
        )


@functools.cache
def this_process(pid: int) -> str:
    """The owner of this process's claims: ``host:pid:start time:random``."""
    return f"{socket.gethostname()[:100]}:{pid}:{_started(pid) or ''}:{uuid.uuid4().hex[:12]}"


def _gone(owner: str | None) -> bool:
    """Whether the process that made a claim is known to have ended: it ran on this host, and no process runs
    under its pid, or one started at another time (the pid reused). Of another host's, only the lease tells."""
    host, pid, started, _ = (owner or "").split(":") if (owner or "").count(":") == 3 else ("", "0", "", "")
    if host != socket.gethostname()[:100] or not pid.isdigit():
        return False
    now = _started(int(pid))
    return now is None or bool(started and now and now != started)  # "": /proc cannot say, so not known gone


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), "" where /proc does not say, or None
    if no such process runs (a zombie has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return None if Path("/proc/self/stat").exists() else _alive(pid)
    except OSError:
        return ""
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return ""


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
