"""/alerts: what trigger rules raised, on the entities you may see; acknowledge and resolve them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path, Query

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine import alerts
from dust.engine.alerts import AlertList, AlertPublic, AlertUpdate, Severity
from dust.engine.fields import Timestamp
from dust.engine.paging import MAX_CURSOR, MAX_OFFSET

router = Router(prefix="/alerts", tags=["alerts"])
AlertId = Annotated[int, Path(ge=1, le=MAX_OFFSET, description="The alert's id.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such alert, or not yours to see."}}
SENSITIVE: dict[int | str, dict[str, Any]] = {
    403: {"description": "The alert is about a sensitive schema: de-identified readers get aggregates only."}
}
FINAL: dict[int | str, dict[str, Any]] = {
    409: {"description": "A step back: a resolved alert is final, an acknowledged one cannot be reopened."}
}


@router.get(
    "",
    response_model=AlertList,
    responses={404: {"description": "An entity you may not see."}},
    **allow(Permission.read),
)
def list_(
    session: SessionDep,
    settings: SettingsDep,
    entity_id: Annotated[uuid.UUID | None, Query(description="Alerts on this entity.")] = None,
    subject_id: Annotated[uuid.UUID | None, Query(description="Alerts fired by this entity's values.")] = None,
    trigger_id: Annotated[uuid.UUID | None, Query(description="Alerts raised by this rule.")] = None,
    severity: Annotated[
        str | None, Query(max_length=200, description="info, low, medium, high or critical, or a comma list.")
    ] = None,
    min_severity: Annotated[Severity | None, Query(description="This severity or above.")] = None,
    state: Annotated[
        str | None, Query(max_length=200, description="open, acknowledged or resolved, or a comma list.")
    ] = None,
    start: Annotated[Timestamp | None, Query(alias="from", description="Raised at or after this time.")] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="Raised at or before this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> AlertList:
    """Alerts on the entities you may see, newest first."""
    return alerts.list_alerts(
        session,
        entity_id=entity_id,
        subject_id=subject_id,
        trigger_id=trigger_id,
        severity=severity,
        min_severity=min_severity,
        state=state,
        start=start,
        end=end,
        limit=min(limit, settings.page_size_max),
        cursor=cursor,
    )


@router.get("/{alert_id}", response_model=AlertPublic, responses={**NOT_FOUND, **SENSITIVE}, **allow(Permission.read))
def get(alert_id: AlertId, session: SessionDep) -> AlertPublic:
    """One alert."""
    return alerts.get_alert(session, alert_id)


@router.patch("/{alert_id}", response_model=AlertPublic, responses={**NOT_FOUND, **FINAL}, **allow(Permission.write))
def update(alert_id: AlertId, data: AlertUpdate, session: SessionDep) -> AlertPublic:
    """Acknowledge or resolve an alert, with an optional note; repeating its state changes nothing."""
    return alerts.update_alert(session, alert_id, data)
