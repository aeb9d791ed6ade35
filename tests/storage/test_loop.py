"""The event loop's sessions: on PostgreSQL a read waits for the database without holding up the loop, and is as
read-only as a thread's; on an SQLite file the reads share one connection the loop keeps, and the batch writer's audit
records another; in memory there are none."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Mapping

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from dust.embedded import Dust
from dust.storage.db import (
    BUSY_SECONDS,
    WAL_AUTOCHECKPOINT,
    Append,
    driver_rows,
    is_read_only,
    make_engine,
    make_sessionmaker,
    statement_connection,
)
from dust.storage.loop import LoopSessions, for_all, lent, loop_sessions
from dust.storage.models import utcnow
from dust.storage.repositories import audit as audit_repo
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import epochs
from tests.storage.conftest import terminate, ticks_until


def for_engine(engine: Engine) -> LoopSessions | None:
    return loop_sessions(engine, make_sessionmaker(engine, read_only=True), make_sessionmaker(engine))


def on_the_loop(loop: LoopSessions, work: Callable[[Session], object]) -> object:
    """``work`` in a read session of ``loop``, run as a request on the event loop runs it; then the engines go."""

    def read() -> object:
        with loop.reads() as session, session.begin():
            return work(session)

    async def run() -> object:
        try:
            return await loop.run(read)
        finally:
            await loop.dispose()

    return asyncio.run(run())


def test_on_postgres_a_read_waits_for_the_database_while_the_loop_goes_on(postgres: Engine) -> None:
    loop = for_engine(postgres)
    assert loop is not None and loop.over_network
    done = threading.Event()

    def read() -> object:
        with loop.reads() as session, session.begin():
            return session.execute(text("SELECT pg_sleep(0.3), 42")).one()[1]

    async def run() -> tuple[object, int, str]:
        ticking = asyncio.ensure_future(ticks_until(done))
        answer = await loop.run(read)
        done.set()
        ticks = await ticking
        await loop.dispose()
        return answer, ticks, threading.current_thread().name

    answer, ticks, thread = asyncio.run(run())
    assert answer == 42
    assert ticks >= 15, "the loop was held up while PostgreSQL slept"
    assert thread == threading.main_thread().name


def test_on_postgres_the_loops_reads_are_read_only_and_refuse_any_write(postgres: Engine) -> None:
    loop = for_engine(postgres)
    assert loop is not None
    with pytest.raises(InternalError, match="read-only transaction"):
        on_the_loop(loop, lambda session: session.execute(text("CREATE TABLE written_by_a_read (n int)")))
    assert is_read_only(loop.reads())
    assert not is_read_only(loop.writes())


def test_on_postgres_a_lent_read_sends_to_the_driver_without_a_transaction_and_its_connection_is_kept(
    postgres: Engine,
) -> None:
    """A loop read is lent one connection for its whole length (``lent``): its statements on the driver run on
    it in autocommit, with the session's transaction never begun unless a statement goes through the session,
    which then runs on the same connection. The connection is kept for the next read, after a failure too, and
    goes back to the pool when the loop's sessions are disposed of."""
    loop = for_engine(postgres)
    assert loop is not None
    pool = loop.engines[0].sync_engine.pool

    def read(fail: bool) -> tuple[bool, object, object, int]:
        with lent(loop.reads()) as session:
            epochs.read(session)
            began = session.in_transaction()
            driver = statement_connection(session).connection.driver_connection
            through = session.connection().connection.driver_connection
            if fail:
                session.execute(text("SELECT * FROM missing"))
            return began, driver, through, pool.checkedout()  # type: ignore[attr-defined]

    async def run() -> tuple[tuple[bool, object, object, int], tuple[bool, object, object, int], int]:
        loop.start()
        try:
            first = await loop.run(read, False)
            with pytest.raises(ProgrammingError, match="missing"):
                await loop.run(read, True)
            second = await loop.run(read, False)
            return first, second, pool.checkedout()  # type: ignore[attr-defined]
        finally:
            await loop.dispose()

    (began, driver, through, during), second, kept = asyncio.run(run())
    assert not began and driver is through and during == 1
    assert second[1] is driver and kept == 1  # the same connection, kept between reads, through a failure too
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


def test_on_postgres_before_start_and_after_dispose_a_read_gives_its_connection_back(postgres: Engine) -> None:
    """An app used without its lifespan (a test client never opened) never disposes of its loop's sessions, so
    they keep nothing then: each read's connection goes back to the pool."""
    loop = for_engine(postgres)
    assert loop is not None
    pool = loop.engines[0].sync_engine.pool

    def read() -> int:
        with lent(loop.reads()) as session:
            epochs.read(session)
        return pool.checkedout()  # type: ignore[no-any-return, attr-defined]

    async def run() -> list[int]:
        try:
            before = await loop.run(read)
            loop.start()
            during = await loop.run(read)
            await loop.dispose()
            return [before, during, await loop.run(read)]
        finally:
            await loop.dispose()

    assert asyncio.run(run()) == [0, 1, 0]


def test_on_postgres_a_kept_connection_the_server_closed_is_replaced_and_reads_at_once_hold_one_each(
    postgres: Engine,
) -> None:
    loop = for_engine(postgres)
    assert loop is not None
    pool = loop.engines[0].sync_engine.pool

    def pid(sleep: float = 0) -> int:
        with lent(loop.reads()) as session:
            return int(session.execute(text("SELECT pg_backend_pid(), pg_sleep(:s)"), {"s": sleep}).one()[0])

    async def run() -> tuple[int, int, list[int], int]:
        loop.start()
        try:
            first = await loop.run(pid)
            terminate(postgres, first)
            second = await loop.run(pid)  # on another connection, without an error
            together = await asyncio.gather(*(loop.run(pid, 0.2) for _ in range(3)))
            return first, second, together, pool.checkedout()  # type: ignore[attr-defined]
        finally:
            await loop.dispose()

    first, second, together, kept = asyncio.run(run())
    assert second != first
    assert len(set(together)) == 3 and second in together and kept == 3
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


def test_on_postgres_a_read_cancelled_mid_statement_leaves_no_busy_connection_for_the_next(postgres: Engine) -> None:
    """A read whose request went away while PostgreSQL worked on its statement (cancelled) does not keep its
    connection, which still has that statement running: the next read gets one that answers at once."""
    loop = for_engine(postgres)
    assert loop is not None

    def query(sql: str) -> object:
        with lent(loop.reads()) as session:
            return session.execute(text(sql)).scalar_one()

    async def run() -> tuple[object, object, float]:
        loop.start()
        try:
            first = await loop.run(query, "SELECT pg_backend_pid()")
            slow = asyncio.ensure_future(loop.run(query, "SELECT pg_sleep(1.5)::text"))
            await asyncio.sleep(0.3)
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            started = time.monotonic()
            second = await loop.run(query, "SELECT pg_backend_pid()")
            return first, second, time.monotonic() - started
        finally:
            await loop.dispose()

    first, second, took = asyncio.run(run())
    assert isinstance(second, int) and took < 1.0, "the next read waited for the cancelled statement"
    assert second != first  # the cancelled read's connection was not kept


def test_on_postgres_a_cancelled_reads_session_is_not_given_to_another(postgres: Engine) -> None:
    """Sessions come back for later reads only from a read that ended (``_Spares``): one whose request went away
    mid-statement may be left in any state."""
    loop = for_engine(postgres)
    assert loop is not None
    made: list[Session] = []

    def query(sql: str) -> object:
        with lent(loop.reads()) as session:
            made.append(session)
            return session.execute(text(sql)).scalar_one()

    async def run() -> None:
        loop.start()
        try:
            await loop.run(query, "SELECT 1")
            slow = asyncio.ensure_future(loop.run(query, "SELECT pg_sleep(1.5)::text"))
            await asyncio.sleep(0.3)
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            assert await loop.run(query, "SELECT 2") == 2
            assert await loop.run(query, "SELECT 3") == 3
        finally:
            await loop.dispose()

    asyncio.run(run())
    first, cancelled, after, again = made
    assert cancelled is first, "the first read's session was not given to the next"
    assert after is not cancelled and again is after


@pytest.mark.parametrize("fail", [False, True], ids=["ended", "failed"])
def test_a_loop_reads_session_comes_to_the_next_read_as_a_new_one(
    sqlite_database: str, postgres: Engine, fail: bool
) -> None:
    """The loop keeps its read sessions for later reads, after a read that ended or failed; the next read gets
    the session closed (no transaction, nothing in it) with nothing of the last read's in ``info`` (where its
    principal and what it read along are kept): read-only, as the sessionmaker made it."""
    sqlite = make_engine(sqlite_database)
    for engine in (sqlite, postgres):
        (first, made), (second, given) = two_reads(engine, fail)
        assert second is first, "a read's session was not given to the next"
        assert given == made and "left" not in given and is_read_only(second)
        assert not second.in_transaction() and not list(second)
        assert isinstance(second.bind, Engine)  # given back: no connection of the last read's
    sqlite.dispose()


def two_reads(engine: Engine, fail: bool) -> list[tuple[Session, dict[object, object]]]:
    """The sessions of two reads on the loop, one after the other, each with its ``info`` as the read found it;
    the first leaves something in ``info`` and reads through its transaction, then fails if ``fail``."""
    loop = for_engine(engine)
    assert loop is not None
    seen: list[tuple[Session, dict[object, object]]] = []

    def read(first: bool) -> object:
        with lent(loop.reads()) as session:
            seen.append((session, dict(session.info)))
            value = session.execute(text("SELECT 7")).scalar_one()
            if first:
                session.info["left"] = "the first read's"
                entity_repo.get(session, uuid.uuid4())
                if fail:
                    session.execute(text("SELECT * FROM missing"))
            return value

    async def run() -> object:
        loop.start()
        try:
            with contextlib.suppress(OperationalError, ProgrammingError):
                await loop.run(read, True)
            return await loop.run(read, False)
        finally:
            await loop.dispose()

    assert asyncio.run(run()) == 7
    return seen


# The values of the keys asked, as when sent, answered 0.3 s later: a run the other reads ask behind
SLOW_PROBE = "SELECT k, v FROM shared_probe, pg_sleep(0.3) WHERE k = ANY(%(keys)s)"


def probe_reads(postgres: Engine) -> tuple[LoopSessions, Callable[[int], object]]:
    """The loop's sessions on ``postgres``, and a read of one key's value in ``SLOW_PROBE`` through ``for_all``
    (None for a key with none); the probe holds 10 for key 1 and 20 for key 2."""
    with postgres.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS shared_probe"))
        conn.execute(text("CREATE TABLE shared_probe (k int, v int)"))
        conn.execute(text("INSERT INTO shared_probe VALUES (1, 10), (2, 20)"))
    loop = for_engine(postgres)
    assert loop is not None

    def read(key: int) -> object:
        with lent(loop.reads()) as session:
            connection = statement_connection(session)

            def send(keys: list[Hashable]) -> dict[Hashable, object]:
                found = dict(driver_rows(connection, SLOW_PROBE, {"keys": keys}))
                return {key: found.get(key) for key in keys}

            return for_all(session, SLOW_PROBE, key, send)

    return loop, read


def test_on_postgres_reads_that_ask_while_a_run_is_out_share_the_next_which_sees_what_was_committed_before(
    postgres: Engine,
) -> None:
    """``for_all`` (the epochs every signed-in request reads, an entity's or a tensor's row with them): a read that
    asks while a run is out does not take that run's answer, which may predate a change committed before it asked
    (a revoked token), but waits for the next run, sent once that one is answered, for the keys of every read that
    asked meanwhile; each gets its own key's answer."""
    loop, read = probe_reads(postgres)
    sent: list[str] = []
    event.listen(loop.engines[0].sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))

    def change() -> None:
        with postgres.begin() as conn:
            conn.execute(text("UPDATE shared_probe SET v = v + 1"))

    async def run() -> list[object]:
        loop.start()
        try:
            first = asyncio.ensure_future(loop.run(read, 1))
            await asyncio.sleep(0.1)  # first's run is out, its snapshot taken
            await asyncio.to_thread(change)  # committed before the next three ask
            later = [asyncio.ensure_future(loop.run(read, key)) for key in (2, 1, 3)]
            return await asyncio.gather(first, *later)
        finally:
            await loop.dispose()

    assert asyncio.run(run()) == [10, 21, 11, None]
    assert sent.count(SLOW_PROBE) == 2  # the later three shared one run


def test_on_postgres_when_the_read_that_was_to_send_the_next_run_is_cancelled_the_others_send_their_own(
    postgres: Engine,
) -> None:
    loop, read = probe_reads(postgres)

    async def run() -> list[object]:
        loop.start()
        try:
            first = asyncio.ensure_future(loop.run(read, 1))
            await asyncio.sleep(0.1)
            sender = asyncio.ensure_future(loop.run(read, 2))  # waits for first's answer, to send the next run
            await asyncio.sleep(0.05)
            joined = asyncio.ensure_future(loop.run(read, 2))  # waits for sender's run
            await asyncio.sleep(0.05)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            return list(await asyncio.wait_for(asyncio.gather(first, joined), timeout=5))
        finally:
            await loop.dispose()

    assert asyncio.run(run()) == [10, 20]


def test_on_postgres_rows_read_with_the_epochs_at_once_share_one_statement_each_read_its_own_row(
    postgres: Engine,
) -> None:
    """``Copies.with_epochs`` on the loop: reads of several ids that asked while a run was out share one
    statement for all their ids; each gets its own row (none for an id that has none) and the epochs."""
    with Dust(postgres.url.render_as_string(hide_password=False), migrate=False) as db:
        jane, john = (db.create_entity(kind="person", name=name).id for name in ("Jane", "John"))
    with postgres.connect() as conn, Session(conn) as session:
        current = epochs.read(session)
    loop = for_engine(postgres)
    assert loop is not None
    sent: list[str] = []

    def read(key: uuid.UUID) -> tuple[Mapping[str, int], str | None]:
        with lent(loop.reads()) as session:
            along = entity_repo.peek.with_epochs(session, key)
            copy = entity_repo.peek(session, key)
            return along, None if copy is None else copy.name

    async def run() -> list[tuple[Mapping[str, int], str | None]]:
        loop.start()
        try:
            await asyncio.gather(*(loop.run(read, jane) for _ in range(3)))  # connections kept: none to open now
            event.listen(loop.engines[0].sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
            # The first sends its own at once; the others ask while it is out and share the next
            return await asyncio.gather(*(loop.run(read, key) for key in (jane, john, uuid.uuid4())))
        finally:
            await loop.dispose()

    assert asyncio.run(run()) == [(current, "Jane"), (current, "John"), (current, None)]
    assert len(sent) == 2 and "ANY" in sent[1]


def test_on_postgres_the_urls_own_options_are_kept(
    postgres_database: str, empty_database: Callable[[str], None]
) -> None:
    empty_database(postgres_database)
    engine = make_engine(postgres_database + "?options=-c%20statement_timeout%3D12345")
    loop = for_engine(engine)
    assert loop is not None

    def settings(session: Session) -> object:
        return [
            session.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("statement_timeout", "transaction_read_only")
        ]

    assert on_the_loop(loop, settings) == ["12345ms", "on"]
    engine.dispose()


def test_on_an_sqlite_file_the_loop_reads_on_one_connection_it_keeps_and_in_memory_none(
    sqlite_database: str,
) -> None:
    engine = make_engine(sqlite_database)
    reads, writes = make_sessionmaker(engine, read_only=True), make_sessionmaker(engine)
    loop = loop_sessions(engine, reads, writes)
    assert loop is not None and (loop.writes, loop.engines) == (writes, ())
    assert asyncio.run(loop.run(threading.current_thread)) is threading.current_thread()
    with writes() as session, session.begin():
        session.execute(text("CREATE TABLE counts (n int)"))

    def read() -> tuple[object, int]:
        with loop.reads() as session, session.begin():
            return session.connection().connection.dbapi_connection, session.execute(
                text("SELECT count(*) FROM counts")
            ).scalar_one()

    first, none = read()
    with writes() as session, session.begin():
        session.execute(text("INSERT INTO counts VALUES (1)"))
    second, one = read()
    assert first is second, "each read took a connection of its own"
    assert (none, one) == (0, 1), "a read saw the database as of an earlier read: its transaction was kept open"
    assert is_read_only(loop.reads())
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    asyncio.run(loop.dispose())
    assert engine.pool.checkedout() == 0, "the loop kept its connection after it was disposed"  # type: ignore[attr-defined]
    engine.dispose()
    assert for_engine(make_engine("sqlite://")) is None


def test_on_an_sqlite_file_a_failed_read_leaves_the_loops_connection_ready_for_the_next(sqlite_database: str) -> None:
    engine = make_engine(sqlite_database)
    loop = for_engine(engine)
    assert loop is not None

    def read(sql: str) -> tuple[object, object]:
        with loop.reads() as session, session.begin():
            return session.connection().connection.dbapi_connection, session.execute(text(sql)).scalar_one()

    held, _ = read("SELECT 1")
    with pytest.raises(OperationalError, match="no such table"):
        read("SELECT * FROM missing")
    assert read("SELECT 42") == (held, 42)
    asyncio.run(loop.dispose())
    engine.dispose()


def test_on_an_sqlite_file_a_statement_on_the_driver_needs_no_transaction(sqlite_database: str) -> None:
    """The loop's reads run their first statements (the epochs, an entity's row) on the connection they hold, each a
    snapshot of its own: a read the caches answer otherwise is that one statement, with no BEGIN and no COMMIT.
    A statement through the session then begins its read-only transaction, on the same connection."""
    engine = make_engine(sqlite_database)
    loop = for_engine(engine)
    assert loop is not None
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))

    def read() -> tuple[bool, list[str], bool]:
        with loop.reads() as session:
            epochs.read(session)
            before = session.in_transaction(), list(statements)
            session.execute(text("SELECT 1"))
            return *before, session.in_transaction()

    began, first, after = asyncio.run(loop.run(read))
    assert (began, after) == (False, True)
    assert len(first) == 1 and "cache_epochs" in first[0]
    assert statements[1:] == ["BEGIN", "SELECT 1"]
    asyncio.run(loop.dispose())
    engine.dispose()


def test_on_an_sqlite_file_the_loops_audit_records_commit_on_one_connection_it_keeps(sqlite_database: str) -> None:
    """The batch writer's usual batch on the loop (``HeldAppends``): no SQLAlchemy transaction, the connection kept
    from batch to batch; a batch that fails leaves nothing behind and the turn to write free; once closed, the
    connection goes back to the pool set up as the others are (it waits for the lock, and checkpoints)."""
    engine = make_engine(sqlite_database)
    loop = for_engine(engine)
    assert loop is not None and loop.appends is not None
    checkouts: list[int] = []
    begun: list[int] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    event.listen(engine, "begin", lambda *_: begun.append(1))
    count = text("SELECT count(*) FROM audit_log WHERE resource = 'held'")

    def batch(*actions: str | None) -> Append:
        return audit_repo.appending([{"at": utcnow(), "action": action, "resource": "held"} for action in actions])

    assert loop.appends([batch("a1", "a2")]) and loop.appends([batch("a3")])
    with pytest.raises(IntegrityError):
        loop.appends([batch("a4", None)])  # action is NOT NULL: the whole batch is undone
    assert loop.appends([batch("a5")])
    assert (len(checkouts), begun) == (1, []), "one connection, kept; no SQLAlchemy transaction"
    engine.dispose()  # a new pool for the engine (an app's lifespan ends so): this process's turns go with it
    assert loop.appends([batch("a6")])
    with make_sessionmaker(engine).begin() as session:  # a thread's writer gets the turn: the failure gave it back
        assert session.scalar(count) == 5
    connection = loop.appends._held()  # the connection about to go back to the pool
    raw = connection.connection.driver_connection
    asyncio.run(loop.dispose())
    assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_SECONDS * 1000
    assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT
    engine.dispose()
