"""The shared caches across replicas: the master tensor's rows and aggregates come from the cache until a change
through any replica, and then never again, on SQLite and PostgreSQL, in each process's memory or through Redis.

A replica here is what a server process holds: a ``Caches`` of its own (its Redis connection, its local copies)
and sessions on the database. Each read through a cache is compared with the same read made without one."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dust.core.errors import NotFound
from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import access, caches, entities, insights, relations, tensors, weights
from dust.engine.relations import Interaction, RelationCreate, RelationUpdate
from dust.storage.cache_store import Store
from dust.storage.db import AFTER_COMMIT, make_engine, make_sessionmaker
from dust.storage.models import CacheEpoch
from dust.storage.repositories import relations as repo
from tests.engine.conftest import principal

REDIS_URL = "redis://127.0.0.1:6379/7"  # keys hold the test database's identity, new for each test


class Replica:
    """One server process: its caches, sessions on the database, and its cache lookups counted."""

    def __init__(self, url: str, redis_url: str | None) -> None:
        self.engine = make_engine(url)
        self.writes = make_sessionmaker(self.engine)
        self.reads = make_sessionmaker(self.engine, read_only=True)
        self.lookups: Counter[tuple[str, bool]] = Counter()
        self.errors: list[str] = []
        store = Store(redis_url=redis_url, errors=self.errors.append)
        self.caches = caches.Caches(lookups=lambda kind, hit: self.lookups.update([(kind, hit)]), store=store)

    @contextmanager
    def session(self, *, read_only: bool = False, cached: bool = True) -> Iterator[Session]:
        factory: sessionmaker[Session] = self.reads if read_only else self.writes
        with factory() as session, session.begin():
            session.info[AFTER_COMMIT] = []  # a read's audit records: for a batch writer, which the test does without
            if cached:
                caches.attach(session, self.caches)
            yield session

    def master(self, **asked: Any) -> relations.MasterTensor:
        with self.session() as session:
            return relations.master_tensor(session, **asked)

    def uncached_master(self, **asked: Any) -> relations.MasterTensor:
        with self.session(cached=False) as session:
            return relations.master_tensor(session, **asked)

    def read(self, tensor_id: uuid.UUID, *, cached: bool = True, **asked: Any) -> Any:
        """A tensor read in a read-only transaction, as a request's: its values and times as lists."""
        with self.session(read_only=True, cached=cached) as session:
            view = tensors.read(session, tensor_id, **asked)
            return view.to_json_bytes()

    def aggregate(self, *, cached: bool = True, **asked: Any) -> list[dict[str, Any]]:
        with self.session(read_only=True, cached=cached) as session:
            return insights.aggregate_by_step(session, "vitals", "heart_rate", **asked)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(params=["in-process", "redis"])
def replicas(request: pytest.FixtureRequest, database_url: str) -> Iterator[tuple[Replica, Replica]]:
    """Replicas A and B on the test's database: each caching in its own memory only, or also in one Redis."""
    redis_url = REDIS_URL if request.param == "redis" else None
    made = Replica(database_url, redis_url), Replica(database_url, redis_url)
    yield made
    for replica in made:
        replica.close()
    if redis_url:
        with made[0].session(cached=False) as session:
            identity = caches.epoch(session, "identity")
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dust:cache:*:{identity:x}:*"):
            client.delete(key)
        client.close()


@pytest.fixture
def graph(db: Dust) -> dict[str, uuid.UUID]:
    """a → b → c (knows), and d on its own; vitals tensors of a and b with a few heart rates."""
    ids = {name: db.create_entity("person", name).id for name in "abcd"}
    ids["ab"] = db.relate(ids["a"], ids["b"], "knows", 1.0).id
    ids["bc"] = db.relate(ids["b"], ids["c"], "knows", 2.0).id
    db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"]}]})
    for name in "ab":
        ids[f"T{name}"] = db.create_tensor(ids[name], "vitals").id
        db.write_values(ids[f"T{name}"], [{"time": t, "metric": "heart_rate", "value": 60.0 + t} for t in range(5)])
    return ids


def warm(replica: Replica, kind: str, read: Callable[[], object]) -> object:
    """Read twice: the second read must come from the cache."""
    first = read()
    hits = replica.lookups[(kind, True)]
    assert read() == first
    assert replica.lookups[(kind, True)] == hits + 1
    return first


PAST = datetime.now(UTC) - timedelta(days=1)
# Every way a relation's row, its weight or its ends change; each through replica A.
WRITERS: dict[str, Callable[[Session, dict[str, uuid.UUID]], object]] = {
    "create": lambda s, g: relations.create(s, RelationCreate(source_id=g["c"], target_id=g["d"], type="knows")),
    "create_many": lambda s, g: relations.create_many(
        s, [RelationCreate(source_id=g["d"], target_id=g["a"], type="x")]
    ),
    "update weight": lambda s, g: relations.update(s, g["ab"], RelationUpdate(weight=5.0)),
    "update validity": lambda s, g: relations.update(s, g["ab"], RelationUpdate(valid_to=PAST)),
    "interact": lambda s, g: relations.interact(s, g["bc"], Interaction(amount=1.5)),
    "adjust (a rule)": lambda s, g: weights.adjust(s, g["bc"], multiply=3.0),
    "delete": lambda s, g: relations.delete(s, g["ab"]),
    "delete an end": lambda s, g: entities.delete(s, g["c"]),
}


@pytest.mark.parametrize("replicas", ["redis"], indirect=True)  # each replica also keeps copies in its memory
@pytest.mark.parametrize("writer", WRITERS)
def test_a_change_of_a_relation_through_one_replica_is_read_through_the_other_at_once(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], writer: str
) -> None:
    a, b = replicas
    a.master()  # made on A: through Redis, B's first read finds it
    before = warm(b, caches.RELATIONS, b.master)
    misses = b.lookups[(caches.RELATIONS, False)]
    with a.session() as session:
        WRITERS[writer](session, graph)
    after = b.master()
    assert after == b.uncached_master() != before
    assert b.lookups[(caches.RELATIONS, False)] == misses + 1  # the entry made before was not served
    assert a.master() == after and b.errors == a.errors == []


def test_weights_decay_and_validity_are_worked_out_at_each_read_of_the_cached_rows(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, _ = replicas
    db.set_weight_policy("knows", half_life="PT1S")
    db.update_relation(graph["bc"], valid_to=datetime.now(UTC) + timedelta(milliseconds=300))
    month_ago = datetime.now(UTC) - timedelta(days=30)
    assert warm(a, caches.RELATIONS, lambda: a.master(at=month_ago)) == a.uncached_master(at=month_ago)
    now = a.master()  # other rows: those of decaying types come with the time of their last change
    assert a.lookups[(caches.RELATIONS, True)] == 1 and len(now.values) == 2
    time.sleep(0.35)
    later, fresh = a.master(), a.uncached_master()
    assert a.lookups[(caches.RELATIONS, True)] == 2
    assert len(later.values) == 1 and later.indices == fresh.indices  # b → c is no longer valid
    assert later.values[0] < now.values[0] and later.values[0] == pytest.approx(fresh.values[0], rel=0.05)


def test_a_change_that_rolls_back_is_never_served(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID]
) -> None:
    a, b = replicas
    before = warm(b, caches.RELATIONS, b.master)
    with pytest.raises(RuntimeError), a.session() as session:
        WRITERS["create"](session, graph)
        inside = relations.master_tensor(session)  # its own change, read but not kept
        assert len(inside.values) == 3
        raise RuntimeError("rolled back")
    assert a.master() == b.master() == before


def test_a_scoped_principal_reads_the_relations_of_their_reach_never_the_cached_rows(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID]
) -> None:
    a, _ = replicas
    warm(a, caches.RELATIONS, a.master)
    looked = a.lookups.total()
    with a.session() as session:
        access.act_as(session, principal(Role.clinician, entity_id=graph["a"]))  # sees itself alone
        assert relations.master_tensor(session).values == []
    assert a.lookups.total() == looked


def test_epochs_that_go_back_never_find_an_entry_of_earlier_contents(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID]
) -> None:
    """A restore (or an import) brings back lower epochs; the identity it renews keeps earlier entries out."""
    a, b = replicas
    before = warm(b, caches.RELATIONS, b.master)
    with a.session() as session:
        epoch = caches.epoch(session, caches.RELATIONS)
        relations.delete(session, graph["ab"])  # raises the epoch as it commits
    with a.session() as session:
        back = update(CacheEpoch).where(CacheEpoch.name == caches.RELATIONS).values(value=epoch)
        session.execute(back)  # as a restore of a backup taken at that epoch, but of other contents
        caches.forget_all(session)
    with b.session() as session:
        assert caches.epoch(session, caches.RELATIONS) == epoch  # the very number the entry was made under
    assert b.master() == b.uncached_master() != before


def test_a_redis_that_does_not_answer_leaves_every_read_exact_and_is_counted(
    database_url: str, graph: dict[str, uuid.UUID]
) -> None:
    down = Replica(database_url, "redis://127.0.0.1:9/0")  # the discard port: no Redis answers there
    try:
        assert down.master() == down.uncached_master()
        assert down.aggregate() == down.aggregate(cached=False)
        assert down.errors == [caches.RELATIONS]  # then the store leaves Redis alone a while
    finally:
        down.close()


def test_an_aggregate_comes_from_the_cache_until_the_schemas_data_changes(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, b = replicas
    changes: list[Callable[[], object]] = [
        lambda: db.write_values(graph["Ta"], [{"time": 1, "metric": "heart_rate", "value": 99.0}]),  # rewrite
        lambda: db.write_values(graph["Tb"], [{"time": 9, "metric": "temperature", "value": 37.0}]),  # other label
        lambda: db.erase_values(graph["Ta"], [{"time": 2, "metric": "heart_rate"}]),
        lambda: db.write_values(
            db.create_tensor(graph["c"], "vitals").id, [{"time": 0, "metric": "heart_rate", "value": 1}]
        ),
        lambda: db.delete_entity(graph["b"]),  # its tensor goes with it
        lambda: db.delete_tensor(graph["Ta"]),
    ]
    for change in changes:
        a.aggregate()
        before = warm(b, caches.AGGREGATES, b.aggregate)
        misses = b.lookups[(caches.AGGREGATES, False)]
        change()
        after = b.aggregate()
        assert after == b.aggregate(cached=False)
        assert b.lookups[(caches.AGGREGATES, False)] == misses + 1
        assert after != before or change is changes[1]  # a temperature leaves the heart rate as it was


def test_aggregates_of_other_questions_are_other_entries(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID]
) -> None:
    a, _ = replicas
    asked: list[dict[str, Any]] = [{}, {"agg": "max"}, {"agg": "p50"}, {"kind": "nobody"}, {"bucket": "week"}]
    answers = [a.aggregate(**question) for question in asked]
    assert [a.aggregate(**question) for question in asked] == answers
    assert a.lookups[(caches.AGGREGATES, True)] == len(asked)
    assert answers == [a.aggregate(cached=False, **question) for question in asked]
    with a.session(read_only=True) as session:
        access.act_as(session, principal(Role.clinician, entity_id=graph["a"]))  # sees a's tensor alone
        insights.aggregate_by_step(session, "vitals", "heart_rate")
    with a.session() as session:  # a writing transaction: computed, neither looked up nor kept
        insights.aggregate_by_step(session, "vitals", "heart_rate", agg="min")
    assert a.lookups[(caches.AGGREGATES, True)] == len(asked)
    assert a.lookups[(caches.AGGREGATES, False)] == len(asked)


def scoped_get(replica: Replica, who: access.Principal, entity_id: uuid.UUID) -> bool:
    """Whether ``who`` may read the entity through ``replica`` (404 otherwise)."""
    with replica.session(read_only=True) as session:
        access.act_as(session, who)
        try:
            entities.get_row(session, entity_id)
        except NotFound:
            return False
        return True


def test_a_clinicians_reach_comes_from_the_cache_until_a_relation_changes_through_any_replica(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, b = replicas
    doctor = db.create_entity("doctor", "Dr").id
    db.relate(doctor, graph["a"], "treats")
    who = principal(Role.clinician, entity_id=doctor)
    assert scoped_get(a, who, graph["a"]) and not scoped_get(a, who, graph["b"])
    hits = b.lookups[(caches.RELATIONS, True)]
    assert scoped_get(b, who, graph["a"]) and scoped_get(b, who, graph["a"])
    assert b.lookups[(caches.RELATIONS, True)] > hits  # the reach, made once, is read from the cache
    treats_b = db.relate(doctor, graph["b"], "treats").id  # through another process: B sees it at once
    assert scoped_get(b, who, graph["b"])
    db.delete_relation(treats_b)
    assert not scoped_get(b, who, graph["b"]) and not scoped_get(a, who, graph["b"])
    assert not scoped_get(b, who, uuid.uuid4())  # a missing entity answers as one out of reach


def test_a_reach_ends_on_time_without_a_write(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, _ = replicas
    doctor = db.create_entity("doctor", "Dr").id
    # Long enough for the two reads before it on a slow machine: with one second, a slow CI run saw it end between
    # them (the second read then rightly found it out of reach)
    ends = datetime.now(UTC) + timedelta(seconds=3)
    db.relate(doctor, graph["c"], "treats", valid_to=ends)
    who = principal(Role.clinician, entity_id=doctor)
    assert scoped_get(a, who, graph["c"]) and scoped_get(a, who, graph["c"])  # the second from the cache
    time.sleep(max((ends - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    assert not scoped_get(a, who, graph["c"])  # the cached reach lasted only until the relation's end


def test_an_entity_a_clinician_made_is_theirs_outside_their_reach(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, _ = replicas
    doctor = db.create_entity("doctor", "Dr").id
    who = principal(Role.clinician, entity_id=doctor)
    with a.session() as session:
        access.act_as(session, who)
        made = entities.create(session, entities.EntityCreate(kind="patient", name="new")).id
    assert scoped_get(a, who, made) and scoped_get(a, who, made)
    assert not scoped_get(a, who, graph["a"])


def test_packed_reach_comes_back_equal() -> None:
    reached = (frozenset({uuid.uuid4(), uuid.uuid4()}), datetime.now(UTC))
    assert access._unpack_reach(access._pack_reach(reached)) == reached
    assert access._unpack_reach(access._pack_reach((frozenset(), None))) == (frozenset(), None)


def test_a_tensors_blocks_come_from_the_cache_until_the_tensor_changes_through_any_replica(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, b = replicas
    tensor = graph["Ta"]
    changes: list[Callable[[], object]] = [
        lambda: db.write_values(tensor, [{"time": 1, "metric": "heart_rate", "value": 99.0}]),  # rewrite a value
        lambda: db.write_values(tensor, [{"time": 3, "metric": "temperature", "value": 37.5}]),  # fill a cell
        lambda: db.erase_values(tensor, [{"time": 2, "metric": "heart_rate"}]),
        lambda: db.write_values(tensor, [{"time": 4000, "metric": "heart_rate", "value": 70.0}]),  # a new block
    ]
    questions: list[dict[str, Any]] = [{}, {"time": 1}, {"start": 0, "end": 3, "labels": {"metric": "heart_rate"}}]
    for change in changes:
        before = []
        for asked in questions:
            a.read(tensor, **asked)
            before.append(warm(b, caches.BLOCKS, lambda: b.read(tensor, **asked)))  # noqa: B023 -- called at once
        misses = b.lookups[(caches.BLOCKS, False)]
        change()
        after = [b.read(tensor, **asked) for asked in questions]
        assert after == [b.read(tensor, cached=False, **asked) for asked in questions]
        assert b.lookups[(caches.BLOCKS, False)] > misses  # the tensor's new version: its entries made anew
        assert after[0] != before[0]  # every change shows in the whole tensor


def test_an_as_of_read_through_cached_blocks_is_the_uncached_one(
    replicas: tuple[Replica, Replica], graph: dict[str, uuid.UUID], db: Dust
) -> None:
    a, _ = replicas
    tensor = graph["Ta"]
    moment = datetime.now(UTC)
    time.sleep(0.002)
    db.write_values(tensor, [{"time": 1, "metric": "heart_rate", "value": 99.0}])
    a.read(tensor, as_of=moment)
    assert a.read(tensor, as_of=moment) == a.read(tensor, as_of=moment, cached=False)
    assert a.lookups[(caches.BLOCKS, True)] >= 1
    assert a.read(tensor) != a.read(tensor, as_of=moment)  # the rewrite after the moment shows now, not then


def test_packed_blocks_come_back_equal() -> None:
    stored = [(0, "8,2", b"\x01\x02", None), (3, "8,2", b"", b"\x09" * 5), (7, "4,2", b"\x00" * 9, b"")]
    assert tensors._unpack_blocks(tensors._pack_blocks(stored)) == stored


def test_packed_relation_rows_come_back_equal(db: Dust, graph: dict[str, uuid.UUID]) -> None:
    db.set_weight_policy("knows", half_life="P30D")
    db.update_relation(graph["ab"], valid_from=PAST, valid_to=datetime.now(UTC) + timedelta(days=3))
    with db.session() as session:
        rows = repo.all_edges(session, [], None, weights.decaying(session))
    assert all(r.changed is not None for r in rows) and any(r.valid_from and r.valid_to for r in rows)
    assert repo.unpack_edges(repo.pack_edges(rows)) == rows
    assert repo.unpack_edges(repo.pack_edges([])) == []
