"""Queries over ``schemas``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from dust.storage.models import Schema, Tensor


def add(session: Session, name: str, version: int, definition: dict[str, Any]) -> Schema:
    row = Schema(name=name, version=version, definition=definition)
    session.add(row)
    session.flush()
    return row


def latest(session: Session, name: str) -> Schema | None:
    stmt = select(Schema).where(Schema.name == name).order_by(Schema.version.desc()).limit(1)
    return session.scalars(stmt).first()


def version(session: Session, name: str, number: int) -> Schema | None:
    return session.scalars(select(Schema).where(Schema.name == name, Schema.version == number)).first()


def versions(session: Session, keys: list[tuple[str, int]]) -> list[Schema]:
    """The stored versions among ``keys`` ((name, version) pairs): one query per 200 (SQLite nests an OR chain one
    level a term, up to 1,000)."""
    found: list[Schema] = []
    for start in range(0, len(keys), 200):
        part = keys[start : start + 200]
        wanted = or_(*(and_(Schema.name == name, Schema.version == number) for name, number in part))
        found.extend(session.scalars(select(Schema).where(wanted)))
    return found


def latest_of_each(session: Session) -> list[Schema]:
    newest = select(Schema.name, func.max(Schema.version).label("v")).group_by(Schema.name).subquery()
    stmt = (
        select(Schema)
        .join(newest, (Schema.name == newest.c.name) & (Schema.version == newest.c.v))
        .order_by(Schema.name)
    )
    return list(session.scalars(stmt))


def names(session: Session) -> list[str]:
    return list(session.scalars(select(Schema.name).distinct()))


def tensors_using(session: Session, name: str) -> int:
    return session.scalar(select(func.count()).select_from(Tensor).where(Tensor.schema_name == name)) or 0


def delete(session: Session, name: str) -> None:
    session.execute(sql_delete(Schema).where(Schema.name == name))
