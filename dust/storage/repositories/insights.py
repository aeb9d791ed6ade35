"""Queries behind insights: which entities a cohort filter picks."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from dust.storage.models import Entity, Relation
from dust.storage.repositories import Visible

# The entity list's filter: the same typed JSON comparisons (51 matches 51.0, never "51") on both backends.
from dust.storage.repositories.entities import filtered as filtered_entities


def cohort(
    session: Session,
    kind: str | None,
    attributes: Mapping[str, Any],
    visible: Visible | None,
    related_to: uuid.UUID | None = None,
    types: Sequence[str] = (),
    members: Collection[uuid.UUID] | None = None,
) -> Select[Any]:
    """A query of the ids of the entities of ``kind`` whose attributes hold these values, among ``visible`` (None:
    every entity); with ``related_to``, only those at the other end of a relation valid now (of ``types``, or of
    any type) from or to that entity; with ``members``, only those of these ids."""
    stmt = filtered_entities(session, select(Entity.id), kind, attributes, visible)
    if members is not None:
        stmt = stmt.where(Entity.id.in_(list(members)))
    if related_to is None:
        return stmt
    now = datetime.now(UTC)
    live = [
        or_(Relation.valid_from.is_(None), Relation.valid_from <= now),
        or_(Relation.valid_to.is_(None), Relation.valid_to > now),
    ]
    if types:
        live.append(Relation.type.in_(list(types)))
    targets = select(Relation.target_id).where(Relation.source_id == related_to, *live)
    sources = select(Relation.source_id).where(Relation.target_id == related_to, *live)
    return stmt.where(or_(Entity.id.in_(targets), Entity.id.in_(sources)))
