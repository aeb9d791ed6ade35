"""``defer``: a task runs once the transaction that asked for it commits, never if it (or its savepoint) rolls
back; and where each database's queue lives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from dust.core.config import Settings
from dust.jobs import Worker, defer
from dust.jobs.queue import JobQueue, location
from dust.storage.db import make_engine, make_sessionmaker
from tests.jobs.conftest import RECEIVED, until


def test_a_deferred_task_runs_after_commit_with_its_arguments(app: FastAPI, worker: Worker) -> None:
    with app.state.sessions() as session, session.begin():
        defer(session, "tests.record", "committed", 1, {"a": [1.5, None]})
        time.sleep(0.3)  # the worker polls meanwhile: nothing is sent before the commit
        assert RECEIVED == []
    assert until(lambda: RECEIVED) == [("committed", 1, {"a": [1.5, None]})]


def test_a_deferred_task_of_a_rolled_back_transaction_never_runs(app: FastAPI, worker: Worker) -> None:
    with app.state.sessions() as session:
        with pytest.raises(RuntimeError), session.begin():
            defer(session, "tests.record", "rolled back")
            raise RuntimeError("the request failed")
        with session.begin():
            session.execute(text("SELECT 1"))  # a later transaction of the same session commits
        with session.begin():
            defer(session, "tests.record", "after")
    assert until(lambda: RECEIVED) == [("after",)]
    time.sleep(0.3)
    assert RECEIVED == [("after",)]


def test_a_savepoint_rolled_back_drops_only_its_own_tasks(app: FastAPI, worker: Worker) -> None:
    with app.state.sessions() as session, session.begin():
        defer(session, "tests.record", "outer")
        with pytest.raises(RuntimeError), session.begin_nested():
            defer(session, "tests.record", "inner, rolled back")
            raise RuntimeError("this part failed")
        with session.begin_nested():
            defer(session, "tests.record", "inner, released")
    until(lambda: len(RECEIVED) == 2)
    time.sleep(0.3)
    assert sorted(RECEIVED) == [("inner, released",), ("outer",)]


def test_a_delayed_task_runs_no_sooner_than_asked(app: FastAPI, worker: Worker) -> None:
    with app.state.sessions() as session, session.begin():
        defer(session, "tests.record", "later", delay=1.5)
    sent = time.monotonic()
    until(lambda: RECEIVED)
    assert time.monotonic() - sent >= 1.4  # huey's clock has whole-second steps: a little either way


def test_a_session_without_a_queue_defers_nothing(settings: Settings, app: FastAPI, worker: Worker) -> None:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session, session.begin():  # a plain script's session
            defer(session, "tests.record", "from a script")
        with app.state.sessions() as session, session.begin():
            defer(session, "tests.record", "from the app")
        until(lambda: RECEIVED)
        time.sleep(0.3)
        assert RECEIVED == [("from the app",)]
    finally:
        engine.dispose()


def test_defer_refuses_an_unknown_task_and_arguments_a_message_cannot_carry(app: FastAPI) -> None:
    with app.state.sessions() as session, session.begin():
        with pytest.raises(LookupError, match=r"no task 'tests\.recrod'; registered: .*tests\.record"):
            defer(session, "tests.recrod")
        with pytest.raises(TypeError):
            defer(session, "tests.record", object())


def test_messages_are_json_not_pickle(tmp_path: Path) -> None:
    queue = JobQueue(location(Settings(database_url=f"sqlite:///{tmp_path / 'dust.db'}")))
    queue.send("tests.record", ["x", 1])
    (raw,) = queue.huey.storage.enqueued_items()
    message = json.loads(bytes(raw))
    assert (message["name"].rsplit(".", 1)[-1], message["args"]) == ("run", ["tests.record", ["x", 1]])


def test_each_database_has_its_queue(tmp_path: Path) -> None:
    file = tmp_path / "data" / "dust.db"
    beside = location(Settings(database_url=f"sqlite:///{file}"))
    assert (beside.backend, beside.target) == ("sqlite", str(file.with_name("dust.jobs.db")))
    named = location(Settings(database_url=f"sqlite:///{file}", jobs_path=str(tmp_path / "q.db")))
    assert (named.backend, named.target, named.name) == ("sqlite", str(tmp_path / "q.db"), beside.name)
    assert location(Settings(database_url="sqlite://")).backend == "memory"
    postgres = "postgresql+psycopg://dust:secret@db/dust"
    assert location(Settings(database_url=postgres)).backend == "memory"
    shared = location(Settings(database_url=postgres, redis_url="redis://cache:6379/0"))
    assert (shared.backend, shared.target) == ("redis", "redis://cache:6379/0")
    other = location(Settings(database_url="postgresql+psycopg://dust:secret@db/other", redis_url="redis://cache"))
    assert shared.name != other.name  # two deployments on one Redis keep to their own messages
    assert shared.name == location(Settings(database_url=postgres.replace("secret", "rotated"))).name
    assert "secret" not in shared.name
