"""Queries over ``tensors``, ``tensor_blocks`` and ``tensor_history``."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from typing import cast as typed

import numpy as np
from sqlalchemy import (
    Connection,
    Integer,
    LargeBinary,
    Row,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    null,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.sqltypes import NullType

from dust.storage.db import settle_sqlite_reads
from dust.storage.models import Entity, Tensor, TensorBlock, TensorHistory, utcnow
from dust.storage.repositories import Copies, Visible

StoredBlock = tuple[str, bytes, bytes]  # shape, data, stamps

SCAN_ROWS = 5_000  # rows fetched at a time by whole-schema scans
IN_BATCH = 10_000  # parameters per IN (…) list: SQLite allows 32,766 a statement
TENSORS_PER_STATEMENT = 500  # SQLite nests an OR chain one level a term; its expression depth limit is 1,000
# The tables, for inserts that skip the ORM's per-row bookkeeping.
_TENSORS = typed(Table, Tensor.__table__)
_BLOCKS = typed(Table, TensorBlock.__table__)
_HISTORY = typed(Table, TensorHistory.__table__)
# Built once: writes run these per call, and building a statement costs about as much as running it.
_ADD_NEW = {  # INSERT … ON CONFLICT DO NOTHING, as both dialects spell it
    name: dialect_insert(_TENSORS)
    .on_conflict_do_nothing(index_elements=["entity_id", "schema_name"])
    .returning(_TENSORS.c.id)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_LOCK = (
    select(Tensor)
    .where(Tensor.id.in_(bindparam("ids", expanding=True)))
    .order_by(Tensor.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)
_GET = select(Tensor).where(Tensor.id == bindparam("b_id"))  # session.get builds its query afresh each call
_BLOCKS_OF_ONE = select(_BLOCKS.c.block, _BLOCKS.c.shape, _BLOCKS.c.data, _BLOCKS.c.stamps).where(
    _BLOCKS.c.tensor_id == bindparam("b_tensor"), _BLOCKS.c.block.in_(bindparam("b_blocks", expanding=True))
)
_BLOCK_RANGE = {  # (number, shape, data, stamps or NULL) of blocks b_first..b_last; [with stamps]
    stamps: select(_BLOCKS.c.block, _BLOCKS.c.shape, _BLOCKS.c.data, _BLOCKS.c.stamps if stamps else null()).where(
        _BLOCKS.c.tensor_id == bindparam("b_tensor"),
        _BLOCKS.c.block >= bindparam("b_first"),
        _BLOCKS.c.block <= bindparam("b_last"),
    )
    for stamps in (False, True)
}


def _put_blocks(dialect_insert: Any) -> Any:
    """INSERT … ON CONFLICT DO UPDATE of whole blocks, as the dialect spells it."""
    stmt = dialect_insert(_BLOCKS)
    return stmt.on_conflict_do_update(
        index_elements=["tensor_id", "block"],
        set_={"shape": stmt.excluded.shape, "data": stmt.excluded.data, "stamps": stmt.excluded.stamps},
    )


_PUT_BLOCKS = {"postgresql": _put_blocks(postgresql.insert), "sqlite": _put_blocks(sqlite.insert)}
_SET_RANGE = (
    update(_TENSORS)
    .where(_TENSORS.c.id == bindparam("b_tensor"))
    .values(
        time_min=bindparam("time_min"),
        time_max=bindparam("time_max"),
        stamped_us=bindparam("stamped_us"),
        updated_at=bindparam("updated_at"),
    )
)
_INSERT_HISTORY = insert(_HISTORY).inline()  # no RETURNING id for a one-row insert: no caller reads it
# PostgreSQL: a writer holds its tensors' advisory locks with their rows; an "as of" reader waits on one (a
# read-only transaction may not take a row lock) and lets it go at once.
_WRITING = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS t(k)")
_WAIT_FOR_WRITER = text("SELECT pg_advisory_lock_shared(:key), pg_advisory_unlock_shared(:key)")
_CREATED = "dust.tensors_created"  # session.info: (transaction, ids of the tensors it created)
_HISTORY_ORDER = (_HISTORY.c.time_index, _HISTORY.c.replaced_us, _HISTORY.c.id)


def add_new(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert tensors, every column given, by one statement, skipping any whose entity already has a tensor of
    that schema; the ids inserted. The unique constraint decides, so two concurrent creates cannot both
    succeed, and a clash costs no SAVEPOINT: nothing fails, the row is just not returned."""
    added = set(session.scalars(_ADD_NEW[session.get_bind().dialect.name], rows))
    _created_here(session).update(added)
    return added


def _created_here(session: Session) -> set[uuid.UUID]:
    """The tensors this transaction created: no other transaction can see them before it commits."""
    transaction = session.get_transaction()
    held = session.info.get(_CREATED)
    if held is None or held[0] is not transaction:
        held = session.info[_CREATED] = (transaction, set())
    return held[1]


@functools.lru_cache(maxsize=1024)
def _get_within(within: Visible) -> Select[Tensor]:
    """The query of a tensor by id among ``within``'s entities, once per ``within`` (one per principal, see
    dust.engine.access): SQLAlchemy keys its compiled-statement cache by walking the whole statement, reach
    query included, once per statement object."""
    return select(Tensor).where(Tensor.id == bindparam("b_id"), Tensor.entity_id.in_(within))


def get(session: Session, tensor_id: uuid.UUID, *, within: Visible | None = None, fresh: bool = False) -> Tensor | None:
    """The tensor; ``within``: only if its entity's id is among these (a principal's visible ids), in one query;
    ``fresh``: read again even if this session has it already."""
    if within is not None:
        stmt = _get_within(within).execution_options(populate_existing=fresh)
        return session.scalars(stmt, {"b_id": tensor_id}).first()
    if not fresh and (known := session.identity_map.get(identity_key(Tensor, tensor_id))) is not None:
        return typed(Tensor, known)
    return session.scalars(_GET.execution_options(populate_existing=fresh), {"b_id": tensor_id}).first()


# A tensor, for a read that changes nothing; among visible ids: as ``get``'s ``within``.
peek = Copies(Tensor, owner="entity_id")


def lock(session: Session, tensor_ids: list[uuid.UUID], *, within: Visible | None = None) -> dict[uuid.UUID, Tensor]:
    """The tensors that exist of ``tensor_ids``, locked until the transaction ends, so that writes to one tensor
    run one at a time; one SELECT per ``IN_BATCH`` ids. ``within``: only those whose entity is among these (a
    principal's visible ids), filtered by the same SELECT: PostgreSQL locks only the rows a query returns, so
    a caller never holds, nor waits on, a row it may not see.

    FOR UPDATE locks the rows on PostgreSQL (in id order, so two bulk writers cannot deadlock). SQLite has no
    row locks and needs none: dust.storage.db begins every transaction with BEGIN IMMEDIATE, which holds the
    database write lock until it ends, so no other writer can read a block between our read and our write.
    """
    found: dict[uuid.UUID, Tensor] = {}
    ordered = sorted(set(tensor_ids))
    stmt = _LOCK if within is None else _LOCK.where(Tensor.entity_id.in_(within))
    for start in range(0, len(ordered), IN_BATCH):
        found.update((row.id, row) for row in session.scalars(stmt, {"ids": ordered[start : start + IN_BATCH]}))
    if found and session.get_bind().dialect.name == "postgresql":
        # Not for tensors created in this transaction: no reader can wait on a write to one before it commits,
        # and a lock each would fill the server's lock table (64 × max_connections) in a bulk load.
        new = _created_here(session)
        keys = [_advisory_key(tensor_id) for tensor_id in sorted(found) if tensor_id not in new]
        if keys:
            session.execute(_WRITING, {"keys": keys})
    return found


def wait_for_writes(session: Session, tensor_id: uuid.UUID) -> None:
    """Return once no write to the tensor that began before this call is in flight, and read on so as to see it.

    PostgreSQL: wait on the tensor's advisory lock, which its writer holds until it commits (READ COMMITTED: the
    next statement sees that commit). SQLite: ``dust.storage.db.settle_sqlite_reads``.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_WAIT_FOR_WRITER, {"key": _advisory_key(tensor_id)})
    else:
        settle_sqlite_reads(session)


def _advisory_key(tensor_id: uuid.UUID) -> int:
    """A bigint for the tensor's advisory lock (two tensors sharing one only wait for each other's writes)."""
    return int.from_bytes(tensor_id.bytes[:8], "big", signed=True)


def of_entity(session: Session, entity_id: uuid.UUID, schema_name: str | None = None) -> list[Tensor]:
    stmt = select(Tensor).where(Tensor.entity_id == entity_id)
    if schema_name is not None:
        stmt = stmt.where(Tensor.schema_name == schema_name)
    return list(session.scalars(stmt.order_by(Tensor.schema_name)))


def ids_of_entities(session: Session, schema_name: str, entity_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The id of a tensor of ``schema_name`` of each of ``entity_ids`` that has one (for importers)."""
    stmt = select(Tensor.entity_id, Tensor.id).where(
        Tensor.schema_name == schema_name, Tensor.entity_id.in_(entity_ids)
    )
    return {entity_id: tensor_id for entity_id, tensor_id in session.execute(stmt)}


def delete(session: Session, tensor_id: uuid.UUID) -> None:
    session.execute(sql_delete(Tensor).where(Tensor.id == tensor_id))


def blocks(
    session: Session, tensor_id: uuid.UUID, first: int, last: int, *, stamps: bool = False
) -> Iterator[Row[int, str, bytes, bytes | None]]:
    """(number, shape, data, stamps or None) of the stored blocks numbered ``first..last`` (inclusive), streamed
    so that a long read holds one batch of blocks at a time."""
    values = {"b_tensor": tensor_id, "b_first": first, "b_last": last}
    if first == last:  # a point read: one row, no streaming to set up
        yield from session.execute(_BLOCK_RANGE[stamps], values)
    else:
        yield from session.execute(_BLOCK_RANGE[stamps].execution_options(yield_per=64), values)


def blocks_at(session: Session, keys: list[tuple[uuid.UUID, int]]) -> dict[tuple[uuid.UUID, int], StoredBlock]:
    """(shape, data, stamps) of the stored blocks among ``keys`` ((tensor id, block number) pairs), by key.

    Spelled ``tensor_id = ? AND block IN (…)`` per tensor, OR'ed: SQLite plans a row-value IN, ``(tensor_id,
    block) IN ((?, ?), …)``, as a scan of every block of the tensor (a write to a tensor of 11,000 blocks took
    4–6 ms for it), while this searches the primary key for each block on both backends."""
    by_tensor: dict[uuid.UUID, list[int]] = defaultdict(list)
    for tensor_id, block in keys:
        by_tensor[tensor_id].append(block)
    if len(by_tensor) == 1 and len(keys) <= IN_BATCH:  # one tensor, as an API write: a statement built once
        ((tensor_id, numbers),) = by_tensor.items()
        rows = session.execute(_BLOCKS_OF_ONE, {"b_tensor": tensor_id, "b_blocks": numbers})
        return {(tensor_id, block): (shape, data, stamps) for block, shape, data, stamps in rows}
    found: dict[tuple[uuid.UUID, int], StoredBlock] = {}
    columns = (TensorBlock.tensor_id, TensorBlock.block, TensorBlock.shape, TensorBlock.data, TensorBlock.stamps)
    for part in _statements(list(by_tensor.items())):
        wanted = or_(*(and_(TensorBlock.tensor_id == t, TensorBlock.block.in_(blocks)) for t, blocks in part))
        found.update(
            ((tensor_id, block), (shape, data, stamps))
            for tensor_id, block, shape, data, stamps in session.execute(select(*columns).where(wanted))
        )
    return found


def _statements(groups: list[tuple[uuid.UUID, list[int]]]) -> list[list[tuple[uuid.UUID, list[int]]]]:
    """``groups`` split so that a statement holds at most TENSORS_PER_STATEMENT tensors and about IN_BATCH
    parameters."""
    parts: list[list[tuple[uuid.UUID, list[int]]]] = [[]]
    size = 0
    for tensor_id, blocks in groups:
        for start in range(0, len(blocks), IN_BATCH // 2):
            chunk = blocks[start : start + IN_BATCH // 2]
            if parts[-1] and (len(parts[-1]) >= TENSORS_PER_STATEMENT or size + len(chunk) + 1 > IN_BATCH):
                parts.append([])
                size = 0
            parts[-1].append((tensor_id, chunk))
            size += len(chunk) + 1
    return parts if parts[0] else []


def put_blocks(session: Session, blocks: list[dict[str, Any]]) -> None:
    """Store ``blocks`` (tensor_id, block, shape, data, stamps each), new ones and overwrites of stored ones alike:
    one statement, so a write that extends a block and starts the next makes one trip, not two. On the table, not
    through the ORM: its per-row bookkeeping would cost more than the SQL."""
    if blocks:
        session.execute(_PUT_BLOCKS[session.get_bind().dialect.name], blocks)


def widen_ranges(session: Session, spans: list[tuple[Tensor, int, int, int]]) -> None:
    """Widen each tensor's recorded time range to include ``low..high`` of its (tensor, low, high, stamp), set
    its last write stamp, and mark it updated: one UPDATE for all. The loaded objects get the new values as if
    read back, not as changes for the ORM to write again."""
    if not spans:
        return
    now = utcnow()
    for row, low, high, stamp in spans:
        set_committed_value(row, "time_min", low if row.time_min is None else min(row.time_min, low))
        set_committed_value(row, "time_max", high if row.time_max is None else max(row.time_max, high))
        set_committed_value(row, "stamped_us", stamp)
        set_committed_value(row, "updated_at", now)
    columns = ("time_min", "time_max", "stamped_us")
    params = [{"b_tensor": r.id, "updated_at": now, **{c: getattr(r, c) for c in columns}} for r, *_ in spans]
    session.execute(_SET_RANGE, params)


def add_history(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(_INSERT_HISTORY, rows)


def history(
    session: Session,
    tensor_id: uuid.UUID,
    first: int,
    last: int,
    *,
    after: tuple[int, int, int] | None = None,
    limit: int | None = None,
) -> list[Row[Any]]:
    """(time_index, labels, value, written_us, replaced_us, new_value, id) of the replaced values at times
    ``first..last``, ordered by (time_index, replaced_us, id): after the position ``after`` of that order, at
    most ``limit``."""
    h = _HISTORY.c
    stmt = select(h.time_index, h.labels, h.value, h.written_us, h.replaced_us, h.new_value, h.id).where(
        h.tensor_id == tensor_id, h.time_index >= first, h.time_index <= last
    )
    if after is not None:
        stmt = stmt.where(tuple_(*_HISTORY_ORDER) > tuple_(*after))
    return list(session.execute(stmt.order_by(*_HISTORY_ORDER).limit(limit)))


def standing_at(
    session: Session, tensor_id: uuid.UUID, first: int, last: int, at_us: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The replaced values at times ``first..last`` that stood at ``at_us`` (written at or before it, replaced
    after it), as columns: time indices, labels (each cell's as JSON text, to be decoded once per cell) and
    values."""
    h = _HISTORY.c
    stmt = select(h.time_index, cast(h.labels, String), h.value).where(
        h.tensor_id == tensor_id,
        h.time_index >= first,
        h.time_index <= last,
        h.replaced_us > at_us,
        h.written_us <= at_us,
    )
    rows = session.execute(stmt).all()
    times = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    return times, [r[1] for r in rows], values


def schema_block_columns(
    session: Session,
    schema_name: str,
    kind: str | None,
    batch: int = SCAN_ROWS,
    part: tuple[str, int, int] | None = None,
    visible: Any = None,
    tensors: bool = False,
) -> Iterator[tuple[list[datetime], list[int], list[int], list[str], list[bytes], list[Any]]]:
    """(tensor origin, block number, the tensor's block steps, shape, data, tensor) of every block of every
    tensor under a schema, up to ``batch`` at a time, as columns. The tensor column holds the driver's raw tensor
    ids (equal for one tensor, distinct across tensors) if ``tensors`` is set, else it is empty.

    ``part`` = (shape, index, parts): blocks of that shape give only the ``index``-th of ``parts`` equal slices
    of their data (one label of the first axis, whatever the block's length), so a quarter or less of the
    values crosses from the database to Python.
    Runs on the Core connection (no ORM row loading) and converts each distinct origin once: a scan over a
    whole schema reads many blocks per tensor and usually few distinct origins.
    """
    origin = type_coerce(Tensor.origin, NullType())  # the driver's value, converted below
    data: Any = TensorBlock.data
    if part is not None:
        key, index, parts = part
        length = func.length(TensorBlock.data, type_=Integer) // parts  # whole: a block is ``parts`` slices
        sliced = func.substr(TensorBlock.data, length * index + 1, length)  # SQL counts from 1
        data = type_coerce(case((TensorBlock.shape == key, sliced), else_=TensorBlock.data), LargeBinary())
    columns = [origin, TensorBlock.block, Tensor.block_steps, TensorBlock.shape, data]
    if tensors:
        columns.append(type_coerce(TensorBlock.tensor_id, NullType()))
    stmt = select(*columns).join(Tensor, Tensor.id == TensorBlock.tensor_id).where(Tensor.schema_name == schema_name)
    if kind is not None:
        stmt = stmt.join(Entity, Entity.id == Tensor.entity_id).where(Entity.kind == kind)
    if visible is not None:  # a query of the entity ids the reader may see
        stmt = stmt.where(Tensor.entity_id.in_(visible))
    connection = session.connection()
    dialect = connection.dialect
    convert = Tensor.__table__.c.origin.type.dialect_impl(dialect).result_processor(dialect, None)
    converted: dict[Any, Any] = {}
    # The driver's own cursor takes only plain parameters; the visibility subquery carries typed ones.
    for chunk in _batches(connection, stmt, batch, raw=visible is None):
        # Column by column: zip(*chunk) would unpack thousands of rows into one call, several times slower.
        raws = [row[0] for row in chunk]
        for raw in set(raws).difference(converted):
            converted[raw] = convert(raw) if convert else raw
        ids = [r[5] for r in chunk] if tensors else []
        numbers, steps, shapes, data = ([r[i] for r in chunk] for i in range(1, 5))
        yield [converted[raw] for raw in raws], numbers, steps, shapes, data, ids


def _batches(
    connection: Connection, stmt: Select[Any], batch: int, raw: bool = True
) -> Iterator[Sequence[Sequence[Any]]]:
    """The rows of ``stmt``, ``batch`` at a time, for scans that read every block of a schema.

    On SQLite straight from the driver's cursor, which steps through the result lazily: building
    SQLAlchemy's Row objects takes about a third of such a scan there. The statement's parameters must be
    plain strings and numbers (no type conversion is applied to them). Elsewhere through SQLAlchemy, which
    streams with a server-side cursor.
    """
    if connection.dialect.name != "sqlite" or not raw:
        yield from connection.execute(stmt.execution_options(yield_per=batch)).partitions()
        return
    compiled = stmt.compile(dialect=connection.dialect)
    params = compiled.construct_params()
    driver = connection.connection.driver_connection
    assert driver is not None  # None only once the connection is closed
    cursor = driver.cursor()
    try:
        cursor.execute(str(compiled), [params[name] for name in compiled.positiontup or ()])
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


def of_entities(
    session: Session, schema_name: str, entity_ids: list[uuid.UUID], *, within: Visible | None = None
) -> list[Tensor]:
    """The tensors of ``schema_name`` of ``entity_ids`` (whose entity is among ``within``, a principal's visible
    ids), one SELECT per ``IN_BATCH`` ids (a model's node features)."""
    found: list[Tensor] = []
    for start in range(0, len(entity_ids), IN_BATCH):
        stmt = select(Tensor).where(
            Tensor.schema_name == schema_name, Tensor.entity_id.in_(entity_ids[start : start + IN_BATCH])
        )
        found.extend(session.scalars(stmt if within is None else stmt.where(Tensor.entity_id.in_(within))))
    return found


def schemas_of_entities(session: Session, entity_ids: list[uuid.UUID], *, within: Visible | None = None) -> set[str]:
    """The schemas of the tensors of ``entity_ids`` (whose entity is among ``within``)."""
    found: set[str] = set()
    for start in range(0, len(entity_ids), IN_BATCH):
        stmt = select(Tensor.schema_name).where(Tensor.entity_id.in_(entity_ids[start : start + IN_BATCH]))
        found.update(session.scalars((stmt if within is None else stmt.where(Tensor.entity_id.in_(within))).distinct()))
    return found


def blocks_of(
    session: Session, tensor_ids: list[uuid.UUID], last: int, batch: int = SCAN_ROWS
) -> Iterator[tuple[uuid.UUID, int, str, bytes]]:
    """(tensor id, block number, shape, data) of the blocks numbered ``last`` or less of ``tensor_ids``, a tensor's
    blocks together and in order, streamed (a model's node features read every block of many tensors)."""
    b = _BLOCKS.c
    for start in range(0, len(tensor_ids), IN_BATCH):
        part = tensor_ids[start : start + IN_BATCH]
        stmt = (
            select(b.tensor_id, b.block, b.shape, b.data)
            .where(b.tensor_id.in_(part), b.block <= last)
            .order_by(b.tensor_id, b.block)
        )
        for rows in session.execute(stmt.execution_options(yield_per=batch)).partitions(batch):
            yield from ((row[0], row[1], row[2], row[3]) for row in rows)
