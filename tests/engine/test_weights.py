"""Relationship strength over time: decay and reinforcement checked against the formula at given times.

    weight(t) = max(floor, w0 * 0.5 ** ((t - t0) / half_life))   (w0 recorded at t0, the last change at or before t)
    an interaction at t records min(cap, weight(t) + reinforce)

Relations are made now; ``backdate`` moves a relation's recorded history into the past (as if it had been made
then), so that reads now and interactions in the past have time to decay over.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import weights
from dust.engine.relations import MasterTensor
from dust.engine.weights import Policy
from dust.storage.models import Relation, RelationWeight
from dust.storage.repositories import relations as relation_repo

DAY = timedelta(days=1)
APPROX = {"rel": 1e-12, "abs": 1e-12}


def formula(w0: float, t0: datetime, t: datetime, half_life: timedelta, floor: float = 0.0) -> float:
    return max(floor, w0 * 0.5 ** (max((t - t0).total_seconds(), 0) / half_life.total_seconds()))


def people(db: Dust, *names: str) -> list[uuid.UUID]:
    return [db.create_entity(kind="person", name=name).id for name in names]


def backdate(db: Dust, relation_id: uuid.UUID, by: timedelta) -> datetime:
    """Move the relation's history (and creation) ``by`` into the past; its last change as it is then."""
    with db.session() as s:
        for row in s.scalars(select(RelationWeight).where(RelationWeight.relation_id == relation_id)):
            row.changed_at -= by
        relation = s.get(Relation, relation_id)
        assert relation is not None
        relation.created_at -= by
    return db.get_relation(relation_id).history[-1].changed_at


def recorded(db: Dust, relation_id: uuid.UUID) -> list[tuple[float, datetime]]:
    return [(h.weight, h.changed_at) for h in db.get_relation(relation_id).history]


def coo(tensor: MasterTensor) -> dict[tuple[str, uuid.UUID, uuid.UUID], float]:
    kinds, sources, targets = tensor.indices
    return {
        (tensor.types[k], tensor.entity_ids[s], tensor.entity_ids[t]): v
        for k, s, t, v in zip(kinds, sources, targets, tensor.values, strict=True)
    }


@contextmanager
def between() -> Iterator[list[datetime]]:
    """The moments just before and just after the block: a weight read "now" inside lies between their values."""
    moments = [datetime.now(UTC)]
    yield moments
    moments.append(datetime.now(UTC))


def test_a_weight_halves_every_half_life_from_its_last_change(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("knows", half_life="P1D")
    made = db.relate(a, b, "knows", 8.0)
    t0 = recorded(db, made.id)[-1][1]
    for days in (0, 0.5, 1, 2, 3, 10):
        t = t0 + days * DAY
        expected = 8.0 * 0.5**days
        with db.session() as s:
            assert weights.current_weight(s, made.id, at=t) == pytest.approx(expected, **APPROX)
        assert [e.weight for e in db.query_master(a, at=t).edges] == pytest.approx([expected], **APPROX)
        assert list(coo(db.master_tensor(at=t)).values()) == pytest.approx([expected], **APPROX)
    assert recorded(db, made.id) == [(8.0, t0)]  # decay writes nothing


def test_the_floor_stops_decay_and_a_time_before_the_change_reads_the_change(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("knows", half_life="PT6H", floor=1.5)
    made = db.relate(a, b, "knows", 8.0)
    t0 = recorded(db, made.id)[-1][1]
    with db.session() as s:
        for hours in (6, 12, 18, 24, 1000):
            t = t0 + timedelta(hours=hours)
            assert weights.current_weight(s, made.id, at=t) == formula(8.0, t0, t, timedelta(hours=6), 1.5)
        assert weights.current_weight(s, made.id, at=t0 + timedelta(hours=18)) == 1.5  # 8 / 8 = 1 < floor
        assert weights.current_weight(s, made.id, at=t0 - DAY) == 8.0  # never grows backwards


def test_weights_without_a_policy_or_without_a_half_life_read_as_recorded(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("likes", reinforce=1.0, cap=3.0)  # no half-life
    plain = db.relate(a, b, "knows", 2.5)
    liked = db.relate(a, b, "likes", 2.0)
    t0 = recorded(db, plain.id)[-1][1]
    backdate(db, plain.id, 30 * DAY)
    backdate(db, liked.id, 30 * DAY)
    assert db.get_relation(plain.id).weight == 2.5 and db.get_relation(liked.id).weight == 2.0
    far = t0 + 3650 * DAY
    assert coo(db.master_tensor(at=far)) == {("knows", a, b): 2.5, ("likes", a, b): 2.0}
    assert coo(db.master_tensor()) == {("knows", a, b): 2.5, ("likes", a, b): 2.0}


def test_reads_now_decay_from_the_last_change(db: Dust) -> None:
    a, b, c = people(db, "a", "b", "c")
    db.set_weight_policy("knows", half_life="P1D")
    old = db.relate(a, b, "knows", 8.0)
    fresh = db.relate(a, c, "knows", 8.0)
    t0 = backdate(db, old.id, 2 * DAY)
    with between() as moments:
        listed = {r.id: r.weight for r in db.relations(a).items}
        got = db.get_relation(old.id)
        edges = {e.id: e.weight for e in db.query_master(a).edges}
        tensor = coo(db.master_tensor())
    low, high = (formula(8.0, t0, m, DAY) for m in reversed(moments))
    for weight in (listed[old.id], got.weight, edges[old.id], tensor[("knows", a, b)]):
        assert low <= weight <= high and weight == pytest.approx(2.0, rel=1e-4)
    assert got.history[-1].weight == 8.0  # the history holds what was recorded
    assert tensor[("knows", a, c)] == pytest.approx(8.0, rel=1e-4)
    assert listed[fresh.id] == pytest.approx(8.0, rel=1e-4)


def test_min_weight_compares_the_decayed_weight(db: Dust) -> None:
    a, b, c, d = people(db, "a", "b", "c", "d")
    db.set_weight_policy("knows", half_life="P1D")
    strong = db.relate(a, b, "knows", 4.0)
    weak = db.relate(a, c, "knows", 1.0)
    db.relate(a, d, "works_with", 0.9)  # no policy: compared as recorded, in SQL
    for relation in (strong, weak):
        backdate(db, relation.id, 2 * DAY)  # now 1.0 and 0.25
    assert {n.id for n in db.query_master(a, min_weight=0.5).nodes} == {a, b, d}
    assert {n.id for n in db.query_master(a, min_weight=0.95).nodes} == {a, b}
    assert {n.id for n in db.query_master(a, min_weight=1.5).nodes} == {a}  # 4.0 as recorded, 1.0 now
    t0 = recorded(db, strong.id)[-1][1]
    assert {n.id for n in db.query_master(a, min_weight=1.5, at=t0 + timedelta(hours=12)).nodes} == {a, b}


def test_an_interaction_adds_reinforce_to_the_decayed_weight_up_to_the_cap(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("visits", reinforce=1.0, half_life="P1D", cap=5.0)
    made = db.relate(a, b, "visits", 4.0)
    t0 = backdate(db, made.id, 3 * DAY)
    t1 = t0 + DAY / 2
    first = db.interact(made.id, at=t1)
    w1 = min(5.0, formula(4.0, t0, t1, DAY) + 1.0)
    assert recorded(db, made.id)[-1] == (pytest.approx(w1, **APPROX), t1)
    t2 = t1 + timedelta(hours=1)
    db.interact(made.id, at=t2.isoformat(), amount=3.0)  # an amount overrides reinforce; the cap still holds
    assert recorded(db, made.id)[-1] == (5.0, t2)
    with db.session() as s:
        t3 = t2 + DAY
        assert weights.current_weight(s, made.id, at=t3) == pytest.approx(formula(5.0, t2, t3, DAY), **APPROX)
        assert weights.current_weight(s, made.id, at=t1 + timedelta(minutes=1)) == pytest.approx(
            formula(w1, t1, t1 + timedelta(minutes=1), DAY), **APPROX
        )  # between the interactions: from the first
    assert first.history[-1].weight == pytest.approx(w1, **APPROX)
    assert first.weight == pytest.approx(formula(w1, t1, datetime.now(UTC), DAY), rel=1e-4)  # shown: now
    now = db.interact(made.id)
    assert now.weight == now.history[-1].weight  # at now: the weight just recorded
    assert [w for w, _ in recorded(db, made.id)] == pytest.approx([4.0, w1, 5.0, now.weight], **APPROX)


def test_interactions_are_recorded_in_time_order_and_not_in_the_future(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("visits", reinforce=1.0)
    made = db.relate(a, b, "visits", 1.0)
    t0 = backdate(db, made.id, DAY)
    db.interact(made.id, at=t0 + DAY / 2)
    with pytest.raises(Conflict, match="time order"):
        db.interact(made.id, at=t0 + DAY / 4)
    with pytest.raises(InvalidInput, match="future"):
        db.interact(made.id, at=datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(InvalidInput, match="amount"):
        db.interact(made.id, amount=float("nan"))
    assert len(recorded(db, made.id)) == 2


def test_an_interaction_without_a_policy_needs_an_amount(db: Dust) -> None:
    a, b = people(db, "a", "b")
    made = db.relate(a, b, "knows", 1.0)
    with pytest.raises(InvalidInput, match=r"no weight policy.*amount.*PUT /weight-policies/knows"):
        db.interact(made.id)
    assert db.interact(made.id, amount=0.5).weight == 1.5  # no policy: no clamp, no decay
    with pytest.raises(NotFound):
        db.interact(uuid.uuid4())


@pytest.mark.parametrize(
    ("operation", "expected"),
    [({"add": 1.5}, 3.5), ({"multiply": 0.25}, 0.5), ({"set": 0.75}, 0.75), ({"add": 10}, 4.0), ({"set": -3}, 0.1)],
    ids=repr,
)
def test_adjust_applies_one_operation_to_the_decayed_weight_within_floor_and_cap(
    db: Dust, operation: dict[str, float], expected: float
) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("supplies", half_life="P1D", floor=0.1, cap=4.0)
    made = db.relate(a, b, "supplies", 8.0)  # recorded at the cap
    assert recorded(db, made.id)[0][0] == 4.0
    t0 = backdate(db, made.id, 2 * DAY)
    at = t0 + DAY  # 2.0 then
    with db.session() as s:
        new = weights.adjust(s, made.id, at=at, **operation)
    assert new == pytest.approx(expected, **APPROX)
    assert recorded(db, made.id)[-1] == (pytest.approx(expected, **APPROX), at)


def test_adjust_refuses_what_is_not_one_finite_operation(db: Dust) -> None:
    a, b = people(db, "a", "b")
    made = db.relate(a, b, "supplies", 1.0)
    with db.session() as s:
        for bad in ({}, {"add": 1.0, "set": 2.0}, {"multiply": float("inf")}, {"add": True}):
            with pytest.raises(InvalidInput):
                weights.adjust(s, made.id, **bad)
        with pytest.raises(NotFound):
            weights.adjust(s, uuid.uuid4(), add=1.0)
        assert weights.adjust(s, made.id, multiply=1e308) == 1e308  # no cap: as large as a float goes
        with pytest.raises(InvalidInput, match="beyond a float"):
            weights.adjust(s, made.id, multiply=10.0)
    assert len(recorded(db, made.id)) == 2


def test_patch_sets_the_weight_within_floor_and_cap(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("supplies", half_life="P1D", floor=0.5, cap=2.0)
    made = db.relate(a, b, "supplies", 1.0)
    backdate(db, made.id, DAY)
    changed = db.update_relation(made.id, weight=9.0)
    assert changed.weight == 2.0 and [w for w, _ in recorded(db, made.id)] == [1.0, 2.0]
    assert db.update_relation(made.id, weight=0.0).weight == 0.5
    assert [w for w, _ in recorded(db, made.id)] == [1.0, 2.0, 0.5]


def test_a_policy_applies_to_reads_from_now_on(db: Dust) -> None:
    a, b = people(db, "a", "b")
    made = db.relate(a, b, "knows", 8.0)
    t0 = recorded(db, made.id)[-1][1]
    later = t0 + 2 * DAY

    def at_later() -> float:
        return coo(db.master_tensor(at=later))[("knows", a, b)]

    assert at_later() == 8.0
    db.set_weight_policy("knows", half_life="P1D")
    assert at_later() == pytest.approx(2.0, **APPROX)
    db.set_weight_policy("knows", half_life="P2D")  # replaces it: from the same recorded change
    assert at_later() == pytest.approx(4.0, **APPROX)
    db.delete_weight_policy("knows")
    assert at_later() == 8.0
    assert recorded(db, made.id) == [(8.0, t0)]


def test_policies_read_back_as_set(db: Dust) -> None:
    made = db.set_weight_policy("treats", reinforce=0.5, half_life="p1dt12h", cap=10, floor=0.1)
    assert (made.type, made.reinforce, made.half_life, made.half_life_seconds, made.cap, made.floor) == (
        "treats",
        0.5,
        "P1DT12H",
        129_600.0,
        10.0,
        0.1,
    )
    assert db.get_weight_policy("treats") == made
    db.set_weight_policy("knows", half_life="P2W")
    assert [(p.type, p.half_life) for p in db.weight_policies()] == [("knows", "P14D"), ("treats", "P1DT12H")]
    db.delete_weight_policy("treats")
    with pytest.raises(NotFound, match="no weight policy"):
        db.get_weight_policy("treats")
    with pytest.raises(NotFound):
        db.delete_weight_policy("treats")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"half_life": "-P1D"}, "longer than zero"),
        ({"half_life": "P0D"}, "longer than zero"),
        ({"half_life": 86400}, "ISO 8601 duration"),
        ({"half_life": "P1M"}, "in days"),
        ({"half_life": "P1Y"}, "in days"),
        ({"half_life": "1 day"}, "ISO 8601 duration"),
        ({"half_life": "PT"}, "ISO 8601 duration"),
        ({"half_life": "P36501D"}, "at most"),
        ({"cap": 1.0, "floor": 2.0}, "cap 1.0 is below floor 2.0"),
        ({"reinforce": True}, "not true or false"),
        ({"reinforce": "1"}, "not text"),
        ({"floor": float("inf")}, "finite"),
    ],
    ids=repr,
)
def test_bad_policies_are_refused_saying_what_is_allowed(db: Dust, fields: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        db.set_weight_policy("knows", **fields)
    assert db.weight_policies() == []


def test_durations_print_in_their_plainest_form() -> None:
    cases = {"P30D": "P30D", "PT12H": "PT12H", "PT90M": "PT1H30M", "P1W": "P7D", "PT0.5S": "PT0.5S", "P1.5D": "P1DT12H"}
    for given, shown in cases.items():
        assert weights.iso_duration(weights.half_life_seconds(given)) == shown


def test_the_vectorised_weights_equal_the_formula() -> None:
    rng = random.Random(5)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    known = {
        "fast": Policy(0.0, 3600.0, None, 0.0),
        "floored": Policy(0.0, 86_400.0, None, 0.3),
        "flat": Policy(1.0, None, 5.0, 0.0),
    }
    types = [rng.choice(["fast", "floored", "flat", "none"]) for _ in range(500)]
    w0 = [rng.uniform(-2, 10) for _ in types]
    since = [now - timedelta(seconds=rng.uniform(-3600, 10 * 86_400)) for _ in types]
    got = weights.weigh(known, types, w0, [s.timestamp() for s in since], now)
    for t, w, s, value in zip(types, w0, since, got, strict=True):
        p = known.get(t)
        if p is None or p.half_life_seconds is None:
            assert value == w
        else:
            assert value == pytest.approx(formula(w, s, now, timedelta(seconds=p.half_life_seconds), p.floor), **APPROX)
    assert weights.weigh(known, ["flat", "none"], [1.0, 2.0], [None, None], now) == [1.0, 2.0]


def test_the_master_tensor_reads_policies_and_change_times_in_a_fixed_number_of_queries(db: Dust) -> None:
    ids = people(db, *"abcdefgh")
    db.set_weight_policy("knows", half_life="P1D")
    for source in ids:
        for target in ids[:4]:
            if source != target:
                db.relate(source, target, "knows" if target != ids[0] else "plain", 1.0)
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        tensor = db.master_tensor()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(tensor.values) == 7 + 3 * 7
    assert len([s for s in seen if s.lstrip().startswith("SELECT")]) <= 3  # policies, edges (+ epochs)
    assert not [s for s in seen if "relation_weights" in s and "FROM relations" not in s]


def test_a_change_updates_the_recorded_weight_and_only_weight_changes_add_rows(db: Dust) -> None:
    a, b = people(db, "a", "b")
    db.set_weight_policy("knows", reinforce=2.0)
    made = db.relate(a, b, "knows", 1.0)
    db.interact(made.id)
    with db.session() as s:
        row = s.get(Relation, made.id)
        assert row is not None and row.weight == 3.0
    db.update_relation(made.id, attributes={"note": "x"})  # no weight: no row
    assert [w for w, _ in recorded(db, made.id)] == [1.0, 3.0]


@pytest.mark.parametrize("fraction", [0, 123_457, 999_500, 999_999])  # SQLite rounded .9995 on into the next second
def test_the_database_reads_change_times_as_python_does(db: Dust, fraction: int) -> None:
    """The last change, as seconds since 1970, computed by SQLite or PostgreSQL for the master tensor."""
    a, b = people(db, "a", "b")
    made = db.relate(a, b, "knows", 1.0)
    now = recorded(db, made.id)[-1][1]
    backdate(db, made.id, timedelta(days=400, microseconds=now.microsecond - fraction))
    with db.session() as s:
        edges = relation_repo.all_edges(s, [], None, ["knows"])
        by_query = relation_repo.last_changes(s, [made.id])[made.id]
    expected = recorded(db, made.id)[-1][1].timestamp()
    assert edges[0].changed == pytest.approx(expected, abs=1e-6) and by_query == pytest.approx(expected, abs=1e-6)
