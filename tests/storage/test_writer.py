"""The batch writer: what requests hand it is committed before they go on, together under load, each on its own
when one of a batch fails."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from dust.core.errors import Unavailable
from dust.core.logging import configure_logging
from dust.storage import writer as writer_module
from dust.storage.db import Write, checkpoint_wal, make_engine, make_sessionmaker, unit_of_work
from dust.storage.loop import LoopSessions, loop_sessions
from dust.storage.models import AuditRecord, utcnow
from dust.storage.repositories import audit as audit_repo
from dust.storage.writer import BatchWriter
from tests.storage.conftest import ticks_until

Sessions = sessionmaker[Session]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    configure_logging("CRITICAL", "console")  # as the app does: the failure tests log tracebacks
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Sessions:
    return make_sessionmaker(engine)


def record(action: str) -> Write:
    def write(session: Session) -> None:
        session.add(AuditRecord(action=action, resource="test"))

    return write


def appended(action: str) -> Write:
    """As a request leaves its audit record: an Append, which the writer merges with others' into one INSERT."""
    return audit_repo.appending([{"action": action, "resource": "test"}])


def audited(action: str) -> Write:
    """An audit record as a read leaves it (every column given): the driver takes it (dust.storage.db.driver_insert)."""
    return audit_repo.appending([{"at": utcnow(), "action": action, "resource": "test", "entity_id": uuid.uuid4()}])


FORMS = {"a session's write": record, "an append": appended, "a read's audit record": audited}


def actions(sessions: Sessions) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)))


def test_a_write_is_committed_when_write_returns(sessions: Sessions) -> None:
    BatchWriter(sessions).write([record("one"), record("two")])
    assert actions(sessions) == ["one", "two"]


def test_writes_waiting_together_share_one_transaction(engine: Engine, sessions: Sessions) -> None:
    writer = BatchWriter(sessions)
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    slow = threading.Event()

    def hold(session: Session) -> None:  # keeps the writer busy while the others queue up
        slow.wait(5)

    first = threading.Thread(target=writer.write, args=([hold],))
    first.start()
    time.sleep(0.1)
    queued = [threading.Thread(target=writer.write, args=([record(f"r{n}")],)) for n in range(20)]
    for thread in queued:
        thread.start()
    time.sleep(0.2)
    slow.set()
    for thread in [first, *queued]:
        thread.join(10)
    assert sorted(actions(sessions)) == sorted(f"r{n}" for n in range(20))
    assert len(commits) <= 3, "20 waiting writes should have shared a transaction or two"


def test_a_failing_write_fails_only_its_own_request(sessions: Sessions) -> None:
    writer = BatchWriter(sessions)
    errors: dict[str, BaseException] = {}
    release = threading.Event()

    def bad(session: Session) -> None:
        release.wait(5)
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    def send(name: str, writes: list[Write]) -> None:
        try:
            writer.write(writes)
        except Exception as error:
            errors[name] = error

    threads = [threading.Thread(target=send, args=("bad", [bad]))]
    threads += [threading.Thread(target=send, args=(f"good{n}", [record(f"good{n}")])) for n in range(5)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    release.set()
    for thread in threads:
        thread.join(10)
    assert list(errors) == ["bad"]
    assert sorted(actions(sessions)) == [f"good{n}" for n in range(5)]


def test_the_thread_ends_when_idle_and_comes_back_for_more(sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "IDLE_SECONDS", 0.05)
    writer = BatchWriter(sessions)
    writer.write([record("before")])
    assert writer.running
    time.sleep(0.3)
    assert not writer.running
    writer.write([record("after")])
    assert actions(sessions) == ["before", "after"]


def test_a_writer_that_cannot_commit_in_time_answers_503_and_still_commits_later(sessions: Sessions) -> None:
    """The request is refused rather than answered unrecorded; its record still lands once the database frees up
    (an audit trail may hold a refused read, never miss an answered one)."""
    writer = BatchWriter(sessions, wait_seconds=0.1)
    release = threading.Event()

    def stuck(session: Session) -> None:
        release.wait(5)
        record("late")(session)

    with pytest.raises(Unavailable):
        writer.write([stuck])
    release.set()
    deadline = time.monotonic() + 5
    while actions(sessions) != ["late"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert actions(sessions) == ["late"]


# --- awaited from the event loop: the wait holds no thread --------------------------------------------------


def test_an_awaited_write_is_committed_when_it_returns_and_its_failure_is_raised(sessions: Sessions) -> None:
    writer = BatchWriter(sessions)

    def bad(session: Session) -> None:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def both() -> None:
        await writer.written([record("awaited")])
        assert actions(sessions) == ["awaited"]
        with pytest.raises(Exception, match="no_such_table"):
            await writer.written([bad])

    asyncio.run(both())
    assert actions(sessions) == ["awaited"]


def test_many_awaiting_writes_share_a_transaction_while_the_loop_stays_free(engine: Engine, sessions: Sessions) -> None:
    """Twenty coroutines wait for their records on one event loop; a ticker on the same loop keeps running."""
    writer = BatchWriter(sessions)
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    slow = threading.Event()

    def hold(session: Session) -> None:
        slow.wait(5)

    async def run() -> int:
        holding = asyncio.ensure_future(writer.written([hold]))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(writer.written([record(f"r{n}")])) for n in range(20)]
        ticking = asyncio.ensure_future(ticks_until(slow))
        await asyncio.sleep(0.2)
        slow.set()
        await asyncio.gather(holding, *waiting)
        return await ticking

    assert asyncio.run(run()) >= 5  # the loop went on while every write waited
    assert sorted(actions(sessions)) == sorted(f"r{n}" for n in range(20))
    assert len(commits) <= 3, "20 waiting writes should have shared a transaction or two"


def test_an_awaited_write_not_committed_in_time_answers_503(sessions: Sessions) -> None:
    writer = BatchWriter(sessions, wait_seconds=0.1)
    release = threading.Event()

    def stuck(session: Session) -> None:
        release.wait(5)

    async def late() -> None:
        with pytest.raises(Unavailable):
            await writer.written([stuck])

    asyncio.run(late())
    release.set()


def test_awaited_writes_in_time_pass_the_limits_sweeps_and_none_is_kept_once_all_are_settled(
    sessions: Sessions,
) -> None:
    """The limit is kept by a sweep of the loop's waiting writes every so often, not a timer each: writes
    committed in time go through several sweeps unharmed, one held past the limit fails, and once none waits the
    writer holds none of them."""
    writer = BatchWriter(sessions, wait_seconds=0.2)
    release = threading.Event()

    def stuck(session: Session) -> None:
        release.wait(5)

    async def run() -> None:
        for n in range(10):  # 0.5 s: two sweeps and more
            await writer.written([record(f"r{n}")])
            await asyncio.sleep(0.05)
        with pytest.raises(Unavailable):
            await writer.written([stuck])
        release.set()
        await asyncio.sleep(0.5)  # a sweep after the last write forgets it
        assert writer._waiting == {}

    asyncio.run(run())
    assert sorted(actions(sessions)) == [f"r{n}" for n in range(10)]


# --- on the loop (an SQLite file): the loop commits, unless that would mean waiting --------------------------


@pytest.fixture
def sqlite_sessions(sqlite_database: str, empty_database: Callable[[str], None]) -> Iterator[Sessions]:
    empty_database(sqlite_database)
    engine = make_engine(sqlite_database)
    yield make_sessionmaker(engine)
    engine.dispose()


def loop_of(sessions: Sessions) -> LoopSessions:
    """The loop's sessions beside ``sessions``, as an app on their database has them."""
    loop = loop_sessions(sessions.kw["bind"], sessions, sessions)
    assert loop is not None
    return loop


def loop_writer(sessions: Sessions) -> BatchWriter:
    """A batch writer that commits on the loop, as an app's does."""
    return BatchWriter(sessions, loop=loop_of(sessions))


def committed_on(sessions: Sessions) -> list[str]:
    """The names of the threads that commit on these sessions' engine, from now on: through SQLAlchemy, or on the
    driver (``dust.storage.db.write_now``, whose COMMIT the engine's statement listeners see)."""
    threads: list[str] = []

    def committed(*_: object) -> None:
        threads.append(threading.current_thread().name)

    engine = sessions.kw["bind"]
    event.listen(engine, "commit", committed)
    event.listen(engine, "before_cursor_execute", lambda *given: given[2] == "COMMIT" and committed())
    return threads


@pytest.mark.parametrize("form", FORMS)
def test_on_the_loop_the_loop_commits_the_records_itself(sqlite_sessions: Sessions, form: str) -> None:
    writer = loop_writer(sqlite_sessions)
    threads = committed_on(sqlite_sessions)

    async def run() -> str:
        await asyncio.gather(*(writer.written([FORMS[form](f"r{n}")]) for n in range(5)))
        return threading.current_thread().name

    loop_thread = asyncio.run(run())
    assert sorted(actions(sqlite_sessions)) == [f"r{n}" for n in range(5)]
    assert threads == [loop_thread], "the five records, waiting together, in one commit of the loop's"
    assert not writer.running, "no thread was needed"


def test_appends_alone_are_committed_without_a_session_and_with_others_in_the_same_transaction(
    sessions: Sessions, engine: Engine
) -> None:
    """A batch of audit records only (most batches) needs no Session, whose set-up cost more than the INSERT; a
    batch with other writes commits them all in one Session's transaction, the Appends merged."""
    begun: list[int] = []
    commits: list[int] = []

    def began(*_: object) -> None:
        begun.append(1)

    event.listen(Session, "after_begin", began)
    event.listen(engine, "commit", lambda conn: commits.append(1))
    try:
        writer = BatchWriter(sessions)
        writer.write([appended("a1"), appended("a2")])
        assert (begun, commits) == ([], [1])
        writer.write([appended("b1"), record("b2"), appended("b3")])
        assert (begun, commits) == ([1], [1, 1])
    finally:
        event.remove(Session, "after_begin", began)
    assert actions(sessions) == ["a1", "a2", "b2", "b1", "b3"], "the Appends last, in their order"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("holder", ["a writer of this process", "another process"])
def test_on_the_loop_a_taken_write_lock_sends_the_records_to_the_thread_and_the_loop_never_waits(
    sqlite_sessions: Sessions, sqlite_database: str, holder: str, form: str
) -> None:
    writer = loop_writer(sqlite_sessions)
    release = threading.Event()

    def hold_the_lock() -> None:
        if holder == "a writer of this process":  # takes this engine's turn, then SQLite's lock
            with unit_of_work(sqlite_sessions) as session:
                record("holder")(session)
                session.flush()
                release.wait(5)
        else:  # SQLite's lock only, from a connection outside this engine
            other = sqlite3.connect(sqlite_database.removeprefix("sqlite:///"), isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            release.wait(5)
            other.execute("ROLLBACK")
            other.close()

    holding = threading.Thread(target=hold_the_lock)
    holding.start()
    time.sleep(0.2)

    async def run() -> int:
        ticking = asyncio.ensure_future(ticks_until(release))
        waiting = asyncio.ensure_future(writer.written([FORMS[form]("waited")]))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "answered before its record was committed"
        release.set()
        await waiting
        return await ticking

    assert asyncio.run(run()) >= 10, "the loop went on while the lock was taken"
    holding.join(5)
    assert "waited" in actions(sqlite_sessions)
    assert writer.running, "the writer's thread took the record and waited for the lock"


def test_on_the_loop_a_failing_write_fails_only_its_own_request(sqlite_sessions: Sessions) -> None:
    """A batch that fails on the loop goes to the thread, which gives each write its own transaction."""
    writer = loop_writer(sqlite_sessions)

    def bad(session: Session) -> None:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def run() -> list[BaseException | None]:
        jobs = [writer.written([record("good1")]), writer.written([bad]), writer.written([record("good2")])]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    outcomes = asyncio.run(run())
    assert outcomes[0] is None and outcomes[2] is None
    assert "no_such_table" in str(outcomes[1])
    assert sorted(actions(sqlite_sessions)) == ["good1", "good2"]


def test_on_the_loop_commits_never_checkpoint_the_wal_and_the_thread_does_it_with_no_request_waiting(
    sqlite_sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint copies and syncs megabytes (5-16 ms, every request on the loop would wait): the loop's
    transactions run with SQLite's auto-checkpoint off, and every CHECKPOINT_EVERY-th batch the thread
    checkpoints, outside any transaction, while the loop goes on committing."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 2)
    checkpointed = threading.Event()
    checkpoints: list[tuple[str, float]] = []

    def slow_checkpoint(engine: Engine) -> None:
        time.sleep(0.5)  # a long one, to be seen: the requests must not wait for it
        checkpoint_wal(engine)
        checkpoints.append((threading.current_thread().name, time.monotonic()))
        checkpointed.set()

    monkeypatch.setattr(writer_module, "checkpoint_wal", slow_checkpoint)
    writer = loop_writer(sqlite_sessions)
    threads = committed_on(sqlite_sessions)
    during: list[int] = []

    def look(session: Session) -> None:
        during.append(session.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())

    async def run() -> tuple[str, float]:
        for _ in range(3):
            await writer.written([look])
        return threading.current_thread().name, time.monotonic()

    loop_thread, answered = asyncio.run(run())
    assert threads == [loop_thread] * 3, "every batch was the loop's"
    assert during == [0, 0, 0], "the loop's transactions checkpoint nothing"
    assert checkpointed.wait(5), "the thread did not checkpoint"
    assert checkpoints[0][0] == "dust-batch-writer"
    assert answered < checkpoints[0][1], "a request waited for the checkpoint"


def test_on_the_loop_records_gather_under_load_and_a_lone_clients_wait_for_no_one(
    sqlite_sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "GATHER_SECONDS", 0.5)  # long, to be seen
    monkeypatch.setattr(writer_module, "BUSY_SECONDS", 5.0)
    writer = loop_writer(sqlite_sessions)

    async def timed(name: str) -> float:
        started = time.monotonic()
        await writer.written([record(name)])
        return time.monotonic() - started

    async def run() -> tuple[float, list[float]]:
        await asyncio.gather(*(writer.written([record(f"burst{n}")]) for n in range(3)))  # a busy loop
        gathered = await timed("after the burst")  # waits for others to join its commit
        lone = [await timed(f"lone{n}") for n in range(3)]  # each its own batch: nobody to wait for
        return gathered, lone

    gathered, lone = asyncio.run(run())
    assert gathered >= 0.4
    assert max(lone) < 0.25, lone
    assert len(actions(sqlite_sessions)) == 7


# --- on the loop (PostgreSQL): one commit at a time per loop, awaited without blocking it ---------------------


@pytest.fixture
def postgres_sessions(postgres_database: str, empty_database: Callable[[str], None]) -> Iterator[Sessions]:
    configure_logging("CRITICAL", "console")  # the failure test logs a traceback
    empty_database(postgres_database)
    engine = make_engine(postgres_database)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_on_postgres_the_loop_commits_and_records_arriving_meanwhile_go_into_its_next_commit(
    postgres_sessions: Sessions,
) -> None:
    loop = loop_of(postgres_sessions)
    assert loop.over_network, "PostgreSQL: the loop awaits its commits"
    writer = BatchWriter(postgres_sessions, loop=loop)
    threads = committed_on(loop.writes)
    done = threading.Event()

    def slow(session: Session) -> None:  # a commit that waits on the server a while
        session.execute(text("SELECT pg_sleep(0.3)"))
        record("slow")(session)

    async def run() -> tuple[int, str]:
        ticking = asyncio.ensure_future(ticks_until(done))
        first = asyncio.ensure_future(writer.written([slow]))
        await asyncio.sleep(0.1)  # the first commit is waiting on PostgreSQL: these three go into the next
        await asyncio.gather(first, *(writer.written([record(f"r{n}")]) for n in range(3)))
        done.set()
        return await ticking, threading.current_thread().name

    try:
        ticks, loop_thread = asyncio.run(run())
    finally:
        asyncio.run(loop.dispose())
    assert sorted(actions(postgres_sessions)) == ["r0", "r1", "r2", "slow"]
    assert threads == [loop_thread, loop_thread], "two commits, both the loop's"
    assert ticks >= 15, "the loop went on while PostgreSQL slept"
    assert not writer.running, "no thread was needed"


def test_on_postgres_a_failing_write_on_the_loop_fails_only_its_own_request(postgres_sessions: Sessions) -> None:
    loop = loop_of(postgres_sessions)
    writer = BatchWriter(postgres_sessions, loop=loop)

    def bad(session: Session) -> None:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    async def run() -> list[BaseException | None]:
        jobs = [writer.written([record("good1")]), writer.written([bad]), writer.written([record("good2")])]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    try:
        outcomes = asyncio.run(run())
    finally:
        asyncio.run(loop.dispose())
    assert outcomes[0] is None and outcomes[2] is None
    assert "no_such_table" in str(outcomes[1])
    assert sorted(actions(postgres_sessions)) == ["good1", "good2"]


def test_on_postgres_a_batch_of_read_audit_records_is_one_insert_in_autocommit_on_a_kept_connection(
    postgres_sessions: Sessions,
) -> None:
    """The usual batch: all its rows in one statement, which is a transaction of its own (no BEGIN, no COMMIT),
    on a connection the loop keeps for the next batch while the app serves (before, it gives it back); no thread."""
    loop = loop_of(postgres_sessions)
    writer = BatchWriter(postgres_sessions, loop=loop)
    writing = loop.engines[1].sync_engine
    sent: list[str] = []
    began: list[object] = []
    event.listen(writing, "before_cursor_execute", lambda *given: sent.append(given[2]))
    event.listen(writing, "begin", began.append)

    async def run() -> list[int]:
        await writer.written([audited("before")])
        before = loop.kept()
        loop.start()
        await asyncio.gather(*(writer.written([audited(f"a{n}")]) for n in range(5)))  # queued before it runs
        await writer.written([audited("alone")])
        return [before, loop.kept()]

    try:
        kept = asyncio.run(run())
    finally:
        asyncio.run(loop.dispose())
    assert sorted(actions(postgres_sessions)) == ["a0", "a1", "a2", "a3", "a4", "alone", "before"]
    assert all(s.startswith("INSERT INTO audit_log") for s in sent) and not began
    assert [s.count("%(at_m") for s in sent] == [1, 5, 1]  # the rows of each batch, in one VALUES list
    assert kept == [0, 1] and not writer.running


def test_on_postgres_a_failing_row_of_an_insert_at_once_writes_none_of_its_rows_and_each_goes_again_alone(
    postgres_sessions: Sessions,
) -> None:
    """One statement: all of its rows or none. So when one fails, the thread's retry of each job on its own
    writes every good record once, with no duplicate, and fails only the bad one."""
    loop = loop_of(postgres_sessions)
    writer = BatchWriter(postgres_sessions, loop=loop)

    async def run() -> list[BaseException | None]:
        jobs = [writer.written([audited(action)]) for action in ("good1", "far too long for the column", "good2")]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    try:
        outcomes = asyncio.run(run())
    finally:
        asyncio.run(loop.dispose())
    assert outcomes[0] is None and outcomes[2] is None and "too long" in str(outcomes[1])
    assert sorted(actions(postgres_sessions)) == ["good1", "good2"]
