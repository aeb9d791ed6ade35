"""Connections to PostgreSQL that the server has closed are replaced before they are lent out: after a restart or
a terminated backend, the next request gets a working connection instead of an error. Statements sent together
(``pipelined``) succeed or fail together with their transaction, and fail as SQLAlchemy's errors, as does a
statement sent straight to the driver (``driver_scalar``), and rows inserted there (``driver_insert``) read back as
SQLAlchemy's do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from dust.storage.db import (
    checkpoint_wal,
    driver_insert,
    driver_scalar,
    driver_takes,
    make_engine,
    make_sessionmaker,
    pipelined,
)
from dust.storage.loop import loop_sessions
from dust.storage.models import AuditRecord, utcnow
from dust.storage.repositories import audit as audit_repo
from tests.storage.conftest import terminate

BACKEND_PID = text("SELECT pg_backend_pid()")


def test_a_connection_the_server_closed_is_replaced_before_it_is_lent_out(postgres: Engine) -> None:
    with postgres.connect() as conn:
        first = conn.execute(BACKEND_PID).scalar_one()
    terminate(postgres, first)
    with postgres.connect() as conn:  # the same pooled connection, were it not replaced: "server closed"
        assert conn.execute(BACKEND_PID).scalar_one() != first


def test_on_the_loop_too(postgres: Engine) -> None:
    loop = loop_sessions(postgres, make_sessionmaker(postgres, read_only=True), make_sessionmaker(postgres))
    assert loop is not None

    def pid() -> int:
        with loop.reads() as session:
            return int(session.execute(BACKEND_PID).scalar_one())

    async def run() -> tuple[int, int]:
        try:
            first = await loop.run(pid)
            terminate(postgres, first)
            return first, await loop.run(pid)
        finally:
            await loop.dispose()

    first, second = asyncio.run(run())
    assert second != first


def test_a_healthy_connection_is_kept(postgres: Engine) -> None:
    with postgres.connect() as conn:
        first = conn.execute(BACKEND_PID).scalar_one()
    with postgres.connect() as conn:
        assert conn.execute(BACKEND_PID).scalar_one() == first


EPOCH = text("INSERT INTO cache_epochs (name, value) VALUES (:name, :value)")
EPOCHS = text("SELECT name, value FROM cache_epochs WHERE name LIKE 'test-%' ORDER BY name")


def test_statements_sent_together_take_effect_with_their_transaction(database_url: str) -> None:
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session, session.begin():
        with pipelined(session):
            session.execute(EPOCH, [{"name": "test-a", "value": 1}, {"name": "test-b", "value": 2}])
            session.execute(text("UPDATE cache_epochs SET value = value + 10 WHERE name = 'test-a'"))
        assert session.execute(EPOCHS).all() == [("test-a", 11), ("test-b", 2)]  # a read after the block sees them
    with engine.connect() as conn:
        assert conn.execute(EPOCHS).all() == [("test-a", 11), ("test-b", 2)]
    engine.dispose()


def test_a_failure_among_statements_sent_together_is_sqlalchemys_and_undoes_them_all(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as session, session.begin():
        session.execute(EPOCH, {"name": "test-a", "value": 1})
    # The transaction rolls back on the error, as after any failed statement (the caller's handling, unchanged).
    with pytest.raises(IntegrityError), sessions() as session, session.begin(), pipelined(session):
        session.execute(EPOCH, {"name": "test-b", "value": 2})
        session.execute(EPOCH, {"name": "test-a", "value": 3})  # the key is taken
        session.execute(EPOCH, {"name": "test-c", "value": 4})
    with sessions() as session, session.begin():  # the pooled connection works on
        assert session.execute(EPOCHS).all() == [("test-a", 1)]
    engine.dispose()


def test_a_statement_sent_straight_to_the_driver_answers_fails_and_is_seen_as_through_sqlalchemy(
    database_url: str,
) -> None:
    """``driver_scalar`` (every read's BEGIN and cache epochs): in a thread's transaction, and in the event
    loop's (PostgreSQL: psycopg's asyncio connection, awaited in the loop's greenlet)."""
    engine = make_engine(database_url)
    reads = make_sessionmaker(engine, read_only=True)
    loop = loop_sessions(engine, reads, make_sessionmaker(engine))
    assert loop is not None
    seen: list[str] = []
    watched = [engine, *(made.sync_engine for made in loop.engines)]
    for each in watched:
        event.listen(each, "before_cursor_execute", lambda conn, cursor, sql, *rest: seen.append(sql))

    def ask(sql: str, sessions: Callable[[], Session]) -> object:
        with sessions() as session, session.begin():
            return driver_scalar(session.connection(), sql)

    async def on_the_loop(sql: str) -> object:
        return await loop.run(ask, sql, loop.reads)

    for run in (lambda sql: ask(sql, reads), lambda sql: asyncio.run(on_the_loop(sql))):
        seen.clear()
        assert run("SELECT 41 + 1") == 42
        assert run("SELECT 1 WHERE 1 = 0") is None
        with pytest.raises(DBAPIError) as failed:
            run("SELECT * FROM no_such_table")
        assert "no_such_table" in str(failed.value.orig)
        assert run("SELECT 7") == 7  # the connection is fine after the failure
        assert "SELECT 41 + 1" in seen and "SELECT * FROM no_such_table" in seen
    asyncio.run(loop.dispose())
    engine.dispose()


def test_a_wal_checkpoint_takes_no_write_lock_and_leaves_writers_and_readers_going(
    sqlite_database: str, empty_database: Callable[[str], None]
) -> None:
    """``checkpoint_wal``, as the batch writer's thread runs it: while a writer holds SQLite's write lock (a
    commit's automatic checkpoint would hold it for the whole copy), and while a reader has its snapshot."""
    empty_database(sqlite_database)
    engine = make_engine(sqlite_database)
    sessions, reads = make_sessionmaker(engine), make_sessionmaker(engine, read_only=True)
    with sessions() as session, session.begin():
        session.execute(EPOCH, {"name": "test-a", "value": 1})
    with reads() as reader, reader.begin(), sessions() as writer, writer.begin():
        before = reader.execute(EPOCHS).all()
        writer.execute(EPOCH, {"name": "test-b", "value": 2})  # holds the write lock from here to its commit
        checkpoint_wal(engine)  # had it to take the write lock, it would wait here for the writer above
        assert reader.execute(EPOCHS).all() == before == [("test-a", 1)]
    with engine.connect() as conn:
        assert conn.execute(EPOCHS).all() == [("test-a", 1), ("test-b", 2)]
    engine.dispose()


def test_rows_inserted_on_the_driver_read_back_as_sqlalchemys_do(database_url: str) -> None:
    """``driver_insert`` (the batch writer's audit records) converts each value as SQLAlchemy's executemany does: an
    aware time to UTC (naive text on SQLite), a UUID to SQLite's hex text, None as NULL; on the loop's asyncio
    connection too (PostgreSQL)."""
    engine = make_engine(database_url)
    loop = loop_sessions(engine, make_sessionmaker(engine, read_only=True), make_sessionmaker(engine))
    assert loop is not None
    at = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))

    def row(action: str, entity: uuid.UUID | None) -> dict[str, object]:
        return {"at": at, "user_id": uuid.uuid4(), "username": "Zoë", "action": action, "resource": "entity",
                "entity_id": entity, "path": None}  # fmt: skip

    rows = {name: [row(f"{name}-1", uuid.uuid4()), row(f"{name}-2", None)] for name in ("driver", "sqlalchemy", "loop")}
    with engine.begin() as connection:
        assert driver_insert(connection, audit_repo.appending([]).statement, rows["driver"])
        connection.execute(audit_repo.appending([]).statement, rows["sqlalchemy"])

    def on_the_loop() -> None:
        with loop.writes() as session, session.begin():
            assert driver_insert(session.connection(), audit_repo.appending([]).statement, rows["loop"])

    asyncio.run(loop.run(on_the_loop))
    with make_sessionmaker(engine)() as session:
        stored = {r.action: r for r in session.scalars(select(AuditRecord))}
    for name, given in rows.items():
        for each in given:
            record = stored[str(each["action"])]
            for column, value in each.items():
                assert getattr(record, column) == value and type(getattr(record, column)) is type(value), (name, column)
    asyncio.run(loop.dispose())
    engine.dispose()


def test_rows_the_driver_cannot_take_as_given_are_left_to_sqlalchemy(sqlite_database: str) -> None:
    """A column left out whose default is made in Python (SQLAlchemy computes it per row), or rows of different
    columns (SQLAlchemy's executemany takes the first row's): ``driver_insert`` does nothing and says so."""
    engine = make_engine(sqlite_database)
    statement = audit_repo.appending([]).statement
    uneven = [
        {"at": utcnow(), "action": "a", "resource": "t"},
        {"at": utcnow(), "action": "b", "resource": "t", "path": "/"},
    ]
    count = select(func.count()).select_from(AuditRecord)
    with engine.begin() as connection:
        before = connection.scalar(count)
        assert not driver_insert(connection, statement, [{"action": "no time", "resource": "test"}])
        assert not driver_takes(connection, statement, uneven) and not driver_insert(connection, statement, uneven)
        assert not driver_insert(connection, statement, [])
        assert connection.scalar(count) == before
    engine.dispose()
