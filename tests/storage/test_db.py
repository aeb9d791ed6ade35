"""Connections to PostgreSQL that the server has closed are replaced before they are lent out: after a restart or
a terminated backend, the next request gets a working connection instead of an error."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine, text

from dust.storage.db import make_engine, make_sessionmaker
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
