"""List cursors: what the lists hand out decodes; anything forged is a 422 before it reaches SQL; and walks
through the lists return every row once while others commit in between (docs/reliability.md#paging)."""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import audit, entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.paging import (
    KEYSET,
    MAX_OFFSET,
    OFFSET,
    decode_cursor,
    encode_cursor,
    id_next,
    id_walk,
    keyset_after,
    keyset_cursor,
    keyset_next,
    keyset_walk,
)
from dust.engine.relations import RelationCreate
from dust.storage.db import make_engine, make_sessionmaker, unit_of_work
from dust.storage.repositories import audit as audit_repo
from dust.storage.repositories.paging import Walk

T = TypeVar("T")


def raw(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def test_cursors_the_lists_hand_out_round_trip() -> None:
    when, last = datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()
    assert keyset_after(keyset_cursor(when, last)) == (when, last)
    assert decode_cursor(encode_cursor(OFFSET, 0), OFFSET) == 0
    assert decode_cursor(encode_cursor(OFFSET, MAX_OFFSET), OFFSET) == MAX_OFFSET == 2**31 - 1


FORGED = {
    "keyset position a number": (KEYSET, raw(b'["k", ["2026-01-01T00:00:00", 5]]'), "[time, id]"),
    "keyset position an object": (KEYSET, raw(b'["k", {"a": 1}]'), "[time, id]"),
    "keyset position of three": (KEYSET, raw(b'["k", ["2026-01-01", "x", "y"]]'), "[time, id]"),
    "keyset not a time": (KEYSET, raw(b'["k", ["soon", "' + str(uuid.uuid4()).encode() + b'"]]'), "next_cursor"),
    "offset 1e999": (OFFSET, raw(b'["o", 1e999]'), "integer 0..2147483647"),
    "offset a float": (OFFSET, raw(b'["o", 1.0]'), "integer"),
    "offset a bool": (OFFSET, raw(b'["o", true]'), "integer"),
    "offset a string": (OFFSET, raw(b'["o", "5"]'), "integer"),
    "offset negative": (OFFSET, raw(b'["o", -1]'), "integer"),
    "offset past integer": (OFFSET, raw(b'["o", 2147483648]'), "integer"),
    "offset of 5000 digits": (OFFSET, raw(b'["o", ' + b"9" * 5000 + b"]"), "next_cursor"),
    "nested past the parser": (OFFSET, raw(b"[" * 100_000 + b"]" * 100_000), "next_cursor"),
    "the other list's tag": (OFFSET, encode_cursor(KEYSET, ["2026-01-01", str(uuid.uuid4())]), "next_cursor"),
    "not a pair": (OFFSET, raw(b'["o", 1, 2]'), "next_cursor"),
    "not base64": (OFFSET, "***", "next_cursor"),
    "not UTF-8": (OFFSET, raw(b"\xff\xfe"), "next_cursor"),
    "non-ASCII text": (OFFSET, "é", "next_cursor"),
}


@pytest.mark.parametrize(("tag", "cursor", "says"), FORGED.values(), ids=FORGED.keys())
def test_forged_cursors_are_invalid_input(tag: str, cursor: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        keyset_after(cursor) if tag == KEYSET else decode_cursor(cursor, tag)
    assert says in caught.value.detail


def test_cursors_carry_the_transactions_a_page_left_owed() -> None:
    when, last = datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()
    owed = Walk((when, last), waiting=(901, 905, 2**40), resuming=(899,), resume=(when, uuid.uuid4()))
    assert keyset_walk(keyset_next(owed)) == owed
    assert keyset_walk(keyset_next(Walk((when, last)))) == Walk((when, last))
    assert id_walk(id_next(Walk((7,), waiting=(3, 4), resuming=(2,), resume=(9,)))) == Walk((7,), (3, 4), (2,), (9,))
    assert id_walk(encode_cursor(OFFSET, 7)) == Walk((7,))


FORGED_OWED = {
    "a transaction as text": (KEYSET, ["2026-01-01T00:00:00", str(uuid.uuid4()), ["5"], [], None], "integers"),
    "a step back": (KEYSET, ["2026-01-01T00:00:00", str(uuid.uuid4()), [5, -1], [], None], "integers"),
    "past bigint": (KEYSET, ["2026-01-01T00:00:00", str(uuid.uuid4()), [2**63], [], None], "at most"),
    "resume not a position": (KEYSET, ["2026-01-01T00:00:00", str(uuid.uuid4()), [], [5], 3], "[time, id]"),
    "audit of three": (OFFSET, [5, [], []], "integer"),
    "audit resume a float": (OFFSET, [5, [1], [], 1.5], "integer"),
}


@pytest.mark.parametrize(("tag", "position", "says"), FORGED_OWED.values(), ids=FORGED_OWED.keys())
def test_forged_transactions_in_a_cursor_are_invalid_input(tag: str, position: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        (keyset_walk if tag == KEYSET else id_walk)(encode_cursor(tag, position))
    assert says in caught.value.detail


# --- stable pages: no row commits behind a cursor, none is returned twice (docs/api.md#paging) --------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


def patient(name: str) -> EntityCreate:
    return EntityCreate(kind="patient", name=name)


def committed(engine: Engine, make: Callable[[Session], T]) -> T:
    with unit_of_work(make_sessionmaker(engine)) as session:
        return make(session)


Page = Callable[[Session, str | None], tuple[list[Any], str | None]]


def walk(engine: Engine, page: Page, cursor: str | None) -> list[Any]:
    """Pages from ``cursor`` to the end, each in a read-only transaction of its own (as requests read them)."""
    reader = make_sessionmaker(engine, read_only=True)
    seen: list[Any] = []
    while True:
        with reader() as session, session.begin():
            items, cursor = page(session, cursor)
        seen += items
        if cursor is None:
            return seen


def entity_page(limit: int) -> Page:
    def page(session: Session, cursor: str | None) -> tuple[list[Any], str | None]:
        found = entities.list_(session, limit=limit, cursor=cursor)
        return [e.name for e in found.items], found.next_cursor

    return page


def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("transactions that commit out of key order: PostgreSQL's (SQLite serialises writers)")


def test_an_entity_committed_behind_a_cursor_comes_on_the_next_page(engine: Engine, database_url: str) -> None:
    """PostgreSQL: A takes its key, C commits later keys, a page hands out a cursor past A's key, then A commits."""
    postgres_only(database_url)
    with unit_of_work(make_sessionmaker(engine)) as late:
        entities.create(late, patient("late"))  # key taken, not committed
        committed(engine, lambda s: entities.create_many(s, [patient("e1"), patient("e2"), patient("e3")]))
        reader = make_sessionmaker(engine, read_only=True)
        with reader() as session, session.begin():
            first = entities.list_(session, limit=2)
    assert len(first.items) == 2 and "late" not in [e.name for e in first.items]
    rest = walk(engine, entity_page(2), first.next_cursor)  # A has committed
    assert sorted([e.name for e in first.items] + rest) == ["e1", "e2", "e3", "late"]
    assert rest[0] == "late"  # owed from behind the cursor: first on the next page


def test_rows_owed_beyond_a_page_are_returned_page_by_page(engine: Engine, database_url: str) -> None:
    postgres_only(database_url)
    late_names = [f"late{i}" for i in range(5)]
    with unit_of_work(make_sessionmaker(engine)) as late:
        entities.create_many(late, [patient(name) for name in late_names])
        committed(engine, lambda s: entities.create_many(s, [patient(f"e{i}") for i in range(3)]))
        reader = make_sessionmaker(engine, read_only=True)
        with reader() as session, session.begin():
            first = entities.list_(session, limit=2)
    rest = walk(engine, entity_page(2), first.next_cursor)
    assert sorted([e.name for e in first.items] + rest) == sorted([*late_names, "e0", "e1", "e2"])


def test_a_relation_committed_behind_a_cursor_comes_on_the_next_page(engine: Engine, database_url: str) -> None:
    postgres_only(database_url)
    ends = committed(engine, lambda s: [e.id for e in entities.create_many(s, [patient(str(i)) for i in range(5)])])

    def relate(session: Session, target: int, type_: str) -> None:
        relations.create(session, RelationCreate(source_id=ends[0], target_id=ends[target], type=type_))

    def page(session: Session, cursor: str | None) -> tuple[list[Any], str | None]:
        found = relations.list_(session, limit=2, cursor=cursor)
        return [r.type for r in found.items], found.next_cursor

    with unit_of_work(make_sessionmaker(engine)) as late:
        relate(late, 1, "late")
        for i in (2, 3, 4):  # one transaction each: rows of one transaction share their creation time
            committed(engine, lambda s, i=i: relate(s, i, f"r{i}"))
        with make_sessionmaker(engine, read_only=True)() as session, session.begin():
            first = relations.list_(session, limit=2)
    assert [r.type for r in first.items] == ["r2", "r3"]
    assert walk(engine, page, first.next_cursor) == ["late", "r4"]


def test_an_audit_record_committed_behind_a_cursor_comes_on_the_next_page(engine: Engine, database_url: str) -> None:
    """Newest first: the walk has passed A's id, lower than those committed after it, when A commits."""
    postgres_only(database_url)

    def record(action: str) -> dict[str, Any]:
        return {"at": datetime.now(UTC), "action": action, "resource": "entity"}

    def page(session: Session, cursor: str | None) -> tuple[list[Any], str | None]:
        found = audit.search(session, limit=3, cursor=cursor)
        return [r.action for r in found.items], found.next_cursor

    committed(engine, lambda s: audit_repo.append(s, [record("old1"), record("old2")]))
    with unit_of_work(make_sessionmaker(engine)) as late:
        audit_repo.append(late, [record("late")])
        committed(engine, lambda s: audit_repo.append(s, [record("new1"), record("new2")]))
        with make_sessionmaker(engine, read_only=True)() as session, session.begin():
            first = audit.search(session, limit=3)
    assert [r.action for r in first.items] == ["new2", "new1", "old2"]
    assert walk(engine, page, first.next_cursor) == ["late", "old1"]


def test_sqlite_keys_are_taken_under_the_write_lock_so_key_order_is_commit_order(
    engine: Engine, database_url: str
) -> None:
    """SQLite: B asks to create while A holds the write lock, and gets it only once A has committed; a page read
    then has a cursor past all of A's rows. B's key, taken once B holds the lock, is after them all."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    b_inserting, b_may_commit = threading.Event(), threading.Event()

    def hold_b(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name == "B" and statement.startswith("INSERT INTO entities"):
            b_inserting.set()
            assert b_may_commit.wait(10)

    event.listen(engine, "before_cursor_execute", hold_b)
    b = threading.Thread(target=committed, args=(engine, lambda s: entities.create(s, patient("b"))), name="B")
    with unit_of_work(make_sessionmaker(engine)) as a:
        entities.create(a, patient("a1"))
        b.start()
        time.sleep(0.2)  # B is waiting for the write lock (with a clock read before it, B's key would be here)
        entities.create_many(a, [patient("a2"), patient("a3")])
    assert b_inserting.wait(10)
    with make_sessionmaker(engine, read_only=True)() as session, session.begin():
        first = entities.list_(session, limit=2)
    b_may_commit.set()
    b.join(10)
    rest = walk(engine, entity_page(2), first.next_cursor)
    assert len(first.items) == 2 and first.items[0].name == "a1"
    assert sorted([e.name for e in first.items] + rest) == ["a1", "a2", "a3", "b"]
    assert rest[-1] == "b"


def test_search_pages_skip_and_repeat_nothing_while_matches_are_created(engine: Engine) -> None:
    """Matches created between pages rank anywhere (before the cursor, after it); the rest keep their places."""
    rng = random.Random(18)
    letters = "abcdefghij"

    def names(count: int) -> list[str]:
        return [f"Jane {''.join(rng.choice(letters) for _ in range(5))}" for _ in range(count)]

    ids = committed(engine, lambda s: [e.id for e in entities.create_many(s, [patient(n) for n in names(40)])])
    reader = make_sessionmaker(engine, read_only=True)
    for _ in range(3):
        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            with reader() as session, session.begin():
                found = entities.list_(session, q="jane", limit=rng.randint(1, 7), cursor=cursor)
            seen += [e.id for e in found.items]
            committed(engine, lambda s: entities.create_many(s, [patient(n) for n in names(rng.randint(0, 3))]))
            cursor = found.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen))  # nothing twice
        assert set(ids) <= set(seen)  # nothing that was there from the start skipped
        ids = seen
