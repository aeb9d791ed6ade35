"""Queries over ``entities``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, insert, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from dust.storage.models import Entity

_ENTITIES = cast(Table, Entity.__table__)
# Built once: the hot paths of creating many entities or tensors run these per call, and building a statement
# costs about as much as running it.
_INSERT = insert(_ENTITIES)
_EXISTING = select(Entity.id).where(Entity.id.in_(bindparam("ids", expanding=True)))


def add_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert entities, every column given, by one statement (executemany). Into the table rather than through
    the ORM: its bulk insert costs tens of microseconds of bookkeeping per row."""
    session.execute(_INSERT, rows)


def get(session: Session, entity_id: uuid.UUID) -> Entity | None:
    return session.get(Entity, entity_id)


def by_external_id(session: Session, kind: str, external_id: str) -> Entity | None:
    stmt = select(Entity).where(Entity.kind == kind, Entity.external_id == external_id)
    return session.scalars(stmt).first()


def taken_external_ids(session: Session, kind: str, external_ids: list[str]) -> set[str]:
    """Which of ``external_ids`` entities of ``kind`` already hold."""
    stmt = select(Entity.external_id).where(Entity.kind == kind, Entity.external_id.in_(external_ids))
    return {external_id for external_id in session.scalars(stmt) if external_id is not None}


def existing_ids(session: Session, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return set(session.scalars(_EXISTING, {"ids": ids}))


def delete(session: Session, entity_id: uuid.UUID) -> None:
    session.execute(sql_delete(Entity).where(Entity.id == entity_id))


def _filtered(stmt: Select, kind: str | None, attributes: Mapping[str, Any], visible: Any = None) -> Select:
    """``stmt`` narrowed to a kind, attribute values, and the ids in the query ``visible`` (None: all)."""
    if visible is not None:
        stmt = stmt.where(Entity.id.in_(visible))
    if kind is not None:
        stmt = stmt.where(Entity.kind == kind)
    for key, value in attributes.items():
        field = Entity.attributes[key]
        if isinstance(value, bool):
            stmt = stmt.where(field.as_boolean() == value)
        elif isinstance(value, int | float):
            stmt = stmt.where(field.as_float() == float(value))
        else:
            stmt = stmt.where(field.as_string() == str(value))
    return stmt


def page(
    session: Session,
    kind: str | None,
    attributes: Mapping[str, Any],
    visible: Any,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Entity]:
    """Entities in creation order, after the keyset position ``after``."""
    stmt = _filtered(select(Entity), kind, attributes, visible)
    if after is not None:
        created, last_id = after
        stmt = stmt.where(or_(Entity.created_at > created, and_(Entity.created_at == created, Entity.id > last_id)))
    stmt = stmt.order_by(Entity.created_at, Entity.id).limit(limit)
    return list(session.scalars(stmt))


def search_space(
    session: Session, kind: str | None, attributes: Mapping[str, Any], visible: Any = None, chunk: int = 20_000
) -> Iterator[list[tuple[uuid.UUID, str, str | None]]]:
    """(id, name, external_id) of every matching entity, in chunks, for fuzzy matching."""
    stmt = _filtered(select(Entity.id, Entity.name, Entity.external_id), kind, attributes, visible)
    result = session.execute(stmt.execution_options(yield_per=chunk))
    for part in result.partitions(chunk):
        yield [(row[0], row[1], row[2]) for row in part]


def by_ids(session: Session, ids: list[uuid.UUID]) -> list[Entity]:
    rows = {e.id: e for e in session.scalars(select(Entity).where(Entity.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]
