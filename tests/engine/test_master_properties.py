"""Property tests of the master tensor (hypothesis) against a model: random relations between random entities,
of random types, weights and validity intervals, some weights and intervals changed afterwards.

``master_tensor()`` (now, or ``at`` a moment) is the COO the model's relations give, and what
``relations.list_`` lists gives; ``neighbourhood`` (depth 1-3, any direction, types and minimum weight, now or
``at``) is what a breadth-first walk of the model reaches. The examples share the function-scoped database (see
tests/engine/properties.py): each makes its own entities and relation types (named per example) and asks about
those only, except where it checks the whole master tensor against everything listed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hypothesis import event, given, note
from hypothesis import strategies as st

from dust.embedded import Dust
from dust.engine import relations
from dust.engine.relations import MasterTensor, RelationUpdate
from tests.engine.properties import ZONES, examples

NOW = datetime.now(UTC)
# Validity bounds a day or more away from now, so that "valid now" cannot change while an example runs.
MOMENTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2300, 1, 1), timezones=ZONES).filter(
    lambda moment: abs(moment - NOW) > timedelta(days=1)
)
WEIGHTS = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(allow_nan=False, allow_infinity=False))
Direction = Literal["out", "in", "both"]
DIRECTIONS: list[Direction] = ["out", "in", "both"]


@st.composite
def intervals(draw: st.DrawFn) -> tuple[datetime | None, datetime | None]:
    """[valid_from, valid_to), either end open (None), open more often than not so that walks go somewhere."""
    bound = st.one_of(st.none(), st.none(), MOMENTS)
    start, end = draw(bound), draw(bound)
    if start is not None and end is not None:
        start, end = sorted((start, end))
        if start == end:
            end = None
    return start, end


@dataclass
class Rel:
    """One relation as the model has it: ends and type as indices into the example's entities and types."""

    source: int
    target: int
    type: int
    weights: list[float]  # every weight it has had, as the history should list them
    valid_from: datetime | None
    valid_to: datetime | None
    id: uuid.UUID | None = None
    changed: list[datetime] = field(default_factory=list)  # when each weight was set, as the engine recorded

    def valid(self, moment: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= moment) and (
            self.valid_to is None or moment < self.valid_to
        )

    def weight(self, at: datetime | None) -> float:
        """The weight now, or at ``at``: the last one set by then, else the first."""
        if at is None:
            return self.weights[-1]
        then = [w for w, when in zip(self.weights, self.changed, strict=True) if when <= at]
        return then[-1] if then else self.weights[0]


@dataclass
class Graph:
    entities: int
    types: int
    rels: list[Rel]
    changes: list[tuple[int, str, Any]]  # (relation, "weight" or "interval", new value)


@st.composite
def graphs(draw: st.DrawFn, least: int = 0) -> Graph:
    """1-6 entities, 1-3 types, ``least``-12 relations (self-loops too), 0-6 changes of weight or interval."""
    n, types = draw(st.integers(1 if least == 0 else 2, 6)), draw(st.integers(1, 3))
    key = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(0, types - 1))
    keys = draw(st.lists(key, min_size=min(least, n * n * types), max_size=12, unique=True))
    rels = [Rel(s, t, k, [draw(WEIGHTS)], *draw(intervals())) for s, t, k in keys]
    change = st.one_of(st.tuples(st.just("weight"), WEIGHTS), st.tuples(st.just("interval"), intervals()))
    changes = (
        [(draw(st.integers(0, len(rels) - 1)), *draw(change)) for _ in range(draw(st.integers(0, 6)))] if rels else []
    )
    return Graph(n, types, rels, changes)


@dataclass
class World:
    """A graph made in the database: entity ids and type names by index, relations with their ids."""

    ids: list[uuid.UUID]
    types: list[str]
    rels: list[Rel]

    def live(self, at: datetime | None, types: Sequence[str] | None = None) -> list[tuple[Rel, float]]:
        moment = at or datetime.now(UTC)
        return [
            (r, r.weight(at)) for r in self.rels if r.valid(moment) and (types is None or self.types[r.type] in types)
        ]


def build(db: Dust, graph: Graph) -> World:
    token = uuid.uuid4().hex[:8]
    types = [f"t{token}-{k}" for k in range(graph.types)]
    made = db.create_entities([{"kind": "node", "name": f"n{i}"} for i in range(graph.entities)])
    ids = [e.id for e in made]
    for rel in graph.rels:
        created = db.relate(
            ids[rel.source],
            ids[rel.target],
            types[rel.type],
            rel.weights[0],
            valid_from=rel.valid_from,
            valid_to=rel.valid_to,
        )
        rel.id = created.id
    for index, kind, value in graph.changes:
        rel = graph.rels[index]
        assert rel.id is not None
        with db.session() as s:
            if kind == "weight":
                relations.update(s, rel.id, RelationUpdate(weight=value))
                if value != rel.weights[-1]:  # an unchanged weight adds nothing to the history
                    rel.weights.append(value)
            else:
                relations.update(s, rel.id, RelationUpdate(valid_from=value[0], valid_to=value[1]))
                rel.valid_from, rel.valid_to = value
    with db.session() as s:
        for rel in graph.rels:
            assert rel.id is not None
            history = relations.get(s, rel.id).history
            assert [h.weight for h in history] == rel.weights
            rel.changed = [h.changed_at for h in history]
    return World(ids, types, graph.rels)


def coo(edges: Sequence[tuple[str, uuid.UUID, uuid.UUID, float]]) -> dict[str, Any]:
    """The master tensor of (type, source, target, weight) edges, as ``master_tensor`` lays it out."""
    types = sorted({e[0] for e in edges})
    ids = sorted({e[1] for e in edges} | {e[2] for e in edges})
    entries = sorted((types.index(t), ids.index(s), ids.index(d), w) for t, s, d, w in edges)
    return {
        "types": types,
        "entity_ids": ids,
        "indices": [[e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]],
        "values": [e[3] for e in entries],
        "shape": [len(types), len(ids), len(ids)],
    }


def as_coo(tensor: MasterTensor) -> dict[str, Any]:
    return tensor.model_dump()


def listed(db: Dust, types: list[str] | None, limit: int) -> list[relations.RelationPublic]:
    """Every relation ``relations.list_`` gives, page by page."""
    items: list[relations.RelationPublic] = []
    cursor = None
    with db.session() as s:
        while True:
            page = relations.list_(s, types=types, limit=limit, cursor=cursor)
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return items


def moments(world: World) -> st.SearchStrategy[datetime | None]:
    """Now (None), or a moment that matters: a validity bound or a weight change, or a microsecond before."""
    edges: list[datetime] = []
    for rel in world.rels:
        edges += [m for m in (rel.valid_from, rel.valid_to) if m is not None] + rel.changed
    near = [m - d for m in edges for d in (timedelta(0), timedelta(microseconds=1))]
    zoned = st.tuples(st.sampled_from(near), ZONES).map(lambda m: m[0].astimezone(m[1])) if near else st.nothing()
    return st.one_of(st.none(), zoned, MOMENTS)


@examples(ci=25, deep=800)
@given(graph=graphs(least=1), data=st.data())
def test_the_master_tensor_is_the_coo_of_the_relations(db: Dust, graph: Graph, data: st.DataObject) -> None:
    world = build(db, graph)
    event(f"relations: {min(len(world.rels), 8)}{'+' if len(world.rels) >= 8 else ''}")
    event(f"weight changes in the history: {sum(len(r.weights) > 1 for r in world.rels) > 0}")
    mine = listed(db, world.types, limit=data.draw(st.integers(1, 7), label="page size"))
    assert len({r.id for r in mine}) == len(mine) == len(world.rels)
    by_id = {r.id: r for r in world.rels}
    for item in mine:
        rel = by_id[item.id]
        assert (item.source_id, item.target_id, item.type) == (
            world.ids[rel.source],
            world.ids[rel.target],
            world.types[rel.type],
        )
        assert (item.weight, item.valid_from, item.valid_to) == (rel.weights[-1], rel.valid_from, rel.valid_to)
    for _ in range(3):
        at = data.draw(moments(world), label="at")
        expected = [(world.types[r.type], world.ids[r.source], world.ids[r.target], w) for r, w in world.live(at)]
        assert as_coo(db.master_tensor(type=world.types, at=at)) == coo(expected)
    # The whole master tensor, now, is what every relation listed says (those of earlier examples too).
    everything = [
        (r.type, r.source_id, r.target_id, r.weight)
        for r in listed(db, None, limit=100)
        if (r.valid_from is None or r.valid_from <= NOW) and (r.valid_to is None or r.valid_to > NOW)
    ]
    assert as_coo(db.master_tensor()) == coo(everything)
    assert as_coo(db.master_tensor(type=[f"{world.types[0]}-none"])) == coo([])  # a type no relation has


def reach(
    world: World, start: int, direction: Direction, depth: int, live: list[tuple[Rel, float]]
) -> tuple[dict, dict]:
    """Nodes (id → hops) within ``depth`` hops of ``start`` along ``direction``, and the edges leaving the nodes
    fewer than ``depth`` hops away, by breadth-first search over ``live`` edges."""
    hops = {start: 0}
    frontier = [start]
    while frontier:
        ahead = []
        for node in frontier:
            for rel, _ in live:
                ends = []
                if direction in ("out", "both") and rel.source == node:
                    ends.append(rel.target)
                if direction in ("in", "both") and rel.target == node:
                    ends.append(rel.source)
                for end in ends:
                    if end not in hops and hops[node] + 1 <= depth:
                        hops[end] = hops[node] + 1
                        ahead.append(end)
        frontier = ahead

    def leaves(rel: Rel) -> bool:
        near = [hops.get(rel.source, depth)] if direction == "out" else [hops.get(rel.target, depth)]
        if direction == "both":
            near = [hops.get(rel.source, depth), hops.get(rel.target, depth)]
        return min(near) < depth

    edges = {
        rel.id: (world.ids[rel.source], world.ids[rel.target], world.types[rel.type], weight)
        for rel, weight in live
        if leaves(rel)
    }
    return {world.ids[node]: d for node, d in hops.items()}, edges


@examples(ci=25, deep=800)
@given(graph=graphs(least=3), data=st.data())
def test_a_neighbourhood_is_what_a_walk_of_the_relations_reaches(db: Dust, graph: Graph, data: st.DataObject) -> None:
    world = build(db, graph)
    weights = sorted({w for rel in world.rels for w in rel.weights})
    most = 0  # nodes the widest of the walks reached
    for _ in range(3):
        ends = sorted({end for rel in world.rels for end in (rel.source, rel.target)}) or [0]
        start = data.draw(st.one_of(st.sampled_from(ends), st.integers(0, graph.entities - 1)), label="start")
        direction = data.draw(st.sampled_from(DIRECTIONS), label="direction")
        depth = data.draw(st.integers(1, 3), label="depth")
        types = data.draw(
            st.one_of(st.none(), st.lists(st.sampled_from(world.types), min_size=1, unique=True)), label="types"
        )
        floors = st.one_of(st.none(), st.none(), st.sampled_from(weights) if weights else st.nothing(), WEIGHTS)
        floor = data.draw(floors, label="min_weight")
        at = data.draw(moments(world), label="at")
        live = [(r, w) for r, w in world.live(at, types) if floor is None or w >= floor]
        nodes, edges = reach(world, start, direction, depth, live)
        most = max(most, len(nodes) - 1)
        found = db.query_master(world.ids[start], direction=direction, depth=depth, type=types, min_weight=floor, at=at)
        note(f"found {found}")
        assert {n.id: n.depth for n in found.nodes} == nodes
        assert {e.id: (e.source_id, e.target_id, e.type, e.weight) for e in found.edges} == edges
    event(f"most nodes reached: {min(most, 3)}{'+' if most >= 3 else ''}")
