"""Relations: typed, weighted, directed edges between entities, valid over an interval, with weight history.

All relations together are the master tensor R[type, source, target] = weight. Every weight shown is the weight
at the time asked (now by default), which the type's weight policy may make decay between recorded changes
(``dust.engine.weights``); the history holds the weights as recorded.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.engine import access, audit, caches, entities, weights
from dust.engine.entities import EntityPublic, bounded_merge
from dust.engine.fields import Attributes, Timestamp, not_null
from dust.engine.paging import keyset_next_cursor, keyset_walk
from dust.engine.timegrid import as_utc, shown
from dust.storage.models import Relation
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as repo

TYPE = r"^[a-z][a-z0-9_\-]{0,63}$"
TYPE_NAME = re.compile(TYPE, re.ASCII)
MAX_TYPES = 32  # each is a bound parameter of every query it filters
EDGE_BYTES = 600  # about what one relation row weighs in memory (a tuple, three UUIDs, a float), for the cache
Direction = Literal["out", "in", "both"]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("weight must be a finite number")
    return value


def _number(value: Any) -> Any:
    # pydantic would take true as 1.0 and "0.5" as 0.5; JSON says which is a number.
    if isinstance(value, bool | str):
        raise ValueError(f"weight must be a number, not {'true or false' if isinstance(value, bool) else 'text'}")
    return value


class RelationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str = Field(pattern=TYPE, description="Relation type, e.g. treats, supplies, pays.")
    weight: float = Field(1.0, description="Strength of the relation.")
    attributes: Attributes = Field(default_factory=dict)
    valid_from: Timestamp | None = Field(
        None, description="Start of validity (inclusive), before valid_to; null: valid since always."
    )
    valid_to: Timestamp | None = Field(None, description="End of validity (exclusive); null: valid for good.")

    _weight = field_validator("weight")(_finite)
    _weight_type = field_validator("weight", mode="before")(_number)

    @model_validator(mode="after")
    def _interval(self) -> RelationCreate:
        _check_interval(self.valid_from, self.valid_to)
        return self


class RelationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(None, json_schema_extra=not_null)  # refused: a relation always has a weight
    attributes: Attributes | None = Field(None, description="Merged (RFC 7396); null removes a key.")
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None

    _weight_type = field_validator("weight", mode="before")(_number)

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)


class Interaction(BaseModel):
    """An encounter that strengthens a relation by its type's ``reinforce`` (or by ``amount``)."""

    model_config = ConfigDict(extra="forbid")

    at: Timestamp | None = Field(
        None,
        description="When it happened: not in the future, nor before the relation's last weight change. Default now.",
    )
    amount: float | None = Field(
        None,
        description="Added instead of the policy's reinforce (negative weakens); needed for a type without "
        "a weight policy.",
    )

    _amount_type = field_validator("amount", mode="before")(_number)

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: float | None) -> float | None:
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
    weight: float = Field(
        description="The weight now: the last recorded one, decayed since by the type's weight policy, if any."
    )
    attributes: dict[str, Any]
    valid_from: datetime | None
    valid_to: datetime | None
    created_at: datetime
    updated_at: datetime


class RelationDetail(RelationPublic):
    history: list[WeightChange] = Field(description="Every weight recorded for the relation, oldest first.")


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


class Strongest(BaseModel):
    """The best connected entities of a graph too large to draw, the relations among them, and the totals."""

    entity_ids: list[uuid.UUID] = Field(description="Most total weight first.")
    edges: list[Edge]
    total_entities: int = Field(description="Entities with a relation that counts (valid, of the types).")
    total_relations: int


class MasterTensor(BaseModel):
    """R[type, source, target] = weight as sparse COO: ``indices`` is [types, sources, targets]."""

    types: list[str]
    entity_ids: list[uuid.UUID]
    indices: list[list[int]]
    values: list[float]
    shape: list[int]


def _check_interval(start: datetime | None, end: datetime | None) -> None:
    """Both in UTC already: Timestamp fields and stored times are."""
    if start is not None and end is not None and start >= end:
        raise ValueError("valid_from must be before valid_to")


def create(session: Session, data: RelationCreate) -> RelationPublic:
    ids = [data.source_id, data.target_id]
    missing = set(ids) - entity_repo.existing_ids(session, ids, within=access.visible_ids(session))
    if missing:
        raise InvalidInput(f"entity {sorted(map(str, missing))[0]} does not exist; relations join existing entities")
    access.require_grant(session, data.type)
    existing = repo.find_edge(session, data.source_id, data.target_id, data.type)
    if existing is not None:
        raise _duplicate(data, existing.id)
    fields = data.model_dump() | {"weight": weights.clamp(session, data.type, data.weight)}
    caches.changed(session, caches.RELATIONS)
    try:
        with session.begin_nested():
            row = repo.add(session, **fields)
    except IntegrityError:
        raise _duplicate(data, None) from None
    audit.record(session, "create", "relation", row.id, ids)
    return _public(session, row, row.weight)


def create_many(
    session: Session, items: Sequence[RelationCreate], interactions: Sequence[Sequence[datetime]] | None = None
) -> list[uuid.UUID]:
    """Relations inserted together (for importers), all or nothing, checked as ``create`` checks one; the ids.

    The bulk equivalent of ``create`` then ``interact(at=t)`` for each ``t`` of ``interactions[i]``: the first
    weight takes effect at ``valid_from`` (now without one), and each interaction adds the type's ``reinforce``
    to the weight decayed until then, as its policy says; every step is in the weight history.
    """
    ends = list(dict.fromkeys(e for data in items for e in (data.source_id, data.target_id)))
    entities.check_visible(session, ends)
    for type_ in {data.type for data in items}:
        access.require_grant(session, type_)
    keys = [(data.source_id, data.target_id, data.type) for data in items]
    taken = repo.find_edges(session, keys)
    seen: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
    for data, key in zip(items, keys, strict=True):
        if key in taken or key in seen:
            raise _duplicate(data, taken.get(key))
        seen.add(key)
    rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for i, data in enumerate(items):
        relation_id = uuid.uuid4()
        steps = _weight_steps(session, data, interactions[i] if interactions else [])
        history.extend({"relation_id": relation_id, "weight": w, "changed_at": at} for at, w in steps)
        rows.append({**data.model_dump(), "id": relation_id, "weight": steps[-1][1]})
    caches.changed(session, caches.RELATIONS)
    repo.add_many(session, rows, history)
    audit.record_each(session, "create", "relation", [(r["id"], [r["source_id"], r["target_id"]]) for r in rows])
    return [r["id"] for r in rows]


def _weight_steps(session: Session, data: RelationCreate, times: Sequence[datetime]) -> list[tuple[datetime, float]]:
    """(when, weight) of a new relation's first weight and after each interaction at ``times``."""
    rules = weights.policy(session, data.type)
    now = datetime.now(UTC)
    steps = [(data.valid_from or now, weights.clamp(session, data.type, data.weight))]
    for at in times:
        last, weight = steps[-1]
        at = as_utc(at, "at")
        if not last <= at <= now:
            raise InvalidInput(
                f"interaction at {at.isoformat()} is not within {last.isoformat()}..now: give them in order"
            )
        if rules is None:
            raise InvalidInput(f"'{data.type}' relations have no weight policy, so an interaction has nothing to add")
        steps.append((at, rules.clamp(weights.weight_at(weight, last, at, rules) + rules.reinforce)))
    return steps


def _public(session: Session, row: Relation, weight: float | None = None) -> RelationPublic:
    """The relation as the principal may read it (attributes de-identified for analysts), with ``weight`` or
    its weight now."""
    public = RelationPublic.model_validate(row)
    public.attributes = access.present_attributes(session, row.attributes)
    public.weight = _weights_now(session, [row])[0] if weight is None else weight
    return public


def _weights_now(session: Session, rows: Sequence[Relation]) -> list[float]:
    edges = [repo.EdgeRow(r.id, r.source_id, r.target_id, r.type, r.weight, r.valid_from, r.valid_to) for r in rows]
    return weights.weights_of(session, edges)


def _duplicate(data: RelationCreate, relation_id: uuid.UUID | None) -> Conflict:
    which = "" if relation_id is None else f" ({relation_id})"
    return Conflict(
        f"a '{data.type}' relation from {data.source_id} to {data.target_id} exists{which}; change its weight with "
        "PATCH /relations/{relation_id} (in Python: update_relation)"
    )


def get(session: Session, relation_id: uuid.UUID) -> RelationDetail:
    row = _row(session, relation_id)
    audit.record(session, "read", "relation", row.id, [row.source_id, row.target_id])
    return _detail(session, row)


def _detail(session: Session, row: Relation, weight: float | None = None) -> RelationDetail:
    history = [WeightChange.model_validate(w) for w in repo.weights(session, row.id)]
    return RelationDetail(**_public(session, row, weight).model_dump(), history=history)


def _row(session: Session, relation_id: uuid.UUID, *, lock: bool = False) -> Relation:
    """The relation, if it exists and the principal may see both its ends (404 either way); ``lock`` as for
    ``entities.get_row``."""
    missing = NotFound(f"relation {relation_id} does not exist")
    row = repo.get(session, relation_id, within=access.visible_ids(session))
    if row is None:
        raise missing
    if lock and (row := repo.get(session, relation_id, lock=True)) is None:
        raise missing
    return row


def update(session: Session, relation_id: uuid.UUID, data: RelationUpdate) -> RelationDetail:
    row = _row(session, relation_id, lock=True)
    access.require_grant(session, row.type)
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
        changes["attributes"] = bounded_merge(row.attributes, changes["attributes"] or {})
    weight = changes.pop("weight", None)
    caches.changed(session, caches.RELATIONS)
    for field, value in changes.items():
        setattr(row, field, value)
    recorded = None
    if weight is not None and weights.clamp(session, row.type, weight) != _weights_now(session, [row])[0]:
        recorded, _ = weights.change(session, row, lambda _: weight)  # "set": the weight now becomes this
    session.flush()
    audit.record(session, "update", "relation", row.id, [row.source_id, row.target_id])
    return _detail(session, row, recorded)


def interact(session: Session, relation_id: uuid.UUID, data: Interaction | None = None) -> RelationDetail:
    """Record an interaction: the weight at ``at`` plus the type's ``reinforce`` (or ``amount``), clamped to
    [floor, cap]; the relation with its weight now. Access as for ``update``."""
    data = data or Interaction()
    row = _row(session, relation_id, lock=True)
    access.require_grant(session, row.type)
    rules = weights.policy(session, row.type)
    amount = data.amount if data.amount is not None else None if rules is None else rules.reinforce
    if amount is None:
        raise InvalidInput(
            f"'{row.type}' relations have no weight policy, so an interaction has nothing to add: give amount, "
            f"or set a policy with PUT /weight-policies/{row.type}"
        )
    recorded, _ = weights.change(session, row, lambda w: w + amount, data.at)
    audit.record(session, "update", "relation", row.id, [row.source_id, row.target_id])
    return _detail(session, row, recorded if data.at is None else None)


def delete(session: Session, relation_id: uuid.UUID) -> None:
    row = _row(session, relation_id)
    access.require_grant(session, row.type)
    ends = [row.source_id, row.target_id]
    caches.changed(session, caches.RELATIONS)
    repo.delete(session, relation_id)
    audit.record(session, "delete", "relation", relation_id, ends)
    session.expunge_all()


def list_(
    session: Session,
    *,
    entity_id: uuid.UUID | None = None,
    types: list[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> RelationList:
    walk = keyset_walk(cursor)
    rows, in_progress = repo.page(session, entity_id, _types(types), walk, limit + 1, access.visible_ids(session))
    shown = rows[:limit]
    audit.record_each(session, "read", "relation", [(r.id, [r.source_id, r.target_id]) for r in shown])
    return RelationList(
        items=[_public(session, r, w) for r, w in zip(shown, _weights_now(session, shown), strict=True)],
        next_cursor=keyset_next_cursor(walk, rows, in_progress, limit),
    )


def type_names(value: str | Sequence[str] | None) -> list[str]:
    """The relation types a query names: a comma list (``type=treats,works_at``) or a list of names."""
    if isinstance(value, str):
        names = [t.strip() for t in value.split(",") if t.strip()]
    elif value is None or (isinstance(value, Sequence) and all(isinstance(t, str) for t in value)):
        names = list(value or [])
    else:
        raise InvalidInput(f"type must be a relation type, a comma list or a list of them, not {shown(value)}")
    if len(names) > MAX_TYPES:
        raise InvalidInput(f"type may name at most {MAX_TYPES} relation types; this request names {len(names)}")
    return names


def _types(types: list[str] | None) -> list[str]:
    """The type filter, each checked: a name that no relation can have is a mistake worth saying."""
    for name in types or []:
        if not TYPE_NAME.fullmatch(name):
            raise InvalidInput(
                f"type {name[:70]!r} is not a relation type: lowercase letters, digits, '_' or '-', "
                "starting with a letter, at most 64 characters"
            )
    return list(types or [])


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
        raise InvalidInput(f"depth must be 1, 2 or 3, not {depth}")
    if min_weight is not None and math.isnan(min_weight):
        raise InvalidInput("min_weight must be a number, not NaN")
    at = _as_of(at)
    wanted = _types(types)
    if entity_repo.get(session, entity_id) is None:
        raise NotFound(f"entity {entity_id} does not exist")
    access.require_visible(session, entity_id)
    depths = {entity_id: 0}
    edges: dict[uuid.UUID, Edge] = {}
    frontier = {entity_id}
    visible = access.visible_ids(session)  # a hidden entity must not show, even as an edge's end
    slow = [] if at else weights.decaying(session, wanted)  # their weight now is computed, then compared
    for hop in range(1, depth + 1):
        near = repo.touching(session, frontier, direction, wanted, None if at else min_weight, visible, slow)
        found = _live(session, near, at, min_weight)
        reached: set[uuid.UUID] = set()
        for row, weight in found:
            edges[row.id] = _edge(row, weight)
            for end in (row.source_id, row.target_id):
                if end not in depths:
                    depths[end] = hop
                    reached.add(end)
        frontier = reached
        if not frontier:
            break
    rows = [row for part in repo.chunks(list(depths)) for row in entity_repo.by_ids(session, part)]
    nodes = [Node(**access.present(session, r), depth=depths[r.id]) for r in rows]
    nodes.sort(key=lambda n: (n.depth, n.name, str(n.id)))
    audit.record(session, "read", "entity", None, [n.id for n in nodes])
    return Neighbourhood(nodes=nodes, edges=sorted(edges.values(), key=lambda e: (e.type, str(e.id))))


def _as_of(at: datetime | None) -> datetime | None:
    return None if at is None else as_utc(at, "at")


def _live(
    session: Session, rows: list[repo.EdgeRow], at: datetime | None, min_weight: float | None
) -> list[tuple[repo.EdgeRow, float]]:
    """Each edge valid at ``at`` with its weight then; without ``at``, the edges valid now and their weight now."""
    found = weights.live(session, rows, at)
    return found if min_weight is None else [(r, w) for r, w in found if w >= min_weight]


def _edge(row: repo.EdgeRow, weight: float) -> Edge:
    return Edge(id=row.id, source_id=row.source_id, target_id=row.target_id, type=row.type, weight=weight)


def strongest(
    session: Session,
    limit: int,
    *,
    types: list[str] | None = None,
    at: datetime | None = None,
    min_weight: float | None = None,
) -> Strongest:
    """The ``limit`` entities with the most total weight of relations (valid at ``at``, default now; of
    ``types``), and the relations among them of at least ``min_weight``: a sample of the master tensor for a
    view that cannot draw it all. The database ranks the entities, by the weights their relations have as
    recorded (a decaying type's as last set), so that only the relations among them are read, not every one;
    those come with their weight at ``at``. Both ends are entities the principal may see; an entity whose
    relations among the others all fall below ``min_weight`` is left out."""
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, not {limit}")
    at, wanted = _as_of(at), _types(types)
    moment = at or datetime.now(UTC)
    best, entities_, relations_ = repo.strongest_ends(session, wanted, access.visible_ids(session), moment, limit)
    slow = [] if at else weights.decaying(session, wanted)
    found = _live(session, repo.among(session, best, wanted, slow), at, min_weight)
    drawn = {end for row, _ in found for end in (row.source_id, row.target_id)}
    kept = [e for e in best if e in drawn]
    audit.record(session, "read", "entity", None, kept or [None])
    edges = [_edge(row, weight) for row, weight in found]
    return Strongest(entity_ids=kept, edges=edges, total_entities=entities_, total_relations=relations_)


def _all_edges(session: Session, wanted: list[str], slow: list[str]) -> list[repo.EdgeRow]:
    """The rows of the master tensor, both ends visible: from the shared cache for a principal who sees every
    entity (``dust.engine.caches``, under the relations epoch that every change of a relation, its weight or an
    entity raises). Which relations are valid when, and their weights then, are worked out from the rows at each
    read, so "now" moves on and ``at`` stays exact. A scoped principal's rows depend on their reach: read afresh."""
    visible = access.visible_ids(session)
    shared = caches.of(session) if visible is None else None
    key = ("master", tuple(wanted), tuple(slow))  # decaying types come with their last change
    found = None if shared is None else shared.find(session, caches.RELATIONS, key, repo.unpack_edges)
    if found is not None:
        return found
    edges = repo.all_edges(session, wanted, visible, slow)
    if shared is not None:
        shared.keep(session, caches.RELATIONS, key, edges, repo.pack_edges, EDGE_BYTES * len(edges) + 1024)
    return edges


def master_tensor(session: Session, *, types: list[str] | None = None, at: datetime | None = None) -> MasterTensor:
    """The whole master tensor (or the given types) as sparse COO; types and entity ids sorted, entries in order."""
    wanted, at = _types(types), _as_of(at)
    slow = [] if at else weights.decaying(session, wanted)
    live = _live(session, _all_edges(session, wanted, slow), at, None)
    type_names = sorted({row.type for row, _ in live})
    ids = sorted({row.source_id for row, _ in live} | {row.target_id for row, _ in live})  # UUID order = str order
    type_index = {name: i for i, name in enumerate(type_names)}
    position = {entity: i for i, entity in enumerate(ids)}
    # (type, source, target) is unique, so the sort never compares weights
    entries = sorted((type_index[r.type], position[r.source_id], position[r.target_id], w) for r, w in live)
    audit.record(session, "read", "master_tensor", None, ids or [None])
    return MasterTensor(
        types=type_names,
        entity_ids=ids,
        indices=[[e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]],
        values=[e[3] for e in entries],
        shape=[len(type_names), len(ids), len(ids)],
    )
