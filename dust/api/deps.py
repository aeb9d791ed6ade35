"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dust.core.config import Settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the handler returns (before the response is sent)."""
    with request.app.state.sessions() as session, session.begin():
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# scope="function": commit as soon as the handler returns, so a failed commit is an error response,
# never an acknowledged write that was lost.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
