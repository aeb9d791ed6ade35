"""/triggers: rules that act on writes (admins only), their versions, and what they fired."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Response, status

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine import triggers
from dust.engine.paging import MAX_CURSOR
from dust.engine.triggers import (
    FiringList,
    TriggerCreate,
    TriggerCreated,
    TriggerList,
    TriggerPublic,
    TriggerUpdate,
    TriggerVersionPublic,
)

router = Router(prefix="/triggers", tags=["triggers"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such trigger."}}
CLASH: dict[int | str, dict[str, Any]] = {409: {"description": "Another trigger has this name."}}


@router.post(
    "",
    response_model=TriggerCreated,
    status_code=status.HTTP_201_CREATED,
    responses=CLASH,
    **allow(Permission.admin),
)
def create(data: TriggerCreate, session: SessionDep, settings: SettingsDep) -> TriggerCreated:
    """A rule that acts on writes. The answer carries the secret that signs its webhooks, shown only here."""
    return triggers.create(session, data, allow_private=settings.webhook_allow_private)


@router.get("", response_model=TriggerList, **allow(Permission.admin))
def list_(session: SessionDep) -> TriggerList:
    """Every rule, enabled or not, by name."""
    return triggers.list_(session)


@router.get("/{trigger_id}", response_model=TriggerPublic, responses=NOT_FOUND, **allow(Permission.admin))
def get(trigger_id: uuid.UUID, session: SessionDep) -> TriggerPublic:
    return triggers.get(session, trigger_id)


@router.patch(
    "/{trigger_id}", response_model=TriggerPublic, responses={**NOT_FOUND, **CLASH}, **allow(Permission.admin)
)
def update(trigger_id: uuid.UUID, data: TriggerUpdate, session: SessionDep, settings: SettingsDep) -> TriggerPublic:
    """Change a rule (``enabled: false`` disables it); a changed rule gets a new version."""
    return triggers.update(session, trigger_id, data, allow_private=settings.webhook_allow_private)


@router.delete("/{trigger_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND, **allow(Permission.admin))
def delete(trigger_id: uuid.UUID, session: SessionDep) -> Response:
    """Delete a rule with its versions and firings; the alerts it raised stay."""
    triggers.delete(session, trigger_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{trigger_id}/versions",
    response_model=list[TriggerVersionPublic],
    responses=NOT_FOUND,
    **allow(Permission.admin),
)
def versions(trigger_id: uuid.UUID, session: SessionDep) -> list[TriggerVersionPublic]:
    """Every version of the rule, oldest first."""
    return triggers.versions(session, trigger_id)


@router.get("/{trigger_id}/firings", response_model=FiringList, responses=NOT_FOUND, **allow(Permission.admin))
def firings(
    trigger_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> FiringList:
    """What the rule fired on and did, newest first, each with its cause chain."""
    return triggers.firings(session, trigger_id, limit=min(limit, settings.page_size_max), cursor=cursor)
