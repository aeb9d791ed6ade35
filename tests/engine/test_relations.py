"""The relations engine in process: relate, neighbours, the master tensor, and how many queries a walk costs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.storage.repositories import relations as relation_repo


def people(db: Dust, *names: str, kind: str = "person") -> list[uuid.UUID]:
    return [db.create_entity(kind=kind, name=name).id for name in names]


def dense(tensor: relations.MasterTensor) -> np.ndarray:
    array = np.zeros(tensor.shape)
    array[tuple(np.asarray(tensor.indices, dtype=np.int64).reshape(3, -1))] = tensor.values
    return array


@contextmanager
def statements(db: Dust) -> Iterator[list[str]]:
    """The SQL the engine sends while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def on_relations(sql: list[str]) -> list[str]:
    return [s for s in sql if s.startswith("SELECT") and "FROM relations " in s + " "]


def parameters(statement: str) -> int:
    """Bound parameters in a statement, for SQLite (``?``) and psycopg (``%(name)s``)."""
    return statement.count("?") + statement.count("%(")


def test_relate_returns_the_stored_relation(db: Dust) -> None:
    doctor, patient = people(db, "Dr A", "Jane")
    made = db.relate(doctor, patient, "treats", 0.7, attributes={"ward": "B"}, valid_from="2024-01-01T01:00:00+01:00")
    assert (made.source_id, made.target_id, made.type, made.weight) == (doctor, patient, "treats", 0.7)
    assert made.attributes == {"ward": "B"}
    assert made.valid_from == datetime(2024, 1, 1, tzinfo=UTC) and made.valid_to is None
    with db.session() as s:
        detail = relations.get(s, made.id)
    assert detail.model_dump(exclude={"history"}) == made.model_dump()
    assert [(h.weight, h.changed_at) for h in detail.history] == [(0.7, made.created_at)]
    assert db.relate(doctor, patient, "visits").weight == 1.0


def test_relate_refuses_duplicates_unknown_entities_and_bad_values(db: Dust) -> None:
    doctor, patient = people(db, "Dr A", "Jane")
    db.relate(doctor, patient, "treats")
    with pytest.raises(Conflict, match="PATCH"):
        db.relate(doctor, patient, "treats", 2.0)
    ghost = uuid.uuid4()
    with pytest.raises(InvalidInput, match=str(ghost)):
        db.relate(doctor, ghost, "treats")
    with db.session() as s:
        assert len(relations.list_(s).items) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"weight": float("nan")},
        {"weight": float("inf")},
        {"type": "Treats"},
        {"valid_from": "2025-01-01T00:00:00Z", "valid_to": "2024-01-01T00:00:00Z"},
        {"attributes": {"when": datetime(2026, 1, 1, tzinfo=UTC)}},  # not JSON
    ],
    ids=repr,
)
def test_relate_refuses_bad_values_and_writes_nothing(db: Dust, bad: dict[str, Any]) -> None:
    doctor, patient = people(db, "Dr A", "Jane")
    with pytest.raises(InvalidInput):
        db.relate(doctor, patient, **{"type": "cares", **bad})
    with db.session() as s:
        assert relations.list_(s).items == []


def test_neighbours_walks_hops_directions_and_types(db: Dust) -> None:
    hospital, doctor, jane, john = people(db, "St Mary", "Dr A", "Jane", "John")
    db.relate(doctor, hospital, "works_at")
    db.relate(doctor, jane, "treats", 0.9)
    db.relate(doctor, john, "treats", 0.3)

    def depths(start: uuid.UUID, **query: Any) -> dict[uuid.UUID, int]:
        return {n.id: n.depth for n in db.query_master(start, **query).nodes}

    assert depths(jane, direction="in") == {jane: 0, doctor: 1}
    assert depths(jane, direction="out") == {jane: 0}
    assert depths(jane, depth=2) == {jane: 0, doctor: 1, hospital: 2, john: 2}
    assert depths(jane, depth=2, type=["treats"]) == {jane: 0, doctor: 1, john: 2}
    assert depths(jane, depth=2, min_weight=0.5) == {jane: 0, doctor: 1, hospital: 2}
    assert depths(hospital, direction="in", depth=3) == {hospital: 0, doctor: 1}
    edges = db.query_master(doctor, direction="out").edges
    assert sorted((e.type, e.target_id, e.weight) for e in edges) == sorted(
        [("works_at", hospital, 1.0), ("treats", jane, 0.9), ("treats", john, 0.3)]
    )


def test_neighbours_refuses_bad_queries(db: Dust) -> None:
    (jane,) = people(db, "Jane")
    with pytest.raises(InvalidInput, match="depth"):
        db.query_master(jane, depth=0)
    with pytest.raises(InvalidInput, match="depth"):
        db.query_master(jane, depth=4)
    with pytest.raises(InvalidInput, match="min_weight"):
        db.query_master(jane, min_weight=float("nan"))
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=str(missing)):
        db.query_master(missing)


def test_neighbours_as_of_a_time(db: Dust) -> None:
    doctor, jane = people(db, "Dr A", "Jane")
    made = db.relate(doctor, jane, "treats", 1.0, valid_from=datetime(2024, 1, 1, tzinfo=UTC))
    with db.session() as s:
        changed = relations.update(s, made.id, relations.RelationUpdate(weight=4.0)).history[-1].changed_at
    between = made.created_at + (changed - made.created_at) / 2
    assert [e.weight for e in db.query_master(doctor, at=between).edges] == [1.0]
    assert [e.weight for e in db.query_master(doctor, at=changed).edges] == [4.0]
    assert db.query_master(doctor, at=datetime(2023, 12, 31)).edges == []  # a naive time is UTC
    assert [e.weight for e in db.query_master(doctor).edges] == [4.0]


def test_master_tensor_matches_a_dense_array_of_the_relations(db: Dust) -> None:
    ids = people(db, "a", "b", "c", "d")
    made = [
        (ids[0], ids[1], "treats", 0.5),
        (ids[1], ids[0], "treats", 0.25),
        (ids[0], ids[1], "pays", 12.0),
        (ids[2], ids[2], "pays", -1.5),
        (ids[3], ids[0], "supplies", 3.0),
    ]
    for source, target, type_, weight in made:
        db.relate(source, target, type_, weight)
    tensor = db.master_tensor()
    assert tensor.types == ["pays", "supplies", "treats"]
    assert sorted(tensor.entity_ids, key=str) == tensor.entity_ids and set(tensor.entity_ids) == set(ids)
    array = dense(tensor)
    assert array.shape == (3, 4, 4)
    expected = np.zeros((3, 4, 4))
    where = {entity: i for i, entity in enumerate(tensor.entity_ids)}
    for source, target, type_, weight in made:
        expected[tensor.types.index(type_), where[source], where[target]] = weight
    np.testing.assert_array_equal(array, expected)
    assert np.count_nonzero(array) == len(made)

    treats = db.master_tensor(type=["treats"])
    assert treats.types == ["treats"] and treats.shape == [1, 2, 2]
    a, b = (treats.entity_ids.index(e) for e in ids[:2])
    assert dense(treats)[0, a, b] == 0.5 and dense(treats)[0, b, a] == 0.25 and dense(treats).sum() == 0.75
    assert dense(db.master_tensor(type=["none"])).shape == (0, 0, 0)


def test_master_tensor_dense_array_at_a_time(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.relate(a, b, "knew", 2.0, valid_to=datetime(2020, 1, 1, tzinfo=UTC))
    db.relate(b, a, "knows", 3.0)
    old = db.master_tensor(at=datetime(2019, 1, 1, tzinfo=UTC))
    assert old.types == ["knew", "knows"] and dense(old).sum() == 5.0
    now = db.master_tensor(at=datetime.now(UTC) + timedelta(seconds=1))
    assert now.types == ["knows"] and dense(now).sum() == 3.0
    with pytest.raises(InvalidInput, match=r"^at\b.* years 1..9999"):
        db.master_tensor(at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))


def _tree(db: Dust, children: int, grandchildren: int) -> uuid.UUID:
    """A root with ``children`` children, each with ``grandchildren`` children, in one transaction."""
    with db.session() as s:
        root = entities.create(s, EntityCreate(kind="node", name="root")).id
        for i in range(children):
            child = entities.create(s, EntityCreate(kind="node", name=f"c{i}")).id
            relations.create(s, RelationCreate(source_id=root, target_id=child, type="has"))
            for j in range(grandchildren):
                leaf = entities.create(s, EntityCreate(kind="node", name=f"c{i}.{j}")).id
                relations.create(s, RelationCreate(source_id=child, target_id=leaf, type="has"))
    return root


def test_a_walk_costs_one_relations_query_per_hop_not_per_node(db: Dust) -> None:
    root = _tree(db, children=12, grandchildren=3)
    with statements(db) as sql:
        found = db.query_master(root, direction="out", depth=3)
    assert len(found.nodes) == 1 + 12 + 36 and len(found.edges) == 48
    assert len(on_relations(sql)) == 3  # hop 3 starts from the 36 leaves: still one query
    assert sum(parameters(s) for s in on_relations(sql)) == 1 + 12 + 36  # each node is asked about once
    assert len([s for s in sql if "FROM entities" in s]) <= 2  # the start, then every node's entity at once
    with statements(db) as sql:
        db.query_master(root, direction="both", depth=2, at=datetime.now(UTC))
    assert len(on_relations(sql)) == 2
    assert len([s for s in sql if "FROM relation_weights" in s]) == 2


def test_large_frontiers_are_read_in_chunks(db: Dust, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(db, children=12, grandchildren=1)
    monkeypatch.setattr(relation_repo, "IN_CHUNK", 5)
    with statements(db) as sql:
        found = db.query_master(root, direction="out", depth=2)
    assert len(found.nodes) == 25 and len(found.edges) == 24
    assert {n.depth for n in found.nodes if n.name.count(".") == 1} == {2}
    # hop 1: the root; hop 2: 12 children in chunks of 5
    assert len(on_relations(sql)) == 1 + 3
    assert max(parameters(s) for s in on_relations(sql)) <= 5


def _strengths(tensor: relations.MasterTensor) -> dict[uuid.UUID, float]:
    """Each entity's total absolute weight over the master tensor: what `strongest` ranks by."""
    total: dict[uuid.UUID, float] = {}
    for _, source, target, weight in zip(*tensor.indices, tensor.values, strict=True):
        for end in (tensor.entity_ids[source], tensor.entity_ids[target]):
            total[end] = total.get(end, 0.0) + abs(weight)
    return total


def test_strongest_is_the_master_tensor_when_it_fits_and_its_best_connected_when_not(db: Dust) -> None:
    import random

    rng = random.Random(3)
    ids = people(db, *(f"p{i}" for i in range(40)))
    with db.session() as s:
        made = {(h, p, "treats") for h in ids[:4] for p in rng.sample(ids[4:], 12)}
        made |= {(a, b, "knows") for a, b in (rng.sample(ids[4:], 2) for _ in range(30))}
        ordered = sorted(made, key=lambda m: (ids.index(m[0]), ids.index(m[1]), m[2]))  # the seed decides the weights
        relations.create_many(
            s, [RelationCreate(source_id=a, target_id=b, type=t, weight=rng.uniform(-3, 5)) for a, b, t in ordered]
        )
    tensor = db.master_tensor()
    strength = _strengths(tensor)
    with db.session() as s:
        whole = relations.strongest(s, 100)
        few = relations.strongest(s, 5)
        treats = relations.strongest(s, 100, types=["treats"], min_weight=0)
    # it fits: every entity with a relation, every relation, the same weights as the master tensor
    assert set(whole.entity_ids) == set(tensor.entity_ids) and len(whole.edges) == len(tensor.values)
    assert whole.entity_ids == sorted(strength, key=lambda e: (-strength[e], str(e)))
    assert (whole.total_entities, whole.total_relations) == (len(tensor.entity_ids), len(tensor.values))
    # it does not: the relations among the five best connected, and those of the five that have one among them
    best = set(whole.entity_ids[:5])
    among = [(tensor.entity_ids[s_], tensor.entity_ids[t]) for _, s_, t in zip(*tensor.indices, strict=True)]
    among = [(s_, t) for s_, t in among if s_ in best and t in best]
    assert among and sorted((e.source_id, e.target_id) for e in few.edges) == sorted(among)
    assert few.entity_ids == [e for e in whole.entity_ids[:5] if any(e in pair for pair in among)]
    assert (few.total_entities, few.total_relations) == (whole.total_entities, whole.total_relations)
    # types and least weight
    assert {e.type for e in treats.edges} == {"treats"} and all(e.weight >= 0 for e in treats.edges)
    assert set(treats.entity_ids) <= {e for edge in treats.edges for e in (edge.source_id, edge.target_id)}


def test_strongest_as_of_a_time_counts_only_the_relations_valid_then(db: Dust) -> None:
    a, b, c = people(db, "a", "b", "c")
    db.relate(a, b, "knew", 9.0, valid_to=datetime(2020, 1, 1, tzinfo=UTC))
    db.relate(b, c, "knows", 1.0)
    with db.session() as s:
        then = relations.strongest(s, 10, at=datetime(2019, 1, 1, tzinfo=UTC))
        now = relations.strongest(s, 10)
        with pytest.raises(InvalidInput, match="limit must be at least 1"):
            relations.strongest(s, 0)
    assert then.entity_ids[0] in (a, b) and set(then.entity_ids) == {a, b, c} and then.total_relations == 2
    assert set(now.entity_ids) == {b, c} and now.total_relations == 1 and now.edges[0].weight == 1.0
