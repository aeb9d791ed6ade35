"""Dependencies shared by the routers, as ``Annotated`` aliases.

``SessionDep`` is the signed-in session: it authenticates the bearer credential and puts the principal on
the session, where the engine's access policy finds it. ``allow(permission)`` declares what a route needs
(and tags its OpenAPI operation with ``x-permission``, which the access tests read).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session
from starlette.datastructures import State

from dust.core.config import Settings
from dust.core.errors import Unauthorized
from dust.core.security import Permission
from dust.engine import access, caches, users
from dust.storage.db import AFTER_COMMIT, Write

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


READS = frozenset({"GET", "HEAD", "OPTIONS"})


@contextmanager
def transaction(state: State, *, read_only: bool, before_commit: Write | None = None) -> Iterator[Session]:
    """One request's transaction on the app's database, with the app's caches.

    A read's transaction is read-only: on SQLite it takes no lock, so reads never queue behind each other or a
    writer. The small writes it causes (audit records, an API key's last use) are committed right after it by
    the app's batch writer, together with those of every other request waiting meanwhile. ``before_commit``
    runs last in the transaction once the handler has succeeded (the Idempotency-Key's commit mark)."""
    with (state.reads if read_only else state.sessions)() as session:
        after: list[Write] = []
        session.info[AFTER_COMMIT] = after
        caches.attach(session, state.caches)
        with session.begin():
            yield session
            if before_commit is not None:
                before_commit(session)
        state.writer.write(after)


# request.state: what to run last in the request's write transaction (dust.api.idempotency puts it there)
BEFORE_COMMIT = "before_commit"


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns (before the response is sent)."""
    with _request_transaction(request) as session:
        yield session


def _request_transaction(request: Request) -> AbstractContextManager[Session]:
    read_only = request.method in READS
    hook = None if read_only else getattr(request.state, BEFORE_COMMIT, None)
    return transaction(request.app.state, read_only=read_only, before_commit=hook)


# Dependencies that neither wait nor block are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, and a hop there and back costs more than they do.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# scope="function": commit as soon as the handler returns, so a failed commit is an error response,
# never an acknowledged write that was lost.
PublicSessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def signed_in(
    request: Request, settings: SettingsDep, token: Annotated[str | None, Depends(bearer)]
) -> Iterator[Session]:
    """The request's transaction, with the bearer credential checked first in it and its principal on the
    session. One dependency, not a session and a check: each plain ``def`` dependency is a hop to the thread
    pool and back, which costs more than the check (a request without a credential opens no transaction)."""
    if not token:
        raise Unauthorized("sign in first: send Authorization: Bearer <access token or API key>")
    with _request_transaction(request) as session:
        _act_as_bearer(request, session, settings, token)
        yield session


def _act_as_bearer(request: Request, session: Session, settings: Settings, token: str) -> None:
    try:
        signed = users.authenticate(session, settings, token)
    except users.AuthError as problem:
        raise Unauthorized(str(problem)) from None
    user = signed.user
    assert settings.secret_key is not None  # authenticate() succeeded, so tokens are signed with it
    who = access.principal_for(
        user,
        settings,
        request_id=getattr(request.state, "request_id", None),
        client=request.client.host if request.client else None,
        method=request.method,
        path=request.url.path[:512],
    )
    access.act_as(session, who)
    request.state.user = user.username
    request.state.signed_in = signed


SessionDep = Annotated[Session, Depends(signed_in, scope="function")]


async def principal_of(session: SessionDep) -> access.Principal:
    who = access.principal(session)
    assert who is not None  # signed_in put it there
    return who


PrincipalDep = Annotated[access.Principal, Depends(principal_of)]


async def signed_in_as(request: Request, session: SessionDep) -> users.SignedIn:
    return request.state.signed_in


SignedInDep = Annotated[users.SignedIn, Depends(signed_in_as)]


def allow(permission: Permission) -> dict[str, Any]:
    """Route options requiring ``permission``: ``@router.get(..., **allow(Permission.read))``."""

    async def check(session: SessionDep) -> None:
        access.require(session, permission)

    return {"dependencies": [Depends(check)], "openapi_extra": {"x-permission": permission.value}}
