"""/webhooks: the outbox of webhook calls that rules made, for admins: what was delivered, what is dead, retry."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path, Query

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine import webhooks
from dust.engine.paging import MAX_CURSOR, MAX_OFFSET
from dust.engine.webhooks import DeliveryList, DeliveryPublic, State

router = Router(prefix="/webhooks", tags=["webhooks"])
DeliveryId = Annotated[int, Path(ge=1, le=MAX_OFFSET, description="The delivery's id.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such delivery."}}
DELIVERED: dict[int | str, dict[str, Any]] = {409: {"description": "The delivery was delivered already."}}


@router.get("/deliveries", response_model=DeliveryList, **allow(Permission.admin))
def deliveries(
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[State | None, Query(description="pending, delivered or dead (the dead letters).")] = None,
    trigger_id: Annotated[uuid.UUID | None, Query(description="Only the deliveries of this rule.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> DeliveryList:
    """Webhook deliveries, newest first, with their state, attempts and last error (never the rule's secret)."""
    return webhooks.list_deliveries(
        session, state=state, trigger_id=trigger_id, limit=min(limit, settings.page_size_max), cursor=cursor
    )


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryPublic,
    responses={**NOT_FOUND, **DELIVERED},
    **allow(Permission.admin),
)
def retry(delivery_id: DeliveryId, session: SessionDep) -> DeliveryPublic:
    """Send a dead or pending delivery again now: a dead one gets one attempt more."""
    return webhooks.retry(session, delivery_id)
