"""Queries over ``relations`` and ``relation_weights``."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Float, Select, and_, case, func, insert, or_, select, union_all
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dust.storage import cache_store
from dust.storage.models import Relation, RelationWeight
from dust.storage.repositories import Visible, paging

IN_CHUNK = 500  # keeps IN lists well under SQLite's bound-parameter limit


class EdgeRow(NamedTuple):
    """What graph walks and the master tensor need of a relation: no attributes, no ORM object (both cost)."""

    id: uuid.UUID
    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str
    weight: float
    valid_from: datetime | None
    valid_to: datetime | None
    changed: float | None = None  # when ``weight`` was recorded, in seconds since 1970: only of decaying types


class epoch(FunctionElement[float]):
    """A stored time as seconds since 1970 (a float), computed by the database: 35,000 times cost no Python
    datetime each (SQLite keeps them as text, which SQLAlchemy would parse)."""

    type = Float()
    inherit_cache = True
    name = "epoch"


@compiles(epoch, "sqlite")
def _epoch_sqlite(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTCDateTime): the whole seconds of the first 19 characters, plus the
    # fraction from the 20th. Not strftime of the whole text: SQLite keeps times to the millisecond, so a fraction
    # from .9995 on rounded up into the next second.
    text = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', substr({text}, 1, 19)) AS REAL) + CAST(substr({text}, 20) AS REAL))"


@compiles(epoch, "postgresql")
def _epoch_postgresql(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) AS DOUBLE PRECISION)"


_EDGE: tuple[Any, ...] = (
    Relation.id,
    Relation.source_id,
    Relation.target_id,
    Relation.type,
    Relation.weight,
    Relation.valid_from,
    Relation.valid_to,
)
# The time of a relation's last recorded weight: one seek of ix_relation_weights_relation per relation.
_LAST_CHANGE = (
    select(epoch(func.max(RelationWeight.changed_at)))
    .where(RelationWeight.relation_id == Relation.id)
    .scalar_subquery()
)


def _edges(decaying: Sequence[str]) -> Select[Any]:
    """What graph walks select: with ``decaying`` types, also the time of the last change of their relations
    (others get null: their weight reads as recorded, whenever that was)."""
    if not decaying:
        return select(*_EDGE)
    return select(*_EDGE, case((Relation.type.in_(decaying), _LAST_CHANGE), else_=None))


def add(session: Session, **fields: Any) -> Relation:
    created = paging.creation_time(session)
    row = Relation(**fields, created_at=created, updated_at=created)
    session.add(row)
    session.flush()
    add_weight(session, row.id, row.weight, row.created_at)
    return row


def add_many(session: Session, rows: list[dict[str, Any]], weights: list[dict[str, Any]]) -> None:
    """Relations (every column but the times, set here) and their weight histories, by two statements."""
    created = paging.creation_time(session)
    if rows:
        session.execute(insert(Relation), [{**row, "created_at": created, "updated_at": created} for row in rows])
    if weights:
        session.execute(insert(RelationWeight), weights)


def find_edges(session: Session, keys: Sequence[tuple[uuid.UUID, uuid.UUID, str]]) -> dict[tuple[Any, ...], uuid.UUID]:
    """The ids of the relations among ``keys`` (source, target, type) that exist, by key."""
    found: dict[tuple[Any, ...], uuid.UUID] = {}
    wanted = list(dict.fromkeys(keys))
    # By source and target together (the edge's unique index): by source alone, a hub's every relation came back
    # for each batch, so an importer adding a hub's relations in batches read a growing list each time.
    for i in range(0, len(wanted), IN_CHUNK // 2):
        part = wanted[i : i + IN_CHUNK // 2]
        sources, targets = list({key[0] for key in part}), list({key[1] for key in part})
        stmt = select(Relation.id, Relation.source_id, Relation.target_id, Relation.type).where(
            Relation.source_id.in_(sources), Relation.target_id.in_(targets)
        )
        found.update({(r.source_id, r.target_id, r.type): r.id for r in session.execute(stmt)})
    asked = set(wanted)  # a part's sources × targets may hold pairs not asked for
    return {key: relation_id for key, relation_id in found.items() if key in asked}


def add_weight(session: Session, relation_id: uuid.UUID, weight: float, when: datetime) -> None:
    session.add(RelationWeight(relation_id=relation_id, weight=weight, changed_at=when))
    session.flush()


def get(
    session: Session, relation_id: uuid.UUID, *, lock: bool = False, within: Visible | None = None
) -> Relation | None:
    """The relation; ``lock``: read afresh and held until commit (None if a delete committed meanwhile);
    ``within``: only if both its ends are among these (a principal's visible ids), in the same query."""
    if lock:
        return session.get(Relation, relation_id, with_for_update=True, populate_existing=True)
    if within is not None:
        return session.scalars(select(Relation).where(Relation.id == relation_id, *_between(within))).first()
    return session.get(Relation, relation_id)


def _between(within: Visible | None) -> list[Any]:
    """The conditions that both ends of a relation are among ``within`` (none for None: every entity)."""
    return [] if within is None else [Relation.source_id.in_(within), Relation.target_id.in_(within)]


def find_edge(session: Session, source_id: uuid.UUID, target_id: uuid.UUID, type_: str) -> Relation | None:
    stmt = select(Relation).where(
        Relation.source_id == source_id, Relation.target_id == target_id, Relation.type == type_
    )
    return session.scalars(stmt).first()


def delete(session: Session, relation_id: uuid.UUID) -> None:
    session.execute(sql_delete(Relation).where(Relation.id == relation_id))


def weights(session: Session, relation_id: uuid.UUID) -> list[RelationWeight]:
    stmt = select(RelationWeight).where(RelationWeight.relation_id == relation_id)
    return list(session.scalars(stmt.order_by(RelationWeight.changed_at, RelationWeight.id)))


def last_change(session: Session, relation_id: uuid.UUID) -> datetime | None:
    """When the relation's weight was last recorded (its newest history row)."""
    stmt = select(func.max(RelationWeight.changed_at)).where(RelationWeight.relation_id == relation_id)
    return session.scalar(stmt)


def last_changes(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
    """When each relation's weight was last recorded, in seconds since 1970."""
    found: dict[uuid.UUID, float] = {}
    for part in chunks(list(ids)):
        stmt = (
            select(RelationWeight.relation_id, epoch(func.max(RelationWeight.changed_at)))
            .where(RelationWeight.relation_id.in_(part))
            .group_by(RelationWeight.relation_id)
        )
        found.update((relation_id, changed_at) for relation_id, changed_at in session.execute(stmt))
    return found


def weights_as_of(session: Session, ids: Sequence[uuid.UUID], at: datetime) -> dict[uuid.UUID, tuple[float, datetime]]:
    """The weight each relation had at ``at`` and when it was recorded: its last change at or before ``at``,
    else its first (a relation valid at ``at`` but recorded later)."""
    found: dict[uuid.UUID, tuple[float, datetime]] = {}
    for part in chunks(list(ids)):
        stmt = (
            select(RelationWeight.relation_id, RelationWeight.weight, RelationWeight.changed_at)
            .where(RelationWeight.relation_id.in_(part))
            .order_by(RelationWeight.changed_at, RelationWeight.id)
        )
        for relation_id, weight, changed_at in session.execute(stmt):
            if changed_at <= at or relation_id not in found:
                found[relation_id] = (weight, changed_at)
    return found


def page(
    session: Session,
    entity_id: uuid.UUID | None,
    types: Sequence[str],
    walk: paging.Walk,
    limit: int,
    visible: Any = None,
) -> tuple[list[Relation], frozenset[int]]:
    """Relations in creation order that ``walk`` has not returned, and the transactions in progress meanwhile;
    with ``visible`` (a query of entity ids), only those between visible ends."""
    stmt: Select[Any] = select(Relation).where(*_between(visible))
    if entity_id is not None:
        stmt = stmt.where(or_(Relation.source_id == entity_id, Relation.target_id == entity_id))
    if types:
        stmt = stmt.where(Relation.type.in_(types))
    return paging.page(session, stmt, (Relation.created_at, Relation.id), Relation.txid, walk, limit)


def touching(
    session: Session,
    ids: Iterable[uuid.UUID],
    direction: str,
    types: Sequence[str],
    min_weight: float | None,
    visible: Visible | None = None,
    decaying: Sequence[str] = (),
) -> list[EdgeRow]:
    """Relations leaving (``out``), entering (``in``) or touching (``both``) any of ``ids``: one query per chunk.
    With ``visible`` (a query of entity ids), only those between visible ends. ``min_weight`` compares the
    recorded weight, except of the ``decaying`` types, whose relations all come with their last change (their
    weight now is computed from it, and compared by the caller)."""
    found: dict[uuid.UUID, EdgeRow] = {}
    for part in chunks(list(ids)):
        ends = []
        if direction in ("out", "both"):
            ends.append(Relation.source_id.in_(part))
        if direction in ("in", "both"):
            ends.append(Relation.target_id.in_(part))
        stmt = _edges(decaying).where(or_(*ends), *_between(visible))
        if types:
            stmt = stmt.where(Relation.type.in_(types))
        if min_weight is not None and decaying:
            stmt = stmt.where(or_(Relation.weight >= min_weight, Relation.type.in_(decaying)))
        elif min_weight is not None:
            stmt = stmt.where(Relation.weight >= min_weight)
        found.update((row[0], EdgeRow(*row)) for row in session.connection().execute(stmt))
    return list(found.values())


def all_edges(
    session: Session, types: Sequence[str], visible: Visible | None = None, decaying: Sequence[str] = ()
) -> list[EdgeRow]:
    """Every relation (of ``types``); with ``visible`` (a query of entity ids), only those between visible ends,
    filtered by the database: no list of ids crosses to it, however many entities there are. Relations of the
    ``decaying`` types come with the time of their last change. Run as Core, not through the ORM's result
    machinery, which took a third of the time of reading every relation (the whole-graph page, the models)."""
    stmt = _edges(decaying).where(*_between(visible))
    if types:
        stmt = stmt.where(Relation.type.in_(types))
    return [EdgeRow(*row) for row in session.connection().execute(stmt)]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_TIME = np.iinfo(np.int64).min  # a packed time that is None (an open end)
_MICROSECOND = timedelta(microseconds=1)


def pack_edges(rows: Sequence[EdgeRow]) -> bytes:
    """``rows`` as bytes for a shared cache (``unpack_edges``): columns of numbers, each entity id stored once."""
    ends = list(dict.fromkeys(e for r in rows for e in (r.source_id, r.target_id)))
    at = {entity: i for i, entity in enumerate(ends)}
    types = sorted({r.type for r in rows})
    type_at = {name: i for i, name in enumerate(types)}
    arrays = {
        "ids": _uuids([r.id for r in rows]),
        "ends": _uuids(ends),
        "source": np.fromiter((at[r.source_id] for r in rows), np.int32, len(rows)),
        "target": np.fromiter((at[r.target_id] for r in rows), np.int32, len(rows)),
        "type": np.fromiter((type_at[r.type] for r in rows), np.int32, len(rows)),
        "weight": np.fromiter((r.weight for r in rows), np.float64, len(rows)),
        "valid_from": np.fromiter((_us(r.valid_from) for r in rows), np.int64, len(rows)),
        "valid_to": np.fromiter((_us(r.valid_to) for r in rows), np.int64, len(rows)),
        "changed": np.fromiter((math.nan if r.changed is None else r.changed for r in rows), np.float64, len(rows)),
    }
    return cache_store.pack({"types": types}, arrays)


def unpack_edges(raw: bytes) -> list[EdgeRow]:
    """The rows ``pack_edges`` packed, equal to those read from the database."""
    header, arrays = cache_store.unpack(raw)
    types: list[str] = header["types"]
    ends = _from_uuids(arrays["ends"])
    times: dict[int, datetime | None] = {_NO_TIME: None}  # few distinct times: each made once
    for value in np.unique(np.concatenate([arrays["valid_from"], arrays["valid_to"]])).tolist():
        if value != _NO_TIME:
            times[value] = _EPOCH + value * _MICROSECOND
    columns = zip(
        _from_uuids(arrays["ids"]),
        arrays["source"].tolist(),
        arrays["target"].tolist(),
        arrays["type"].tolist(),
        arrays["weight"].tolist(),
        arrays["valid_from"].tolist(),
        arrays["valid_to"].tolist(),
        arrays["changed"].tolist(),
        strict=True,
    )
    return [
        EdgeRow(i, ends[s], ends[t], types[k], w, times[vf], times[vt], None if math.isnan(c) else c)
        for i, s, t, k, w, vf, vt, c in columns
    ]


def _uuids(values: Sequence[uuid.UUID]) -> np.ndarray:
    return np.frombuffer(b"".join(v.bytes for v in values), np.uint8).reshape(len(values), 16)


def _from_uuids(packed: np.ndarray) -> list[uuid.UUID]:
    raw = packed.tobytes()
    return [uuid.UUID(bytes=raw[i : i + 16]) for i in range(0, len(raw), 16)]


def _us(when: datetime | None) -> int:
    return _NO_TIME if when is None else (when - _EPOCH) // _MICROSECOND


def strongest_ends(
    session: Session, types: Sequence[str], visible: Visible | None, moment: datetime, limit: int
) -> tuple[list[uuid.UUID], int, int]:
    """The ``limit`` entities with the most total weight (as recorded, absolute) of relations valid at ``moment``
    (of ``types``; both ends among ``visible``), most first (ties by id); and how many entities and relations
    there are in all. Summed by the database: no relation crosses to Python."""
    conditions = [*_valid_at(moment), *_between(visible), *([Relation.type.in_(types)] if types else [])]
    weight = func.abs(Relation.weight)
    ends = union_all(
        select(Relation.source_id.label("entity"), weight.label("weight")).where(*conditions),
        select(Relation.target_id.label("entity"), weight.label("weight")).where(*conditions),
    ).subquery()
    per = select(ends.c.entity, func.sum(ends.c.weight).label("strength")).group_by(ends.c.entity).subquery()
    top = session.scalars(select(per.c.entity).order_by(per.c.strength.desc(), per.c.entity).limit(limit))
    entities = session.scalar(select(func.count()).select_from(per)) or 0
    relations = session.scalar(select(func.count()).select_from(Relation).where(*conditions)) or 0
    return list(top), entities, relations


def among(session: Session, ids: list[uuid.UUID], types: Sequence[str], decaying: Sequence[str] = ()) -> list[EdgeRow]:
    """The relations (of ``types``) whose both ends are among ``ids``, as ``all_edges`` gives them."""
    # The target is tested as an expression, which no index serves: with two IN lists on the (source, target)
    # index SQLite probed it once per pair (600,000 probes for 1,200 entities); so it seeks by source and
    # filters the targets itself, and returns only the relations among ``ids`` (a hub's others stay behind).
    target = func.coalesce(Relation.target_id, Relation.target_id)
    found: list[EdgeRow] = []
    for part in chunks(ids):
        stmt = _edges(decaying).where(Relation.source_id.in_(part), target.in_(ids))
        if types:
            stmt = stmt.where(Relation.type.in_(types))
        found += [EdgeRow(*row) for row in session.connection().execute(stmt)]
    return found


def _valid_at(moment: datetime) -> list[Any]:
    """valid_from <= moment < valid_to, a null bound open (as ``weights.live`` tells them apart)."""
    return [
        or_(Relation.valid_from.is_(None), Relation.valid_from <= moment),
        or_(Relation.valid_to.is_(None), Relation.valid_to > moment),
    ]


def chunks(items: list[uuid.UUID]) -> Iterable[list[uuid.UUID]]:
    """``items`` in IN-list sized parts."""
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def count_touching(session: Session, entity_id: uuid.UUID, *, outside: Any) -> int:
    """How many relations of ``entity_id`` lead to an entity not in the id query ``outside`` (None: all seen)."""
    if outside is None:
        return 0
    stmt = (
        select(func.count())
        .select_from(Relation)
        .where(
            or_(
                and_(Relation.source_id == entity_id, Relation.target_id.not_in(outside)),
                and_(Relation.target_id == entity_id, Relation.source_id.not_in(outside)),
            )
        )
    )
    return session.scalar(stmt) or 0


def types_touching(session: Session, entity_id: uuid.UUID, types: Sequence[str]) -> list[str]:
    """Which of ``types`` the relations of ``entity_id`` have, sorted."""
    stmt = (
        select(Relation.type)
        .where(or_(Relation.source_id == entity_id, Relation.target_id == entity_id), Relation.type.in_(types))
        .distinct()
    )
    return sorted(session.scalars(stmt))
