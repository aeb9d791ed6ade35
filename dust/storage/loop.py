"""Sessions for the event loop: database work a request does on the loop itself, with no trip to a thread.

A trip to the thread pool costs more CPU than a small read: the database driver lets go of the GIL at every
statement, and a worker thread then queues for it again behind the loop and the other workers (bench/serve.py:
on PostgreSQL, ``/auth/me`` answered 551 requests a second through the pool and 1,230 on the loop). Yet the loop
serves every connection, so nothing on it may wait:

- **SQLite file**: the database works in this process, so a read is CPU and never waits. The loop runs one read
  at a time, start to end, so its reads share one connection that it keeps (``HeldReads``): taking one from the
  pool and giving it back cost more than a small read's queries (a seventh of ``/auth/me``, bench/request_cpu.py).
  The statements a read sends to the driver itself (the epochs, an entity's or a tensor's row:
  ``dust.storage.db.statement_connection``) run on that connection before any transaction, each a snapshot of
  its own, as PostgreSQL's reads below are in autocommit; a statement through the session then begins its
  transaction, which sees at least what they saw.
  Its writes (the batch writer's) begin only if the write lock is free that moment (``NO_WAIT``, dust.storage.db);
  otherwise they are handed to a thread. A batch of audit records only, the usual one, goes to a connection it
  keeps for them, on the driver (``HeldAppends``); any other, through the app's own sessions.
- **PostgreSQL**: a statement waits on the network. The loop's sessions are on SQLAlchemy's asyncio engine (the
  psycopg driver in its async mode), and ``run`` runs the same plain functions the threads run in a greenlet:
  at each statement the greenlet yields to the loop until PostgreSQL answers, and the loop serves the others
  meanwhile. Each read is lent one connection for its whole length (``LentReads``). The reads are in
  autocommit, which saves the BEGIN and COMMIT round trips and sees what a READ COMMITTED transaction sees (each
  statement its own snapshot); the server refuses any write in them (``default_transaction_read_only``), as it
  does in the threads' read-only transactions. The epochs, which every signed-in read sends first and alike, are
  sent once for all the reads that asked for them before they were sent, and so is an entity's or a tensor's row
  with them, for the keys of all those reads at once (``LentReads.for_all``).
- **SQLite in memory**: none (its pool gives each thread a database of its own).

Only a small, bounded read belongs on the loop (dust.api.deps.on_the_loop): its CPU delays every other request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import await_only, greenlet_spawn

from dust.storage.db import (
    BUSY_SECONDS,
    HELD,
    POOL_SIZE,
    READ_ONLY,
    WAL_AUTOCHECKPOINT,
    Append,
    driver_insert,
    driver_insert_at_once,
    driver_row,
    driver_takes,
    idle,
    replace_closed_connections,
    still_open,
    write_now,
)

T = TypeVar("T")
Send = Callable[[list[Hashable]], Mapping[Hashable, Any]]  # a shared run (for_all): the answers for these keys
_LENDER = "dust.lender"  # session.info: the LentReads that lends a connection to its session
_SPARES = "dust.spares"  # session.info: the _Spares that made the session, to which ``lent`` gives it back
# PostgreSQL connections of the loop's pools, beside the app's (dust.storage.db.POOL_SIZE, for the thread pool):
# its small reads may hold this many at once, and more wait for one rather than open another; its batch writer
# commits one batch at a time (dust.storage.writer), so one and a spare.
READ_POOL = POOL_SIZE // 2
WRITE_POOL = 1


class _Spares:
    """The loop's read sessions, each given back once ``lent`` has closed it and handed out again for a later read.

    Making a Session (its state, then its event dispatch, made at its first use) cost ~25 µs of the loop's CPU a
    read, more than an entity's row from SQLite (py-spy, in process). A closed session is as good as a new one
    (SQLAlchemy's ``close`` ends its transaction and empties it) but for its ``info`` and its bind, set back here
    to what the sessionmaker gave it (``READ_ONLY``; the engine): nothing of one read (its principal, its caches,
    the rows it read along, its connection) reaches the next."""

    MOST = 64  # kept at most: as many reads as run at once, under load

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._spare: list[Session] = []

    def _session(self) -> Session:
        session = self._spare.pop() if self._spare else self._sessions()
        session.info[_SPARES] = self
        return session

    def give_back(self, session: Session) -> None:
        """``session``, closed by ``lent``, for a later read."""
        session.info.clear()
        session.info.update(self._sessions.kw.get("info") or {})
        session.bind = self._sessions.kw["bind"]
        if len(self._spare) < self.MOST:
            self._spare.append(session)


class HeldReads(_Spares):
    """Read sessions (made like ``sessions`` makes them) on one connection, taken from its pool at the first and
    kept until ``close``: for SQLite reads run on the loop, one at a time, each to its end. Each session's
    transaction is its own (begun and ended on the connection); between two, the connection is outside any."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self._connection: Connection | None = None

    def __call__(self) -> Session:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self.close()
            self._connection = self._sessions.kw["bind"].connect()
        session = self._session()
        session.bind = session.info[HELD] = self._connection
        return session

    def __len__(self) -> int:
        """The connections it keeps now: its one, once taken (idle but for the moments a read runs on it)."""
        return int(self._connection is not None)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class HeldAppends:
    """The batch writer's commits on the loop of a batch of ``Append`` writes (audit records: the usual batch), on
    SQLite, on one connection taken from the engine's pool at the first and kept until ``close``. Set never to
    wait for the write lock (nothing on the loop may wait: a batch that finds it taken goes to the writer's
    thread) and never to checkpoint the WAL at a commit (5-16 ms; the writer's thread checkpoints instead). Begun,
    inserted and committed on the driver (``dust.storage.db.write_now``): taking a connection, SQLAlchemy's
    transaction and the PRAGMAs that set up each commit cost three times SQLite's own work for a batch of one
    (bench/request_cpu.py)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __call__(self, appends: list[Append]) -> bool:
        """Commit ``appends`` in one transaction if the write lock is free this moment, else raise WriteLockBusy;
        False, and nothing done, if the driver cannot take them all (``dust.storage.db.driver_takes``)."""
        connection = self._held()
        if not all(driver_takes(connection, append.statement, append.rows) for append in appends):
            return False
        with write_now(connection):
            for append in appends:
                driver_insert(connection, append.statement, append.rows)
        return True

    def _held(self) -> Connection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self.close()
            self._connection = self._engine.connect()
            for pragma in ("busy_timeout=0", "wal_autocheckpoint=0"):
                driver_row(self._connection, f"PRAGMA {pragma}")
        return self._connection

    def __len__(self) -> int:
        """The connections it keeps now (between commits, idle): its one, once taken."""
        return int(self._connection is not None)

    def close(self) -> None:
        """Give the connection back to the pool, set up as its other connections are."""
        if self._connection is not None:
            with suppress(DBAPIError):  # closed under it: the pool replaces it anyway
                for pragma in (f"busy_timeout={BUSY_SECONDS * 1000}", f"wal_autocheckpoint={WAL_AUTOCHECKPOINT}"):
                    driver_row(self._connection, f"PRAGMA {pragma}")
            self._connection.close()
            self._connection = None


class AppendsAtOnce:
    """The batch writer's commits on the loop of a batch of ``Append`` writes to one statement (audit records: the
    usual batch), on PostgreSQL: one INSERT of all the rows (``dust.storage.db.driver_insert_at_once``) in
    autocommit, where a statement is a transaction of its own (all its rows or none, committed as COMMIT commits
    them), on a connection kept between batches. A transaction took three round trips (BEGIN, the INSERT, COMMIT)
    and SQLAlchemy's bookkeeping for it: with 16 requests at once an audited read on PostgreSQL spent ~100 µs of
    the loop's CPU on its record's commit, as much as on the rest of an entity get (py-spy, in process).

    The connection is kept only from ``start`` to ``close`` (the app's lifespan), as ``LentReads`` keeps theirs;
    before, each batch gives it back."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._keep = False  # until start

    def start(self) -> None:
        """Keep the connection between batches from now until ``close``."""
        self._keep = True

    def __call__(self, appends: list[Append]) -> bool:
        """Commit ``appends`` if they are one statement's rows that the driver takes in one statement; False, and
        nothing done, otherwise. Run in the loop's greenlet."""
        if len(appends) != 1:
            return False
        connection = self._held()
        try:
            return driver_insert_at_once(connection, appends[0].statement, appends[0].rows)
        except BaseException:
            self._give_back()  # in whatever state it was left: the pool resets it, or replaces it
            raise
        finally:
            if not self._keep:
                self._give_back()

    def _held(self) -> Connection:
        if self._connection is not None and not still_open(self._connection):
            self._give_back()
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def __len__(self) -> int:
        """The connections it keeps now (between commits, idle): its one, once taken."""
        return int(self._connection is not None)

    def close(self) -> None:
        """Give the connection back, and keep none from now (in the loop's greenlet)."""
        self._keep = False
        self._give_back()

    def _give_back(self) -> None:
        """To the pool, which sets it up again as its others (or replaces it)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


@dataclass
class _Runs:
    """The runs of one statement shared by the loop's reads (``LentReads.for_all``)."""

    sent: asyncio.Future[Mapping[Hashable, Any] | None] | None = None  # the run out, not yet answered
    next: asyncio.Future[Mapping[Hashable, Any] | None] | None = None  # the run to send once it is answered
    keys: dict[Hashable, None] = field(default_factory=dict)  # what the reads waiting for ``next`` asked of it


class LentReads(_Spares):
    """Read sessions (made like ``sessions`` makes them), each lent a connection of its own for the whole read
    (``lent``): for PostgreSQL reads on the loop, in autocommit. The statements a read sends to the driver itself
    then run on that connection without the session beginning a transaction, whose bookkeeping (taking the
    connection through it, committing, closing) cost a tenth of ``/auth/me``'s CPU (bench/request_cpu.py).

    A read's connection comes back here, not to the pool, and the next read takes it again: the pool's checkout
    and return (its events, its queue, a rollback to reset the connection) cost more of the loop's CPU than the
    read's one query (bench/request_cpu.py: ``/auth/me`` ~400-580 → ~330 µs). Up to ``keep`` are kept, each only
    if it can take the next statement at once (``dust.storage.db.idle``: open, no transaction, no statement left
    running), its socket looked at when it is taken again (``still_open``: whether the server closed it since);
    any other goes back to the pool, which resets it or replaces it. A read that was cancelled (its client went
    away) gives its connection back to the pool.

    They are kept only from ``start`` to ``close`` (the app's lifespan): an app used without one (a test client
    that never opened it) has nobody to give them back."""

    def __init__(self, sessions: sessionmaker[Session], keep: int) -> None:
        super().__init__(sessions)
        self._engine: Engine = sessions.kw["bind"]
        self._idle: list[Connection] = []
        self._most = keep
        self._keep = 0  # until start
        self._runs: dict[Hashable, _Runs] = {}

    def start(self) -> None:
        """Keep connections between reads from now until ``close``."""
        self._keep = self._most

    def __call__(self) -> Session:
        session = self._session()
        session.info[_LENDER] = self
        return session

    @contextmanager
    def lend(self) -> Iterator[Connection]:
        """A connection for one read, on the loop (in its greenlet): the last one given back, or the pool's."""
        connection = self._take()
        ended = False  # the read returned or raised an error, rather than being cancelled
        try:
            yield connection
            ended = True
        except Exception:
            ended = True
            raise
        finally:
            if ended and len(self._idle) < self._keep and idle(connection):  # its socket is looked at when lent
                self._idle.append(connection)
            else:
                connection.close()  # to the pool, which resets it (or replaces it, if invalidated)

    def _take(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if still_open(connection):
                return connection
            if not connection.invalidated:
                connection.invalidate()  # the server closed it: the pool opens another in its place
            connection.close()
        return self._engine.connect()

    def for_all(self, what: Hashable, key: Hashable, send: Send) -> Any:
        """``send([key])[key]``, ``send`` running a statement on this read's connection (in its greenlet) whose
        answer depends only on when it is sent and on the keys asked (the epochs, which every signed-in request
        reads first; an entity's or a tensor's row with them); ``what`` names the statement. One run answers
        every read that asked for ``what`` before it was sent, for all their keys at once.

        A read that asks while a run is out does not take that run's answer, which may predate a change committed
        before the read asked (a token revoked, a row changed): it waits for the next run, sent as soon as that
        one is answered, for its key and those of every read that asks until then. A read that finds no run out
        sends its own at once. If a shared run fails, its sender raises the error and the others send their own.

        Under 16 connections the loop so sends one statement for several requests, not one each: on PostgreSQL
        (bench/serve.py) ``/auth/me`` 49% → 63% of the bare route's req/s."""
        runs = self._runs.get(what) or self._runs.setdefault(what, _Runs())
        while runs.next is not None:  # not sent yet: sent after this read asked
            runs.keys[key] = None
            answers = await_only(asyncio.shield(runs.next))
            if answers is not None:
                return answers[key]
        mine: asyncio.Future[Mapping[Hashable, Any] | None] = asyncio.get_running_loop().create_future()
        keys = [key]
        if runs.sent is not None:
            runs.next, runs.keys = mine, {key: None}
            try:
                await_only(asyncio.wait([runs.sent]))  # the run out now was sent before this read asked
            except BaseException:
                runs.next, runs.keys = None, {}
                mine.set_result(None)  # those waiting send their own
                raise
            keys, runs.next, runs.keys = list(runs.keys), None, {}
        runs.sent = mine
        answers = None
        try:
            answers = send(keys)
            return answers[key]
        finally:
            runs.sent = None
            mine.set_result(answers)

    def __len__(self) -> int:
        """How many connections it keeps now, idle between reads."""
        return len(self._idle)

    def close(self) -> None:
        """Give every kept connection back to the pool, and keep none from now (on the loop, in its greenlet)."""
        self._keep = 0
        while self._idle:
            self._idle.pop().close()


def for_all(session: Session, what: Hashable, key: Hashable, send: Send) -> Any:
    """``send([key])[key]``, the run shared with other reads on the loop if ``session`` is a ``LentReads`` read
    (``LentReads.for_all``): ``send(keys)`` must give the answer for each of ``keys``, the same for every read
    that asks for ``what`` at that moment."""
    lender: LentReads | None = session.info.get(_LENDER)
    if lender is None:
        return send([key])[key]
    return lender.for_all(what, key, send)


@contextmanager
def lent(session: Session) -> Iterator[Session]:
    """``session`` (a loop read's) for the block, closed after it and given back for a later read (``_Spares``);
    with a connection lent for the block if it is a ``LentReads`` session, the session bound to it."""
    lender: LentReads | None = session.info.get(_LENDER)
    spares: _Spares | None = session.info.get(_SPARES)
    ended = False  # the block returned or raised an error, rather than being cancelled
    try:
        with lender.lend() if lender is not None and HELD not in session.info else nullcontext() as connection:
            if connection is not None:
                session.bind = session.info[HELD] = connection
            with session:
                yield session
                ended = True
    except Exception:
        ended = True
        raise
    finally:
        if ended and spares is not None:
            spares.give_back(session)


@dataclass(frozen=True)
class LoopSessions:
    """``reads`` and ``writes`` (the batch writer's), to be used only inside ``run``."""

    reads: Callable[[], Session]
    writes: sessionmaker[Session]
    engines: tuple[AsyncEngine, ...] = ()  # engines of its own (PostgreSQL), to watch and to dispose
    appends: HeldAppends | AppendsAtOnce | None = None  # the batch writer's commits of Appends only

    @property
    def over_network(self) -> bool:
        """Whether its statements wait on the network (PostgreSQL), so that ``run`` awaits them; on SQLite they
        are CPU in this process, and nothing ``run`` runs may wait (for the write lock, say)."""
        return bool(self.engines)

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``work(*args, **kwargs)`` on the loop: at once on SQLite; on PostgreSQL, in a greenlet that yields to
        the loop whenever it waits for the database."""
        if not self.over_network:
            return work(*args, **kwargs)
        return await greenlet_spawn(work, *args, **kwargs)

    def kept(self) -> int:
        """How many connections it keeps out of their pools, idle between one read (or commit) and the next."""
        held = [self.reads, self.appends]
        keepers = HeldReads | LentReads | HeldAppends | AppendsAtOnce
        return sum(len(keeper) for keeper in held if isinstance(keeper, keepers))

    def start(self) -> None:
        """The app serves: its reads and commits may keep connections between them until ``dispose``
        (``LentReads``, ``AppendsAtOnce``)."""
        if isinstance(self.reads, LentReads):
            self.reads.start()
        if isinstance(self.appends, AppendsAtOnce):
            self.appends.start()

    async def dispose(self) -> None:
        if isinstance(self.reads, HeldReads):
            self.reads.close()
        if isinstance(self.reads, LentReads):
            await greenlet_spawn(self.reads.close)
        if self.appends is not None:
            await self.run(self.appends.close)
        for engine in self.engines:
            await engine.dispose()


def loop_sessions(engine: Engine, reads: sessionmaker[Session], writes: sessionmaker[Session]) -> LoopSessions | None:
    """The loop's sessions for the app on ``engine`` (whose thread sessions are ``reads`` and ``writes``, fully
    configured: the loop's are made like them), or None if nothing may run on the loop with that database."""
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            return None
        return LoopSessions(HeldReads(reads), writes, appends=HeldAppends(engine))
    if engine.dialect.name != "postgresql":
        return None
    url = engine.url.set(drivername="postgresql+psycopg_async")
    given = url.query.get("options") or ()  # the URL's own ?options=…, kept
    options = " ".join([*([given] if isinstance(given, str) else given), "-c default_transaction_read_only=on"])
    reading = create_async_engine(
        url.difference_update_query(["options"]),
        pool_size=READ_POOL,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": options},
    )
    writing = create_async_engine(url, pool_size=WRITE_POOL, max_overflow=WRITE_POOL)
    for made in (reading, writing):
        replace_closed_connections(made)
    return LoopSessions(
        reads=LentReads(_like(reads, reading.sync_engine.execution_options(**{READ_ONLY: True})), keep=READ_POOL),
        writes=_like(writes, writing.sync_engine),
        engines=(reading, writing),
        appends=AppendsAtOnce(writing.sync_engine),
    )


def _like(sessions: sessionmaker[Session], bind: Engine) -> sessionmaker[Session]:
    """Sessions as ``sessions`` makes them (their info: read-only or not, the job queue, …), on ``bind``."""
    return sessionmaker(**{**sessions.kw, "bind": bind})
