"""Queries behind insights: which entities a cohort filter picks; the version of a schema's data."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from dust.storage.models import Entity, Relation, Tensor
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


def data_version(session: Session, schema_name: str) -> tuple[int, int, int, str | None]:
    """What every change to the values of the schema's tensors changes, read from its ``tensors`` rows: how many
    there are, the sum of their last write stamps (as whole seconds and the µs beyond, which no sum overflows),
    and the latest creation.

    A write or an erase that changes a value stamps its tensor later than the tensor's previous write, even if the
    clock stepped back (``tensors._stamp``), so the sum grows; a tensor created or deleted (with its entity)
    changes the count. So two moments with one version hold the same tensors with the same values, unless a
    deletion and a creation in between cancel out in the count and the sum, and the newer tensor's creation time
    is not later than every other one's (a clock set back), and the sum came back exactly by the µs."""
    stamps = Tensor.stamped_us
    stmt = select(
        func.count(),
        func.coalesce(func.sum(stamps // 1_000_000), 0),
        func.coalesce(func.sum(stamps % 1_000_000), 0),
        func.max(Tensor.created_at),
    ).where(Tensor.schema_name == schema_name)
    count, seconds, micros, created = session.execute(stmt).one()
    return int(count), int(seconds), int(micros), None if created is None else created.isoformat()
