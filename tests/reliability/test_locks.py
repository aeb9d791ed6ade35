"""Lock waits on PostgreSQL, made deterministic (SQLite serialises its writers: none of these arise).

Most tests hold a transaction open in the middle of a delete, start an engine call that must wait for it, and
go on only once the call waits: the order that the stress tests of test_concurrency.py hit now and then. What
the call must do then: queue or say "not found" — never deadlock, never answer a 500, never call a missing
entity a duplicate. The last shows that the requests of one API key wait for each other.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, delete, insert, select, text
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import entities, relations, tensors, users
from dust.engine.entities import EntityUpdate
from dust.engine.relations import RelationCreate, RelationUpdate
from dust.engine.tensors import TensorCreate
from dust.storage.models import Entity, Relation
from tests.reliability.server import admin_keys, database

WAIT = 10.0  # seconds: far beyond PostgreSQL's deadlock_timeout (1 s), well within a test's patience
LOW, HIGH = uuid.UUID(int=1), uuid.UUID(int=2)  # relation ids, so that the lock order is known


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database."""
    admin_url = os.environ.get("DUST_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.skip("PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)")
    with database("postgresql", admin_url) as url:
        yield url


@pytest.fixture
def related(postgres_url: str) -> Iterator[tuple[Dust, uuid.UUID, uuid.UUID]]:
    """Entities a and b, related a→b (relation LOW) and b→a (relation HIGH), and a schema 'spare'."""
    with Dust(postgres_url) as db:
        a, b = (db.create_entity("thing", name).id for name in ("a", "b"))
        db.create_schema({"name": "spare", "axes": [{"name": "m", "labels": ["x"]}], "time": {"unit": "day"}})
        now = datetime.now(UTC)
        edge = {"type": "link", "weight": 1.0, "attributes": {}, "created_at": now, "updated_at": now}
        rows = [
            {"id": LOW, "source_id": a, "target_id": b, **edge},
            {"id": HIGH, "source_id": b, "target_id": a, **edge},
        ]
        with db.session() as session:
            session.execute(insert(Relation), rows)
        yield db, a, b


def _wait_until_blocked(observer: Connection) -> None:
    """Until a session of this database waits for a lock."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + WAIT
    while observer.execute(waiting).scalar() == 0:
        observer.rollback()  # pg_stat_activity is a snapshot taken once per transaction
        assert time.monotonic() < deadline, "the call never waited for the open delete"
        time.sleep(0.02)


def _while_deleting(db: Dust, victim: uuid.UUID, call: Callable[[Session], object]) -> BaseException | None:
    """Run ``call`` in a transaction of its own while a delete of ``victim`` is under way; commit the delete once
    ``call`` waits for it. What ``call`` raised, if anything."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            with db.session() as session:
                call(session)
            raised.append(None)
        except BaseException as error:  # handed to the test
            raised.append(error)

    with db.engine.connect() as deleting, db.engine.connect() as observer:
        deleting.execute(delete(Entity).where(Entity.id == victim))
        worker = threading.Thread(target=run)
        worker.start()
        _wait_until_blocked(observer)
        deleting.commit()
        worker.join(timeout=WAIT)
    assert raised, "the call did not finish"
    return raised[0]


# --- fixed ----------------------------------------------------------------------------------------------------


def test_deletes_of_entities_related_both_ways_queue_instead_of_deadlocking(
    related: tuple[Dust, uuid.UUID, uuid.UUID],
) -> None:
    """Deleting an entity deletes its relations by cascade: first those it is the source of, then those it is
    the target of. Two deletes of entities related both ways took the shared rows in opposite orders, and
    PostgreSQL aborted one as a deadlock (the API answered 500: 4 of 40 such deletes in a stress run). A delete
    now locks its row and then its relations in id order first, so the second waits for the first."""
    db, _, b = related
    raised: list[BaseException | None] = []

    def delete_b() -> None:
        try:
            db.delete_entity(b)
            raised.append(None)
        except BaseException as error:  # a deadlock surfaces here as OperationalError
            raised.append(error)

    # ``other`` stands for the delete of a: it holds a's first relation in id order and goes on to the next.
    with db.engine.connect() as other, db.engine.connect() as observer:
        other.execute(text("SET lock_timeout = '10s'"))
        other.execute(select(Relation.id).where(Relation.id == LOW).with_for_update())
        deleter = threading.Thread(target=delete_b)
        deleter.start()
        _wait_until_blocked(observer)
        other.execute(select(Relation.id).where(Relation.id == HIGH).with_for_update())  # b's delete must not hold it
        other.rollback()
        deleter.join(timeout=WAIT)
    assert raised == [None], f"the delete of b failed: {raised}"


def test_a_relation_added_while_its_end_is_being_deleted_cannot_deadlock_the_delete(
    related: tuple[Dust, uuid.UUID, uuid.UUID],
) -> None:
    """The delete of a used to lock a's relations and then wait for a's row, held by a create of one more
    relation a→b; once that committed, a delete of b could lock the new relation before a's cascade reached
    it, and wait for a's old ones: a deadlock (seen by the stress about once in twenty runs). The delete now
    takes a's row first, so no relation of a can be added after it has locked them."""
    db, a, b = related
    newest = uuid.UUID(int=0)  # below LOW: the first a delete of b would lock
    raised: list[BaseException | None] = []

    def delete_a() -> None:
        try:
            db.delete_entity(a)
            raised.append(None)
        except BaseException as error:  # a deadlock surfaces here as OperationalError
            raised.append(error)

    with (
        db.engine.connect() as creating,
        db.engine.connect() as reading,
        db.engine.connect() as other,
        db.engine.connect() as observer,
    ):
        _hold(reading, a)  # one more transaction holding a: keeps the delete waiting after the create commits
        _hold(creating, a, b)
        now = datetime.now(UTC)
        edge = {"type": "new", "weight": 1.0, "attributes": {}, "created_at": now, "updated_at": now}
        creating.execute(insert(Relation), [{"id": newest, "source_id": a, "target_id": b, **edge}])
        deleter = threading.Thread(target=delete_a)
        deleter.start()
        _wait_until_blocked(observer)
        creating.commit()
        # ``other`` stands for the delete of b: it locks b's relations in id order, the new one first.
        other.execute(text("SET lock_timeout = '10s'"))
        other.execute(select(Relation.id).where(Relation.id == newest).with_for_update())
        reading.commit()
        _wait_until_blocked(observer)  # the delete of a goes on, and waits for the new relation
        other.execute(select(Relation.id).where(Relation.id == LOW).with_for_update())  # must not be a's yet
        other.rollback()
        deleter.join(timeout=WAIT)
    assert raised == [None], f"the delete of a failed: {raised}"


def _hold(conn: Connection, *entity_ids: uuid.UUID) -> None:
    """What a create of a tensor or relation holds until it commits: its entities, against deletion."""
    conn.execute(select(Entity.id).where(Entity.id.in_(entity_ids)).with_for_update(read=True, key_share=True))


def test_a_relation_to_an_entity_deleted_meanwhile_is_refused_as_missing(
    related: tuple[Dust, uuid.UUID, uuid.UUID],
) -> None:
    """Was a foreign-key violation reported as 409 "a relation exists"; now the check holds the entity."""
    db, a, b = related
    raised = _while_deleting(db, b, lambda s: relations.create(s, RelationCreate(source_id=a, target_id=b, type="new")))
    assert isinstance(raised, InvalidInput) and "does not exist" in raised.detail, repr(raised)


def test_a_tensor_for_an_entity_deleted_meanwhile_is_not_found(related: tuple[Dust, uuid.UUID, uuid.UUID]) -> None:
    """Was an IntegrityError out of the insert: a 500."""
    db, a, _ = related
    create = TensorCreate.model_validate({"entity_id": a, "schema": "spare"})
    raised = _while_deleting(db, a, lambda s: tensors.create(s, create))
    assert isinstance(raised, NotFound), repr(raised)


# --- a change of a row deleted meanwhile is a 404 (the row is locked when read for the change) ---------------


def test_a_weight_change_of_a_relation_deleted_meanwhile_is_not_found(
    related: tuple[Dust, uuid.UUID, uuid.UUID],
) -> None:
    db, a, _ = related
    raised = _while_deleting(db, a, lambda s: relations.update(s, LOW, RelationUpdate(weight=2.0)))
    assert isinstance(raised, NotFound), repr(raised)


def test_a_change_of_an_entity_deleted_meanwhile_is_not_found(related: tuple[Dust, uuid.UUID, uuid.UUID]) -> None:
    db, a, _ = related
    raised = _while_deleting(db, a, lambda s: entities.update(s, a, EntityUpdate(name="renamed")))
    assert isinstance(raised, NotFound), repr(raised)


# --- requests of one API key do not wait for each other (last_used_at written apart, once a minute) ----------


def test_requests_signed_with_one_api_key_do_not_wait_for_each_other(postgres_url: str) -> None:
    """A machine client runs parallel workers on one key; a long request of one must not hold up the rest."""
    (key,) = admin_keys(postgres_url)
    with Dust(postgres_url, migrate=False) as db, db.session() as first:
        users.authenticate(first, db.settings, key)  # a request in progress: its transaction is still open
        first.flush()
        with db.session() as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            users.authenticate(second, db.settings, key)
            second.flush()  # LockNotAvailable after 2 s while the first holds the key's row
