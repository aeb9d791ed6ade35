"""/audit: the audit trail, read-only, for admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import audit
from dust.engine.audit import AuditList
from dust.engine.fields import Timestamp
from dust.engine.paging import MAX_CURSOR

router = Router(tags=["audit"])


@router.get("/audit", response_model=AuditList, **allow(Permission.admin))
def search(
    session: SessionDep,
    entity_id: uuid.UUID | None = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[Timestamp | None, Query(alias="from")] = None,
    end: Annotated[Timestamp | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> AuditList:
    """Who read or changed what, newest first; filter by entity, user and time."""
    return audit.search(session, entity_id=entity_id, username=user, start=start, end=end, limit=limit, cursor=cursor)
