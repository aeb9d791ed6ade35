"""Connections to PostgreSQL that the server has closed are replaced before they are lent out: after a restart or
a terminated backend, the next request gets a working connection instead of an error. Statements sent together
(``pipelined``) succeed or fail together with their transaction, and fail as SQLAlchemy's errors."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from dust.storage.db import make_engine, make_sessionmaker, pipelined
from dust.storage.loop import loop_sessions

BACKEND_PID = text("SELECT pg_backend_pid()")


def terminate(engine: Engine, pid: int) -> None:
    """End that backend from another connection, as a restart or an administrator would."""
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    other.dispose()
    time.sleep(0.1)  # the server's goodbye reaches the socket


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
