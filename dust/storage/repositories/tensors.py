"""Queries over ``tensors``, ``tensor_blocks`` and ``tensor_history``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from dust.storage.models import Entity, Tensor, TensorBlock, TensorHistory


def add(session: Session, **fields: Any) -> Tensor:
    row = Tensor(**fields)
    session.add(row)
    session.flush()
    return row


def get(session: Session, tensor_id: uuid.UUID) -> Tensor | None:
    return session.get(Tensor, tensor_id)


def of_entity(session: Session, entity_id: uuid.UUID, schema_name: str | None = None) -> list[Tensor]:
    stmt = select(Tensor).where(Tensor.entity_id == entity_id)
    if schema_name is not None:
        stmt = stmt.where(Tensor.schema_name == schema_name)
    return list(session.scalars(stmt.order_by(Tensor.schema_name)))


def delete(session: Session, tensor_id: uuid.UUID) -> None:
    session.execute(sql_delete(Tensor).where(Tensor.id == tensor_id))


def blocks(session: Session, tensor_id: uuid.UUID, first: int, last: int) -> dict[int, TensorBlock]:
    """The stored blocks numbered ``first..last`` (inclusive), by number."""
    stmt = select(TensorBlock).where(
        TensorBlock.tensor_id == tensor_id, TensorBlock.block >= first, TensorBlock.block <= last
    )
    return {b.block: b for b in session.scalars(stmt)}


def blocks_in(session: Session, tensor_id: uuid.UUID, numbers: list[int]) -> dict[int, TensorBlock]:
    stmt = select(TensorBlock).where(TensorBlock.tensor_id == tensor_id, TensorBlock.block.in_(numbers))
    return {b.block: b for b in session.scalars(stmt)}


def add_blocks(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(TensorBlock), rows)


def add_history(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(TensorHistory), rows)


def history(
    session: Session, tensor_id: uuid.UUID, first: int, last: int, replaced_after_us: int | None = None
) -> list[TensorHistory]:
    stmt = select(TensorHistory).where(
        TensorHistory.tensor_id == tensor_id,
        TensorHistory.time_index >= first,
        TensorHistory.time_index <= last,
    )
    if replaced_after_us is not None:
        stmt = stmt.where(TensorHistory.replaced_us > replaced_after_us)
    return list(session.scalars(stmt.order_by(TensorHistory.time_index, TensorHistory.replaced_us)))


def schema_blocks(
    session: Session, schema_name: str, kind: str | None, since: datetime | None = None
) -> Iterator[Row[tuple[datetime, int, str, bytes]]]:
    """(tensor origin, block number, shape, data) of every block of every tensor under a schema."""
    stmt = (
        select(Tensor.origin, TensorBlock.block, TensorBlock.shape, TensorBlock.data)
        .join(Tensor, Tensor.id == TensorBlock.tensor_id)
        .where(Tensor.schema_name == schema_name)
    )
    if kind is not None:
        stmt = stmt.join(Entity, Entity.id == Tensor.entity_id).where(Entity.kind == kind)
    yield from session.execute(stmt.execution_options(yield_per=5000))  # type: ignore[misc]
