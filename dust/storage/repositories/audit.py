"""Queries over ``audit_log``: append and search, nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, or_, select
from sqlalchemy.orm import Session

from dust.storage.db import Append
from dust.storage.models import AuditRecord
from dust.storage.repositories import paging

_AUDIT_LOG = cast(Table, AuditRecord.__table__)
# Built once: every write request runs it, and building costs about as much as running. Inline: nothing reads a new
# record's id back, and a single-row INSERT would otherwise carry RETURNING id (PostgreSQL) and fetch a row for it.
_APPEND = insert(_AUDIT_LOG).inline()


def append(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        appending(rows)(session)


def appending(rows: list[dict[str, Any]]) -> Append:
    """The write of ``rows``: into the table, not the ORM class (no per-row ORM bookkeeping for a bulk insert),
    and the batch writer's to merge with other requests' (``dust.storage.db.Append``)."""
    return Append(_APPEND, rows)


def search(
    session: Session,
    *,
    entity_id: uuid.UUID | None,
    username: str | None,
    start: datetime | None,
    end: datetime | None,
    walk: paging.Walk,
    limit: int,
) -> tuple[list[AuditRecord], frozenset[int]]:
    """Newest first, those ``walk`` has not returned; and the transactions in progress meanwhile."""
    stmt = select(AuditRecord)
    if entity_id is not None:
        stmt = stmt.where(or_(AuditRecord.entity_id == entity_id, AuditRecord.resource_id == str(entity_id)))
    if username is not None:
        stmt = stmt.where(AuditRecord.username == username)
    if start is not None:
        stmt = stmt.where(AuditRecord.at >= start)
    if end is not None:
        stmt = stmt.where(AuditRecord.at <= end)
    return paging.page(session, stmt, (AuditRecord.id,), AuditRecord.txid, walk, limit, descending=True)
