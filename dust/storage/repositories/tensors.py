"""Queries over ``tensors``, ``tensor_blocks`` and ``tensor_history``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, null, select, type_coerce, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import NullType

from dust.storage.models import Entity, Tensor, TensorBlock, TensorHistory, utcnow

SCAN_ROWS = 5_000  # rows fetched at a time by whole-schema scans


def add(session: Session, **fields: Any) -> Tensor:
    row = Tensor(**fields)
    session.add(row)
    session.flush()
    return row


def get(session: Session, tensor_id: uuid.UUID) -> Tensor | None:
    return session.get(Tensor, tensor_id)


def lock(session: Session, tensor_id: uuid.UUID) -> Tensor | None:
    """The tensor, locked until the transaction ends, so that writes to it run one at a time.

    An UPDATE rather than SELECT … FOR UPDATE: it locks the row on PostgreSQL, and on SQLite (no row locks)
    it takes the database write lock, waiting for another writer rather than failing later on a stale read.
    """
    touch = update(Tensor).where(Tensor.id == tensor_id).values(updated_at=utcnow())
    session.execute(touch.execution_options(synchronize_session=False))
    stmt = select(Tensor).where(Tensor.id == tensor_id).execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def of_entity(session: Session, entity_id: uuid.UUID, schema_name: str | None = None) -> list[Tensor]:
    stmt = select(Tensor).where(Tensor.entity_id == entity_id)
    if schema_name is not None:
        stmt = stmt.where(Tensor.schema_name == schema_name)
    return list(session.scalars(stmt.order_by(Tensor.schema_name)))


def delete(session: Session, tensor_id: uuid.UUID) -> None:
    session.execute(sql_delete(Tensor).where(Tensor.id == tensor_id))


def blocks(
    session: Session, tensor_id: uuid.UUID, first: int, last: int, *, stamps: bool = False
) -> Iterator[Row[int, str, bytes, bytes | None]]:
    """(number, shape, data, stamps or None) of the stored blocks numbered ``first..last`` (inclusive), streamed
    so that a long read holds one batch of blocks at a time."""
    stmt = select(
        TensorBlock.block, TensorBlock.shape, TensorBlock.data, TensorBlock.stamps if stamps else null()
    ).where(TensorBlock.tensor_id == tensor_id, TensorBlock.block >= first, TensorBlock.block <= last)
    yield from session.execute(stmt.execution_options(yield_per=64))


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
) -> Iterator[tuple[datetime, int, str, bytes]]:
    """(tensor origin, block number, shape, data) of every block of every tensor under a schema."""
    for origins, numbers, shapes, data in schema_block_columns(session, schema_name, kind):
        yield from zip(origins, numbers, shapes, data, strict=True)


def schema_block_columns(
    session: Session, schema_name: str, kind: str | None, batch: int = SCAN_ROWS
) -> Iterator[tuple[list[datetime], list[int], list[str], list[bytes]]]:
    """The blocks of :func:`schema_blocks`, up to ``batch`` at a time, as columns (origins, numbers, shapes, data).

    Runs on the Core connection (no ORM row loading) and converts each distinct origin once: a scan over a
    whole schema reads many blocks per tensor and usually few distinct origins.
    """
    origin = type_coerce(Tensor.origin, NullType())  # the driver's value, converted below
    stmt = (
        select(origin, TensorBlock.block, TensorBlock.shape, TensorBlock.data)
        .join(Tensor, Tensor.id == TensorBlock.tensor_id)
        .where(Tensor.schema_name == schema_name)
    )
    if kind is not None:
        stmt = stmt.join(Entity, Entity.id == Tensor.entity_id).where(Entity.kind == kind)
    connection = session.connection()
    dialect = connection.dialect
    convert = Tensor.__table__.c.origin.type.dialect_impl(dialect).result_processor(dialect, None)
    converted: dict[Any, Any] = {}
    result = connection.execute(stmt.execution_options(yield_per=batch))
    for part in result.partitions():
        raws, numbers, shapes, data = zip(*part, strict=True)
        for raw in set(raws).difference(converted):
            converted[raw] = convert(raw) if convert else raw
        yield list(map(converted.__getitem__, raws)), list(numbers), list(shapes), list(data)
