"""Read a database back after a crash, straight from its tables, and check that it is sound.

Sound: SQLite's own integrity check passes, no row points to a parent that is gone, every tensor block decodes
under its schema, a block's write stamps agree with its values, and each tensor's recorded time range covers
its blocks (reads look only inside it, so a value outside would be as good as lost).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from dust.engine import blocks as codec
from dust.engine import schemas
from dust.engine.schemas import SchemaDef
from dust.storage.db import make_engine, make_sessionmaker
from dust.storage.models import AuditRecord, Entity, Relation, RelationWeight, Tensor, TensorBlock, TensorHistory
from tests.reliability.ledger import Snapshot, StoredRelation


def take(database_url: str) -> Snapshot:
    """Every recorded value, replaced value, relation and audit record, and the problems found on the way."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            snapshot = Snapshot(problems=integrity(session) + orphans(session))
            _read_cells(session, snapshot)
            _read_history(session, snapshot)
            _read_relations(session, snapshot)
            _read_audit(session, snapshot)
            return snapshot
    finally:
        engine.dispose()


def integrity(session: Session) -> list[str]:
    """SQLite's ``integrity_check`` and ``foreign_key_check`` (PostgreSQL keeps its own pages consistent)."""
    if session.get_bind().dialect.name != "sqlite":
        return []
    connection = session.connection()
    verdict = [row[0] for row in connection.exec_driver_sql("PRAGMA integrity_check")]
    problems = [] if verdict == ["ok"] else [f"integrity_check: {'; '.join(map(str, verdict[:5]))}"]
    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if dangling:
        problems.append(f"foreign_key_check: {len(dangling)} rows, e.g. {tuple(dangling[0])}")
    return problems


def orphans(session: Session) -> list[str]:
    """Rows whose parent is gone: what a delete racing a write could leave if cascades or locks failed."""
    checks: dict[str, Any] = {
        "tensors without their entity": select(func.count())
        .select_from(Tensor)
        .where(~exists().where(Entity.id == Tensor.entity_id)),
        "tensor blocks without their tensor": select(func.count())
        .select_from(TensorBlock)
        .where(~exists().where(Tensor.id == TensorBlock.tensor_id)),
        "history rows without their tensor": select(func.count())
        .select_from(TensorHistory)
        .where(~exists().where(Tensor.id == TensorHistory.tensor_id)),
        "relations without an end": select(func.count())
        .select_from(Relation)
        .where(or_(~exists().where(Entity.id == Relation.source_id), ~exists().where(Entity.id == Relation.target_id))),
        "weights without their relation": select(func.count())
        .select_from(RelationWeight)
        .where(~exists().where(Relation.id == RelationWeight.relation_id)),
    }
    counts = {what: session.scalar(query) or 0 for what, query in checks.items()}
    return [f"{count} {what}" for what, count in counts.items() if count]


def _read_cells(session: Session, snapshot: Snapshot) -> None:
    tensors = {row.id: row for row in session.scalars(select(Tensor))}
    defs: dict[tuple[str, int], SchemaDef] = {}
    stmt = select(TensorBlock).order_by(TensorBlock.tensor_id, TensorBlock.block).execution_options(yield_per=256)
    for block in session.scalars(stmt):
        row = tensors[block.tensor_id]
        key = (row.schema_name, row.schema_version)
        sdef = defs.get(key) or defs.setdefault(key, schemas.get_def(session, *key))
        where = f"block {block.block} of tensor {row.id}"
        try:
            values, stamps = codec.decode(block.shape, block.data, block.stamps, sdef.shape)
        except Exception as error:  # any failure to decode is what this check is for
            snapshot.problems.append(f"{where} does not decode: {error!r}")
            continue
        assert stamps is not None
        _add_block(snapshot, row, sdef, block.block, values, stamps, where)


def _add_block(
    snapshot: Snapshot,
    row: Tensor,
    sdef: SchemaDef,
    number: int,
    values: np.ndarray,
    stamps: np.ndarray,
    where: str,
) -> None:
    recorded = ~np.isnan(values)
    if (recorded != (stamps != 0)).any():
        snapshot.problems.append(f"{where}: write stamps disagree with the values recorded")
    for position in zip(*np.nonzero(recorded), strict=True):
        time = number * row.block_steps + int(position[0])
        if row.time_min is None or row.time_max is None or not row.time_min <= time <= row.time_max:
            snapshot.problems.append(f"{where}: time {time} is outside the range {row.time_min}..{row.time_max}")
        label = ",".join(axis.labels[int(i)] for axis, i in zip(sdef.axes, position[1:], strict=True))
        snapshot.cells[(str(row.id), time, label)] = float(values[position])


def _read_history(session: Session, snapshot: Snapshot) -> None:
    for h in session.scalars(select(TensorHistory).execution_options(yield_per=1000)):
        snapshot.history[(str(h.tensor_id), h.time_index, ",".join(h.labels), h.value, h.new_value)] += 1


def _read_relations(session: Session, snapshot: Snapshot) -> None:
    weights: dict[Any, list[float]] = {}
    order = (RelationWeight.relation_id, RelationWeight.changed_at, RelationWeight.id)
    for relation_id, weight in session.execute(
        select(RelationWeight.relation_id, RelationWeight.weight).order_by(*order)
    ):
        weights.setdefault(relation_id, []).append(weight)
    for r in session.scalars(select(Relation)):
        if not math.isfinite(r.weight):
            snapshot.problems.append(f"relation {r.id} has weight {r.weight}")
        edge = (str(r.source_id), str(r.target_id), r.type)
        snapshot.relations[edge] = StoredRelation(str(r.id), r.weight, weights.get(r.id, []))


def _read_audit(session: Session, snapshot: Snapshot) -> None:
    columns = (AuditRecord.request_id, AuditRecord.action, AuditRecord.method, AuditRecord.path)
    for request_id, action, method, path in session.execute(select(*columns)):
        if request_id is not None:  # work done without a principal (the seed) has none
            snapshot.audit.setdefault(request_id, set()).add((action, method, path))
