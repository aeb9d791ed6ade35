"""What the database has words for: the kinds of its entities, sample attributes, the relation types in use.
Natural-language questions (dust.ask) build their vocabulary from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dust.storage.models import Entity, Relation, Tensor


def kinds(session: Session) -> list[str]:
    return sorted(session.scalars(select(Entity.kind).distinct()))


def attribute_sample(session: Session, kind: str, visible: Any, limit: int) -> list[dict[str, Any]]:
    """The attributes of up to ``limit`` entities of ``kind`` among those in the query ``visible`` (None: all)."""
    stmt = select(Entity.attributes).where(Entity.kind == kind)
    if visible is not None:
        stmt = stmt.where(Entity.id.in_(visible))
    return [a for a in session.scalars(stmt.limit(limit)) if isinstance(a, dict)]


def relation_types(session: Session) -> list[str]:
    """Every relation type in use."""
    return sorted(session.scalars(select(Relation.type).distinct()))


def first_origin(session: Session, schema_name: str) -> datetime | None:
    """The earliest origin of the schema's tensors: where "day 3" of a cohort is counted from."""
    return session.scalar(select(func.min(Tensor.origin)).where(Tensor.schema_name == schema_name))
