"""The audit trail: who read or changed which entity, tensor or relation, when, from where.

Records of changes join the transaction of the change, so a change and its record commit together. A read's
records are written just after its read-only transaction, by the request's batch writer, before the read is
answered (``dust.storage.writer``): a read never waits for the write lock or a commit of its own.
Work done without a principal (the process itself: embedded use, CLI, importers) is not recorded here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from dust.engine.access import principal
from dust.engine.paging import id_next_cursor, id_walk
from dust.engine.timegrid import as_utc
from dust.storage.db import after_commit, is_read_only
from dust.storage.models import utcnow
from dust.storage.repositories import audit as repo

Action = Literal["read", "create", "update", "delete"]


class AuditEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    user_id: uuid.UUID | None
    username: str | None
    role: str | None
    action: str
    resource: str
    resource_id: str | None
    entity_id: uuid.UUID | None
    request_id: str | None
    client: str | None
    method: str | None
    path: str | None


class AuditList(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None


def record(
    session: Session,
    action: Action,
    resource: str,
    resource_id: object | None = None,
    entity_ids: Iterable[uuid.UUID | None] = (None,),
) -> None:
    """Record ``action`` on ``resource``, once per entity it concerns."""
    record_each(session, action, resource, [(resource_id, entity_ids)])


def record_each(
    session: Session,
    action: Action,
    resource: str,
    targets: Iterable[tuple[object | None, Iterable[uuid.UUID | None]]],
) -> None:
    """Record ``action`` on several resources at once, as ``record`` would one by one: ``targets`` holds
    (resource id, entity ids) pairs. One INSERT for all, so bulk work costs no statement per resource."""
    who = principal(session)
    if who is None:
        return
    base = {
        "at": utcnow(),
        "user_id": who.user_id,
        "username": who.username,
        "role": who.role.value,
        "action": action,
        "resource": resource,
        "request_id": who.request_id,
        "client": who.client,
        "method": who.method,
        "path": who.path,
    }
    rows = [
        {**base, "resource_id": None if resource_id is None else str(resource_id), "entity_id": entity_id}
        for resource_id, entity_ids in targets
        for entity_id in entity_ids
    ]
    if not rows:
        return
    if is_read_only(session):
        after_commit(session, repo.appending(rows))
    else:
        repo.append(session, rows)


def search(
    session: Session,
    *,
    entity_id: uuid.UUID | None = None,
    username: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> AuditList:
    walk = id_walk(cursor)
    # In UTC here, as a 422: 0001-01-01T00:00+00:01 leaves the years a database stores once converted.
    start = None if start is None else as_utc(start, "from")
    end = None if end is None else as_utc(end, "to")
    rows, in_progress = repo.search(
        session, entity_id=entity_id, username=username, start=start, end=end, walk=walk, limit=limit + 1
    )
    return AuditList(
        items=[AuditEntry.model_validate(r) for r in rows[:limit]],
        next_cursor=id_next_cursor(walk, rows, in_progress, limit),
    )
