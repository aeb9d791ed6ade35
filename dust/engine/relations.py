"""Relations: typed, weighted, directed edges between entities, valid over an interval, with weight history.

All relations together are the master tensor R[type, source, target] = weight.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.engine.entities import EntityPublic, merge_patch
from dust.engine.paging import keyset_after, keyset_cursor
from dust.engine.timegrid import as_utc
from dust.storage.models import Relation, utcnow
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as repo

TYPE = r"^[a-z][a-z0-9_\-]{0,63}$"
Direction = Literal["out", "in", "both"]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("weight must be a finite number")
    return value


class RelationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str = Field(pattern=TYPE, description="Relation type, e.g. treats, supplies, pays.")
    weight: float = Field(1.0, description="Strength of the relation.")
    attributes: dict[str, Any] = Field(default_factory=dict)
    valid_from: datetime | None = Field(None, description="Start of validity (inclusive); null: always.")
    valid_to: datetime | None = Field(None, description="End of validity (exclusive); null: open.")

    _weight = field_validator("weight")(_finite)

    @model_validator(mode="after")
    def _interval(self) -> RelationCreate:
        _check_interval(self.valid_from, self.valid_to)
        return self


class RelationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float | None = None
    attributes: dict[str, Any] | None = Field(None, description="Merged (RFC 7396); null removes a key.")
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)


class WeightChange(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    weight: float
    changed_at: datetime


class RelationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str
    weight: float
    attributes: dict[str, Any]
    valid_from: datetime | None
    valid_to: datetime | None
    created_at: datetime
    updated_at: datetime


class RelationDetail(RelationPublic):
    history: list[WeightChange] = Field(description="Every weight the relation has had, oldest first.")


class RelationList(BaseModel):
    items: list[RelationPublic]
    next_cursor: str | None = None


class Node(EntityPublic):
    depth: int = Field(description="Hops from the queried entity.")


class Edge(BaseModel):
    id: uuid.UUID
    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str
    weight: float


class Neighbourhood(BaseModel):
    nodes: list[Node]
    edges: list[Edge]


class MasterTensor(BaseModel):
    """R[type, source, target] = weight as sparse COO: ``indices`` is [types, sources, targets]."""

    types: list[str]
    entity_ids: list[uuid.UUID]
    indices: list[list[int]]
    values: list[float]
    shape: list[int]


def _check_interval(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and as_utc(start) >= as_utc(end):
        raise ValueError("valid_from must be before valid_to")


def create(session: Session, data: RelationCreate) -> RelationPublic:
    ids = [data.source_id, data.target_id]
    missing = set(ids) - entity_repo.existing_ids(session, ids)
    if missing:
        raise InvalidInput(f"entity {sorted(map(str, missing))[0]} does not exist; relations join existing entities")
    if repo.find_edge(session, data.source_id, data.target_id, data.type) is not None:
        raise _duplicate(data)
    try:
        with session.begin_nested():
            row = repo.add(session, **data.model_dump())
    except IntegrityError:
        raise _duplicate(data) from None
    return RelationPublic.model_validate(row)


def _duplicate(data: RelationCreate) -> Conflict:
    return Conflict(
        f"a '{data.type}' relation from {data.source_id} to {data.target_id} exists; PATCH it to change its weight"
    )


def get(session: Session, relation_id: uuid.UUID) -> RelationDetail:
    row = _row(session, relation_id)
    history = [WeightChange.model_validate(w) for w in repo.weights(session, row.id)]
    return RelationDetail(**RelationPublic.model_validate(row).model_dump(), history=history)


def _row(session: Session, relation_id: uuid.UUID) -> Relation:
    row = repo.get(session, relation_id)
    if row is None:
        raise NotFound(f"relation {relation_id} does not exist")
    return row


def update(session: Session, relation_id: uuid.UUID, data: RelationUpdate) -> RelationDetail:
    row = _row(session, relation_id)
    changes = data.model_dump(exclude_unset=True)
    if "weight" in changes and changes["weight"] is None:
        raise InvalidInput("weight cannot be null")
    start = changes.get("valid_from", row.valid_from)
    end = changes.get("valid_to", row.valid_to)
    try:
        _check_interval(start, end)
    except ValueError as problem:
        raise InvalidInput(str(problem)) from None
    if "attributes" in changes:
        changes["attributes"] = merge_patch(row.attributes, changes["attributes"] or {})
    weight = changes.pop("weight", None)
    for field, value in changes.items():
        setattr(row, field, value)
    if weight is not None and weight != row.weight:
        row.weight = weight
        repo.add_weight(session, row.id, weight, utcnow())
    session.flush()
    return get(session, relation_id)


def delete(session: Session, relation_id: uuid.UUID) -> None:
    _row(session, relation_id)
    repo.delete(session, relation_id)
    session.expunge_all()


def list_(
    session: Session,
    *,
    entity_id: uuid.UUID | None = None,
    types: list[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> RelationList:
    rows = repo.page(session, entity_id, types or [], keyset_after(cursor), limit + 1)
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return RelationList(
        items=[RelationPublic.model_validate(r) for r in rows[:limit]],
        next_cursor=keyset_cursor(last.created_at, last.id) if last else None,
    )


def neighbourhood(
    session: Session,
    entity_id: uuid.UUID,
    *,
    types: list[str] | None = None,
    direction: Direction = "both",
    depth: int = 1,
    min_weight: float | None = None,
    at: datetime | None = None,
) -> Neighbourhood:
    """Entities reached from ``entity_id`` in up to ``depth`` hops, and the edges walked.

    With ``at``, only relations valid at that time count, with the weight they had then.
    """
    if not 1 <= depth <= 3:
        raise InvalidInput(f"depth {depth} is outside 1..3")
    start = entity_repo.get(session, entity_id)
    if start is None:
        raise NotFound(f"entity {entity_id} does not exist")
    depths = {entity_id: 0}
    edges: dict[uuid.UUID, Edge] = {}
    frontier = {entity_id}
    for hop in range(1, depth + 1):
        found = _live(
            session,
            repo.touching(session, frontier, direction, types or [], None if at else min_weight),
            at,
            min_weight,
        )
        reached: set[uuid.UUID] = set()
        for edge in found:
            edges[edge.id] = edge
            for end in (edge.source_id, edge.target_id):
                if end not in depths:
                    depths[end] = hop
                    reached.add(end)
        frontier = reached
        if not frontier:
            break
    rows = entity_repo.by_ids(session, list(depths))
    nodes = [Node(**EntityPublic.model_validate(r).model_dump(), depth=depths[r.id]) for r in rows]
    nodes.sort(key=lambda n: (n.depth, n.name, str(n.id)))
    return Neighbourhood(nodes=nodes, edges=sorted(edges.values(), key=lambda e: (e.type, str(e.id))))


def _live(session: Session, rows: list[Relation], at: datetime | None, min_weight: float | None) -> list[Edge]:
    """Edges as they stood at ``at`` (all current ones when ``at`` is None)."""
    if at is None:
        return [_edge(r, r.weight) for r in rows]
    at = as_utc(at)
    valid = [
        r for r in rows if (r.valid_from is None or r.valid_from <= at) and (r.valid_to is None or at < r.valid_to)
    ]
    then = repo.weights_as_of(session, [r.id for r in valid], at)
    edges = [_edge(r, then.get(r.id, r.weight)) for r in valid]
    return [e for e in edges if min_weight is None or e.weight >= min_weight]


def _edge(row: Relation, weight: float) -> Edge:
    return Edge(id=row.id, source_id=row.source_id, target_id=row.target_id, type=row.type, weight=weight)


def master_tensor(session: Session, *, types: list[str] | None = None, at: datetime | None = None) -> MasterTensor:
    """The whole master tensor (or the given types) as sparse COO; entity ids sorted, types sorted."""
    edges = _live(session, repo.all_edges(session, types or []), at, None)
    type_names = sorted({e.type for e in edges})
    ids = sorted({e.source_id for e in edges} | {e.target_id for e in edges}, key=str)
    type_index = {t: i for i, t in enumerate(type_names)}
    position = {entity: i for i, entity in enumerate(ids)}
    edges.sort(key=lambda e: (type_index[e.type], position[e.source_id], position[e.target_id]))
    return MasterTensor(
        types=type_names,
        entity_ids=ids,
        indices=[
            [type_index[e.type] for e in edges],
            [position[e.source_id] for e in edges],
            [position[e.target_id] for e in edges],
        ],
        values=[e.weight for e in edges],
        shape=[len(type_names), len(ids), len(ids)],
    )
