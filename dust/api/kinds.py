"""/kinds: per-kind field policy (which fields are sensitive)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import kinds
from dust.engine.entities import KIND
from dust.engine.kinds import KindPolicy, KindPublic

router = Router(prefix="/kinds", tags=["kinds"])
Kind = Annotated[str, Path(pattern=KIND)]


@router.get("", response_model=list[KindPublic], **allow(Permission.read))
def list_(session: SessionDep) -> list[KindPublic]:
    """Every kind with a policy of its own."""
    return kinds.list_(session)


@router.get(
    "/{kind}",
    response_model=KindPublic,
    responses={404: {"description": "The kind has no policy of its own (the defaults apply)."}},
    **allow(Permission.read),
)
def get(kind: Kind, session: SessionDep) -> KindPublic:
    """One kind's policy."""
    return kinds.get(session, kind)


@router.put("/{kind}", response_model=KindPublic, **allow(Permission.admin))
def put(kind: Kind, policy: KindPolicy, session: SessionDep) -> KindPublic:
    """Set which fields of this kind are sensitive."""
    return kinds.put(session, kind, policy)
