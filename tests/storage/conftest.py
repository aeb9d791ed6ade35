"""Helpers of the storage tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from dust.storage.db import make_engine


async def ticks_until(done: threading.Event) -> int:
    """How often a coroutine on this loop got to run (every 10 ms) until ``done``: that the loop stayed free."""
    ticks = 0
    while not done.is_set():
        ticks += 1
        await asyncio.sleep(0.01)
    return ticks


def terminate(engine: Engine, pid: int) -> None:
    """End that backend from another connection, as a restart or an administrator would."""
    other = make_engine(str(engine.url.render_as_string(hide_password=False)))
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    other.dispose()
    time.sleep(0.1)  # the server's goodbye reaches the socket


@pytest.fixture
def postgres(postgres_database: str, empty_database: Callable[[str], None]) -> Iterator[Engine]:
    """An engine on this worker's PostgreSQL database, emptied."""
    empty_database(postgres_database)
    engine = make_engine(postgres_database)
    yield engine
    engine.dispose()
