"""Queries of the supply-chain analyses: relation attributes and inventory tensors between visible entities."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.storage.models import Entity, Relation, Tensor, TensorBlock
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


def sites(session: Session, ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, str, str]]:
    """(id, kind, name) of the entities among ``ids`` (one IN list: the caller chunks), without loading them."""
    return [
        (e, k, n) for e, k, n in session.execute(select(Entity.id, Entity.kind, Entity.name).where(Entity.id.in_(ids)))
    ]


def tensors_of_schema(
    session: Session, schema: str, visible: Visible | None
) -> list[tuple[uuid.UUID, uuid.UUID, int, int | None, int | None]]:
    """(id, entity id, schema version, time_min, time_max) of every tensor of ``schema`` whose entity is visible,
    in entity order."""
    stmt = select(Tensor.id, Tensor.entity_id, Tensor.schema_version, Tensor.time_min, Tensor.time_max).where(
        Tensor.schema_name == schema
    )
    if visible is not None:
        stmt = stmt.where(Tensor.entity_id.in_(visible))
    return [(t, e, v, lo, hi) for t, e, v, lo, hi in session.execute(stmt.order_by(Tensor.entity_id, Tensor.id))]


def last_blocks(
    session: Session, schema: str, visible: Visible | None, steps: int
) -> list[tuple[uuid.UUID, int, str, bytes]]:
    """(tensor id, block number, shape, data) of the blocks of every visible tensor of ``schema`` that hold one
    of its last ``steps`` recorded time steps, in one query: block ``n`` of a tensor holds steps
    ``n * block_steps`` to ``n * block_steps + block_steps - 1``."""
    block = Tensor.block_steps
    stmt = (
        select(TensorBlock.tensor_id, TensorBlock.block, TensorBlock.shape, TensorBlock.data)
        .join(Tensor, Tensor.id == TensorBlock.tensor_id)
        .where(
            Tensor.schema_name == schema,
            Tensor.time_max.is_not(None),
            TensorBlock.block * block + (block - 1) > Tensor.time_max - steps,
        )
    )
    if visible is not None:
        stmt = stmt.where(Tensor.entity_id.in_(visible))
    return [(t, n, k, d) for t, n, k, d in session.execute(stmt)]
