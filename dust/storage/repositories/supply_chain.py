"""Queries of the supply-chain analyses: relation attributes and inventory tensors between visible entities."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.storage.models import Relation, Tensor
from dust.storage.repositories import Visible


def edge_attributes(
    session: Session, types: Sequence[str], visible: Visible | None
) -> dict[tuple[uuid.UUID, uuid.UUID, str], dict[str, Any]]:
    """(source, target, type) -> attributes of each relation of ``types`` between visible ends (all: None)."""
    stmt = select(Relation.source_id, Relation.target_id, Relation.type, Relation.attributes).where(
        Relation.type.in_(types)
    )
    if visible is not None:
        stmt = stmt.where(Relation.source_id.in_(visible), Relation.target_id.in_(visible))
    return {(s, t, k): a or {} for s, t, k, a in session.execute(stmt)}


def tensors_of_schema(session: Session, schema: str, visible: Visible | None) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tensor id, entity id) of every tensor of ``schema`` whose entity is visible, in entity order."""
    stmt = select(Tensor.id, Tensor.entity_id).where(Tensor.schema_name == schema)
    if visible is not None:
        stmt = stmt.where(Tensor.entity_id.in_(visible))
    return [(t, e) for t, e in session.execute(stmt.order_by(Tensor.entity_id, Tensor.id))]
