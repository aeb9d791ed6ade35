"""Queries over ``anomaly_rules``, ``anomaly_states`` and ``anomalies``."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dust.storage.models import (
    Anomaly,
    AnomalyRule,
    AnomalyState,
    Entity,
    Relation,
    Schema,
    Tensor,
    TensorBlock,
    utcnow,
)
from dust.storage.repositories import Visible, paging

IN_BATCH = 10_000  # parameters per IN (…) list: SQLite allows 32,766 a statement
_STATES = cast(Table, AnomalyState.__table__)
_ANOMALIES = cast(Table, Anomaly.__table__)
# Built once: the write path runs these per batch, and building a statement costs about as much as running it.
_INSERT_STATES = insert(_STATES)
_UPDATE_STATE = (
    update(_STATES)
    .where(
        _STATES.c.tensor_id == bindparam("b_tensor"),
        _STATES.c.cell == bindparam("b_cell"),
        _STATES.c.detector == bindparam("b_detector"),
    )
    .values(rule=bindparam("rule"), state=bindparam("state"), last_time=bindparam("last_time"))
)
_INSERT_ANOMALIES = insert(_ANOMALIES).inline()  # no RETURNING id for a one-row insert: no caller reads it
_BLOCKS = cast(Table, TensorBlock.__table__)
_TENSORS = cast(Table, Tensor.__table__)
_RELATIONS = cast(Table, Relation.__table__)
_DROP_DETECTED_AT = delete(_ANOMALIES).where(
    _ANOMALIES.c.tensor_id == bindparam("tensor_id"),
    _ANOMALIES.c.detector == bindparam("detector"),
    _ANOMALIES.c.cell == bindparam("cell"),
    _ANOMALIES.c.time_index.in_(bindparam("times", expanding=True)),
)
# What a relational rule reads on a write: the tensors of the neighbours (plain rows: what a time grid and a block
# read need), their blocks, and the relations around the entity.
_NEIGHBOUR_TENSORS = select(
    *(_TENSORS.c[name] for name in ("id", "entity_id", "schema_name", "schema_version", "origin", "block_steps")),
    _TENSORS.c.time_min,
    _TENSORS.c.time_max,
).where(_TENSORS.c.schema_name == bindparam("schema"), _TENSORS.c.entity_id.in_(bindparam("ids", expanding=True)))
_NEIGHBOUR_BLOCKS = select(_BLOCKS.c.tensor_id, _BLOCKS.c.block, _BLOCKS.c.shape, _BLOCKS.c.data).where(
    _BLOCKS.c.tensor_id.in_(bindparam("ids", expanding=True)), _BLOCKS.c.block.in_(bindparam("blocks", expanding=True))
)
_r = _RELATIONS.c
_EDGE_COLUMNS = (_r.id, _r.source_id, _r.target_id, _r.type, _r.weight, _r.valid_from, _r.valid_to)
_ENDS = {
    "out": _r.source_id.in_(bindparam("ids", expanding=True)),
    "in": _r.target_id.in_(bindparam("ids", expanding=True)),
}
_RELATED = {
    way: select(*_EDGE_COLUMNS).where(_r.type == bindparam("type"), ends)
    for way, ends in (*_ENDS.items(), ("both", or_(_ENDS["out"], _ENDS["in"])))
}
_STATES_OF = select(_STATES.c.cell, _STATES.c.detector, _STATES.c.rule, _STATES.c.state, _STATES.c.last_time).where(
    _STATES.c.tensor_id == bindparam("tensor_id"), _STATES.c.cell.in_(bindparam("cells", expanding=True))
)


# --- rules ------------------------------------------------------------------------------------------------


def rules(session: Session) -> list[AnomalyRule]:
    return list(session.scalars(select(AnomalyRule).order_by(AnomalyRule.schema_name, AnomalyRule.label)))


_RULE_ROWS = select(
    AnomalyRule.schema_name, AnomalyRule.label, AnomalyRule.detector, AnomalyRule.settings, AnomalyRule.threshold
)


def rule_rows(session: Session) -> list[tuple[str, str, str, dict[str, Any], float]]:
    """(schema, label, detector, settings, threshold) of every rule, as plain rows: writes read them."""
    return [tuple(row) for row in session.execute(_RULE_ROWS)]


def rule(session: Session, schema_name: str, label: str) -> AnomalyRule | None:
    return session.get(AnomalyRule, (schema_name, label))


def put_rule(
    session: Session, schema_name: str, label: str, detector: str, settings: dict[str, Any], threshold: float
) -> AnomalyRule:
    row = rule(session, schema_name, label)
    if row is None:
        row = AnomalyRule(schema_name=schema_name, label=label)
        session.add(row)
    row.detector, row.settings, row.threshold, row.updated_at = detector, settings, threshold, utcnow()
    session.flush()
    return row


def delete_rule(session: Session, schema_name: str, label: str) -> bool:
    return bool(
        session.execute(
            delete(AnomalyRule).where(AnomalyRule.schema_name == schema_name, AnomalyRule.label == label)
        ).rowcount  # type: ignore[attr-defined]
    )


def delete_schema_rules(session: Session, schema_name: str) -> int:
    """Delete every rule of a schema; how many there were."""
    deleted = session.execute(delete(AnomalyRule).where(AnomalyRule.schema_name == schema_name))
    return int(deleted.rowcount)  # type: ignore[attr-defined]


def sensitive_schemas(session: Session) -> set[str]:
    """Names of the schemas of which any version is sensitive (few rows: every version of every schema)."""
    rows = session.execute(select(Schema.name, Schema.definition))
    return {name for name, definition in rows if definition.get("sensitive")}


# --- detector state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    rule: str
    state: dict[str, Any]
    last_time: int


def states(session: Session, tensor_id: uuid.UUID, cells: Sequence[int]) -> dict[tuple[int, str], Stored]:
    """The stored states of a tensor's ``cells``, by (cell, detector)."""
    found: dict[tuple[int, str], Stored] = {}
    for start in range(0, len(cells), IN_BATCH):
        part = {"tensor_id": tensor_id, "cells": list(cells[start : start + IN_BATCH])}
        rows = session.execute(_STATES_OF, part)
        found.update(((cell, detector), Stored(*kept)) for cell, detector, *kept in rows)
    return found


def save_states(session: Session, new: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    """Insert ``new`` states and overwrite ``changed`` ones ({tensor_id, cell, detector, label, rule, state,
    last_time} each): one statement each, on the table rather than through the ORM."""
    if new:
        session.execute(_INSERT_STATES, new)
    if changed:
        keyed = [{**r, "b_tensor": r["tensor_id"], "b_cell": r["cell"], "b_detector": r["detector"]} for r in changed]
        session.execute(_UPDATE_STATE, keyed)


def drop_states(session: Session, tensor_id: uuid.UUID, cells: Collection[int]) -> None:
    s = _STATES.c
    session.execute(delete(_STATES).where(s.tensor_id == tensor_id, s.cell.in_(list(cells))))


def drop_rule_states(session: Session, schema_name: str, label: str) -> None:
    """Every state kept for the rule of ``label`` in ``schema_name``: a changed or deleted rule starts afresh."""
    of_schema = select(Tensor.id).where(Tensor.schema_name == schema_name)
    session.execute(delete(_STATES).where(_STATES.c.label == label, _STATES.c.tensor_id.in_(of_schema)))


def cells_of(session: Session, tensor_id: uuid.UUID) -> list[int]:
    """The cells of a tensor with a stored state or a flagged value."""
    states = select(_STATES.c.cell).where(_STATES.c.tensor_id == tensor_id)
    flagged = select(_ANOMALIES.c.cell).where(_ANOMALIES.c.tensor_id == tensor_id)
    return sorted(session.scalars(states.union(flagged)))


def renumber(session: Session, tensor_id: uuid.UUID, moves: list[tuple[int, int]]) -> None:
    """Move each (old cell, new cell) of a tensor's states and flagged values, one at a time in the order given
    (a state's key includes its cell: the caller orders the moves so that none lands on one not yet moved)."""
    for table in (_STATES, _ANOMALIES):
        for old, new in moves:
            if old != new:
                session.execute(
                    update(table).where(table.c.tensor_id == tensor_id, table.c.cell == old).values(cell=new)
                )


def count_states(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(_STATES)) or 0


# --- anomalies --------------------------------------------------------------------------------------------


def add(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(_INSERT_ANOMALIES, rows)


def flagged_times(session: Session, detector: str, tensor_ids: Sequence[uuid.UUID]) -> set[tuple[uuid.UUID, int]]:
    """(tensor, time index) of the values ``detector`` flagged on ``tensor_ids``: what a re-run must not add again."""
    a = _ANOMALIES.c
    found: set[tuple[uuid.UUID, int]] = set()
    for start in range(0, len(tensor_ids), IN_BATCH):
        part = list(tensor_ids[start : start + IN_BATCH])
        stmt = select(a.tensor_id, a.time_index).where(a.detector == detector, a.tensor_id.in_(part))
        found.update((tensor_id, int(t)) for tensor_id, t in session.execute(stmt))
    return found


def drop(
    session: Session, tensor_id: uuid.UUID, cells: Collection[int], first: int, last: int, keep: Collection[str] = ()
) -> None:
    """The flagged values of a tensor's ``cells`` at times ``first..last`` (a scan replaces them), but those of
    the detectors in ``keep``."""
    a = _ANOMALIES.c
    session.execute(
        delete(_ANOMALIES).where(
            a.tensor_id == tensor_id,
            a.cell.in_(list(cells)),
            a.time_index >= first,
            a.time_index <= last,
            a.detector.not_in(list(keep)),
        )
    )


def drop_detected(
    session: Session, tensor_id: uuid.UUID, detector: str, first: int, last: int, cells: Collection[int] | None = None
) -> None:
    """What ``detector`` flagged in a tensor at times ``first..last`` (of ``cells``; None: any)."""
    a = _ANOMALIES.c
    stmt = delete(_ANOMALIES).where(
        a.tensor_id == tensor_id, a.detector == detector, a.time_index >= first, a.time_index <= last
    )
    session.execute(stmt if cells is None else stmt.where(a.cell.in_(list(cells))))


def drop_detected_at(session: Session, tensor_id: uuid.UUID, detector: str, cell: int, times: Sequence[int]) -> None:
    """What ``detector`` flagged in one cell of a tensor at ``times``: values written again are judged again."""
    for start in range(0, len(times), IN_BATCH):
        part = {
            "tensor_id": tensor_id,
            "detector": detector,
            "cell": cell,
            "times": list(times[start : start + IN_BATCH]),
        }
        session.execute(_DROP_DETECTED_AT, part)


@dataclass(frozen=True)
class Filters:
    entity_id: uuid.UUID | None = None
    tensor_id: uuid.UUID | None = None
    schema_name: str | None = None
    label: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    min_score: float | None = None


def page(
    session: Session, filters: Filters, walk: paging.Walk, limit: int, visible: Visible | None, hidden: Collection[str]
) -> tuple[list[Anomaly], frozenset[int]]:
    """Newest first, those ``walk`` has not returned, of entities among ``visible`` (None: all) and schemas not
    ``hidden``; and the transactions in progress meanwhile."""
    stmt = select(Anomaly)
    conditions = (
        (filters.entity_id, lambda v: Anomaly.entity_id == v),
        (filters.tensor_id, lambda v: Anomaly.tensor_id == v),
        (filters.schema_name, lambda v: Anomaly.schema_name == v),
        (filters.label, lambda v: Anomaly.label == v),
        (filters.start, lambda v: Anomaly.at >= v),
        (filters.end, lambda v: Anomaly.at <= v),
        (filters.min_score, lambda v: Anomaly.score >= v),
    )
    for value, condition in conditions:
        if value is not None:
            stmt = stmt.where(condition(value))
    if visible is not None:
        stmt = stmt.where(Anomaly.entity_id.in_(visible))
    if hidden:
        stmt = stmt.where(Anomaly.schema_name.not_in(list(hidden)))
    return paging.page(session, stmt, (Anomaly.id,), Anomaly.txid, walk, limit, descending=True)


def entities(session: Session, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Entity]:
    if not ids:
        return {}
    return {row.id: row for row in session.scalars(select(Entity).where(Entity.id.in_(list(ids))))}


def tensors_of_entities(session: Session, schema_name: str, entity_ids: Collection[uuid.UUID]) -> list[Any]:
    """(id, entity_id, schema_name, schema_version, origin, block_steps, time_min, time_max) of the tensors of
    ``schema_name`` of ``entity_ids`` (few: the caller caps them), as rows named as a tensor's attributes."""
    if not entity_ids:
        return []
    return list(session.execute(_NEIGHBOUR_TENSORS, {"schema": schema_name, "ids": list(entity_ids)}))


def blocks_among(
    session: Session, tensor_ids: Collection[uuid.UUID], numbers: Collection[int]
) -> dict[tuple[uuid.UUID, int], tuple[str, bytes]]:
    """(shape, data) of the stored blocks numbered ``numbers`` of ``tensor_ids`` (few of each: the caller caps
    them), by (tensor id, number): one search of the primary key per pair, and a statement built once."""
    if not tensor_ids or not numbers:
        return {}
    rows = session.execute(_NEIGHBOUR_BLOCKS, {"ids": list(tensor_ids), "blocks": list(numbers)})
    return {(tensor_id, block): (shape, data) for tensor_id, block, shape, data in rows}


def related(session: Session, ids: Collection[uuid.UUID], direction: str, type_: str) -> list[tuple[Any, ...]]:
    """(id, source_id, target_id, type, weight, valid_from, valid_to) of the relations of ``type_`` leaving
    (``out``), entering (``in``) or touching (``both``) ``ids``, whatever the ends' visibility."""
    return [tuple(row) for row in session.execute(_RELATED[direction], {"type": type_, "ids": list(ids)})]


def tensors_of_schema(session: Session, schema_name: str, within: Visible | None) -> list[uuid.UUID]:
    stmt = select(Tensor.id).where(Tensor.schema_name == schema_name)
    if within is not None:
        stmt = stmt.where(Tensor.entity_id.in_(within))
    return list(session.scalars(stmt.order_by(Tensor.id)))
