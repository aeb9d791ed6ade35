"""Engines, sessions and migrations for one database URL."""

from __future__ import annotations

import select
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, Engine, Insert, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import await_only

from dust.core.logging import get_logger

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_SECONDS = 30  # how long a SQLite writer waits for the write lock before "database is locked"
# Connections a process keeps open: about as many as requests may hold at once (the thread pool has 40 workers).
# Beyond the pool a connection is opened and closed per request: SQLite re-runs its PRAGMAs, PostgreSQL forks a
# backend, and under 16 concurrent clients that was a fifth of a read's CPU (bench/serve.py). PostgreSQL keeps
# half as many: its connections are processes, and every worker of `dust serve --workers N` has a pool.
POOL_SIZE = 40
WAL_AUTOCHECKPOINT = 1000  # SQLite's default: a commit past this many WAL pages checkpoints them
MMAP_BYTES = 1 << 30  # SQLite maps up to this much of a database file; beyond it, it reads as usual
READ_ONLY = "dust.read_only"  # an engine execution option and a session.info flag: this transaction only reads
AFTER_COMMIT = "dust.after_commit"  # session.info: writes to run once the transaction has committed
HELD = "dust.held"  # session.info: the connection the session is bound to, usable before its transaction begins
NO_WAIT = "dust.no_wait"  # an execution option: an SQLite write begins only if the write lock is free at once
Write = Callable[[Session], None]  # a write for after the commit (after_commit); or an Append
_TURNS: weakref.WeakKeyDictionary[Any, _WriterTurns] = weakref.WeakKeyDictionary()  # by pool: options share it
# driver_insert's statements, compiled once: by statement, dialect, columns, rows (driver_insert_at_once's)
_INSERTS: dict[tuple[Insert, str, tuple[str, ...], int], _Compiled | None] = {}
AT_ONCE = 64  # the most rows driver_insert_at_once puts in one statement: one compiled statement for each count


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, enforced foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=POOL_SIZE // 2, max_overflow=POOL_SIZE // 2)
        if engine.dialect.name == "postgresql":
            replace_closed_connections(engine)
        return engine
    pool: dict[str, Any] = {}  # an in-memory database has a pool of its own kind
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE // 2}
    connect_args = {"check_same_thread": False, "timeout": BUSY_SECONDS}
    engine = create_engine(url, connect_args=connect_args, **pool)
    event.listen(engine, "connect", _sqlite_pragmas)
    turns = _TURNS[engine.pool] = _WriterTurns()
    turns.listen(engine)
    return engine


def replace_closed_connections(engine: Engine | AsyncEngine) -> None:
    """Before the pool lends out a PostgreSQL connection, look whether the server has closed it (a restart, a
    failover, ``pg_terminate_backend``, an idle timeout); if so the pool opens another in its place.

    The server's goodbye (an error message, then the end of the stream) waits on the socket of a connection it
    closed, and a healthy idle connection has nothing to read: one poll, microseconds. ``pool_pre_ping`` sent a
    ``SELECT 1`` instead, a round trip per request that cost 0.15-0.2 ms of the server's CPU, a sixth of
    ``/auth/me`` on PostgreSQL (bench/serve.py). A server that vanished without closing (its host lost) is found,
    as with a ping, by the first statement that times out."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    event.listen(sync, "checkout", _still_open)


def _still_open(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    if not _socket_quiet(getattr(dbapi_conn, "driver_connection", dbapi_conn)):
        raise DisconnectionError("the server has closed this connection")


def still_open(connection: Connection) -> bool:
    """Whether a PostgreSQL connection kept out of the pool can take the next statement: ``idle``, and open, as
    the pool looks when it lends one (``replace_closed_connections``)."""
    try:
        return idle(connection) and _socket_quiet(connection.connection.driver_connection)
    except psycopg.Error:  # closed by the driver itself (its socket is gone)
        return False


def idle(connection: Connection) -> bool:
    """Whether a PostgreSQL connection is idle as far as this process knows: not closed, not in a transaction,
    and no statement left running (a read cancelled while it waited for its answer leaves one). Whether the
    server has closed it meanwhile takes a look at its socket (``still_open``)."""
    if connection.closed or connection.invalidated or connection.in_transaction():
        return False
    driver = connection.connection.driver_connection
    try:
        return driver is not None and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    except psycopg.Error:  # closed by the driver itself (its socket is gone)
        return False


def _socket_quiet(driver: Any) -> bool:
    """Whether nothing waits to be read on the socket of ``driver`` (a psycopg connection, also under asyncio):
    an idle connection's server has nothing to say unless it is saying goodbye."""
    poll = select.poll()
    poll.register(driver.pgconn.socket, select.POLLIN)
    return not poll.poll(0)


class _WriterTurns:
    """SQLite transactions, begun by hand: pysqlite's own handling defers BEGIN and breaks SAVEPOINTs.

    A writer takes the write lock up front (IMMEDIATE): a deferred transaction that reads first and writes later
    fails at once with "database is locked" when another writer committed meanwhile, instead of waiting. A reader
    begins deferred: in WAL mode it takes no lock, so readers never queue behind writers or each other.

    Writers of this process first take turns on a lock of this engine's own. SQLite makes a writer that finds the
    database locked sleep and retry (1, 2, 5, … 100 ms), so under load a short write could wait far longer than
    the writes before it took; this lock wakes the next writer the moment the last one ends. (Writers of other
    processes still meet SQLite's lock, as before.)
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: Any = None  # the DBAPI connection whose turn it is
        self.quiet: Any = None  # the holder, if its commit is not to checkpoint the WAL (_begin_now)

    def listen(self, engine: Engine) -> None:
        event.listen(engine, "begin", self.begin)
        event.listen(engine.pool, "checkin", self.checked_in)
        # engine.dispose() gives the engine a new pool, with the old one's listeners: the turns are the new one's too
        event.listen(engine, "engine_disposed", lambda disposed: _TURNS.__setitem__(disposed.pool, self))
        # The turn passes on once COMMIT or ROLLBACK is done: the "commit" and "rollback" events come before
        # them, and a writer let in then would find SQLite still locked and go to sleep. So the dialect's own
        # commit and rollback (this engine's dialect only) hand the turn on after they return.
        dialect = engine.dialect
        for name in ("do_commit", "do_rollback"):
            setattr(dialect, name, self._then_pass_on(getattr(dialect, name)))

    def begin(self, conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READ_ONLY):
            driver_scalar(conn, "BEGIN")
            return
        if options.get(NO_WAIT):
            self._begin_now(conn)
            return
        if self.lock.acquire(timeout=BUSY_SECONDS):
            self.holder = conn.connection.dbapi_connection
        else:  # a turn never given back (a bug): fall back on SQLite's own waiting rather than stop writing
            log.error("no turn to write within the busy timeout; waiting on SQLite's lock instead")
        try:
            driver_scalar(conn, "BEGIN IMMEDIATE")
        except BaseException:
            self.pass_on(conn.connection.dbapi_connection)
            raise

    def _begin_now(self, conn: Connection) -> None:
        """BEGIN IMMEDIATE if neither a writer of this process nor one of another holds the lock: for the event
        loop, which must not wait (dust.storage.writer)."""
        dbapi_conn = conn.connection.dbapi_connection
        self.take_now(dbapi_conn)
        try:
            driver_scalar(conn, "PRAGMA busy_timeout=0")
            try:
                driver_scalar(conn, "BEGIN IMMEDIATE")
            finally:
                driver_scalar(conn, f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
            # SQLite checkpoints the WAL into the database file (and syncs both) at the first commit past 1,000
            # pages: 5-16 ms that would stall every request on the loop. This commit skips it; the batch writer's
            # thread checkpoints now and then instead (checkpoint_wal, dust.storage.writer).
            driver_scalar(conn, "PRAGMA wal_autocheckpoint=0")
            self.quiet = dbapi_conn
        except OperationalError as error:
            self.pass_on(dbapi_conn)
            if _locked(error):
                raise WriteLockBusy("another process holds the write lock") from None
            raise
        except BaseException:
            self.pass_on(dbapi_conn)
            raise

    def take_now(self, dbapi_conn: Any) -> None:
        """The turn for ``dbapi_conn`` if no writer of this process has it this moment, else WriteLockBusy."""
        if not self.lock.acquire(blocking=False):
            raise WriteLockBusy("a writer of this process holds the write lock")
        self.holder = dbapi_conn

    def _then_pass_on(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(dbapi_conn: Any) -> None:
            try:
                end(dbapi_conn)
            finally:
                self.pass_on(dbapi_conn)

        return ended

    def pass_on(self, dbapi_conn: Any) -> None:
        if dbapi_conn is not None and self.holder is dbapi_conn:
            self.holder = None
            if self.quiet is dbapi_conn:  # its transaction has ended: checkpoints at its commits again
                self.quiet = None
                dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            self.lock.release()

    def checked_in(self, dbapi_conn: Any, _record: Any) -> None:
        """A connection handed back without a commit or rollback (invalidated, say) passes its turn on too."""
        self.pass_on(dbapi_conn)


def _locked(error: OperationalError) -> bool:
    """Whether SQLite refused ``error``'s statement because another connection holds the lock it needs."""
    return "locked" in str(error.orig) or "busy" in str(error.orig)


@contextmanager
def write_now(connection: Connection) -> Iterator[None]:
    """A write transaction on the driver of ``connection`` (SQLite's, set never to wait: ``busy_timeout=0``),
    begun only if this process's turn to write and SQLite's write lock are both free this moment, else
    WriteLockBusy; committed at the end of the block, rolled back if it raises. What ``_WriterTurns._begin_now``
    does for a Session, without SQLAlchemy's transaction around it (dust.storage.loop.HeldAppends)."""
    turns, dbapi_conn = _TURNS[connection.engine.pool], connection.connection.dbapi_connection
    turns.take_now(dbapi_conn)
    try:
        try:
            driver_row(connection, "BEGIN IMMEDIATE")
        except OperationalError as error:
            if _locked(error):
                raise WriteLockBusy("another process holds the write lock") from None
            raise
        try:
            yield
            driver_row(connection, "COMMIT")
        except BaseException:
            with suppress(DBAPIError):  # SQLite may have rolled back already (a full disk, say)
                driver_row(connection, "ROLLBACK")
            raise
    finally:
        turns.pass_on(dbapi_conn)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS); FULL would fsync each commit.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
    # Reads through a memory map of the file rather than copies into SQLite's page cache: a scan of every block
    # of a schema (insights.aggregate_by_step) runs ~1.5x faster (bench/ingest_aggregate.py --what-if). Only
    # address space: the pages are the OS's file cache, shared by every connection.
    cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cur.close()


def make_sessionmaker(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``read_only`` ones begin without SQLite's write lock, and PostgreSQL refuses any
    write in them (so a read path that writes fails its tests on PostgreSQL instead of queueing readers)."""
    if read_only:
        options: dict[str, Any] = {READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["postgresql_readonly"] = True
        engine = engine.execution_options(**options)
    return sessionmaker(engine, expire_on_commit=False, info={READ_ONLY: read_only})


def is_read_only(session: Session) -> bool:
    return bool(session.info.get(READ_ONLY))


class WriteLockBusy(Exception):
    """A write asked to begin only if SQLite's write lock was free at once (``NO_WAIT``), and it was not."""


@dataclass(frozen=True)
class Append:
    """A Write that inserts ``rows`` with ``statement`` (built once, by its repository). The batch writer runs
    the Appends of all the requests in its transaction to the same statement as one executemany."""

    statement: Insert
    rows: list[dict[str, Any]]

    def __call__(self, session: Session | Connection) -> None:
        if isinstance(session, Connection) and driver_insert(session, self.statement, self.rows):
            return
        session.execute(self.statement, self.rows)


def after_commit(session: Session, write: Write) -> None:
    """Run ``write`` once this transaction has committed, if the session's owner collects such writes (a request
    does, and commits them before it answers: ``dust.storage.writer``); otherwise run it now, in this transaction.

    For the small writes a read causes (its audit record, an API key's last use), so the read itself needs no
    write lock and no row lock."""
    pending: list[Write] | None = session.info.get(AFTER_COMMIT)
    if pending is None:
        write(session)
    else:
        pending.append(write)


@contextmanager
def pipelined(session: Session) -> Iterator[None]:
    """Send the statements run in this block to PostgreSQL together, and wait once, at its end, for all of their
    outcomes (psycopg's pipeline mode). A batch write's audit record, blocks and ranges took a round trip each;
    together they cut a sixth off a batch's CPU and wall time on PostgreSQL (bench/ingest_request.py). Only for
    statements whose results nothing reads: no RETURNING (an INSERT of a serial key must be ``.inline()``).

    A failure of any of them is raised at the end of the block, as SQLAlchemy raises errors (IntegrityError,
    OperationalError, …), and the transaction is to be rolled back as after any failed statement. Elsewhere
    (SQLite, an asyncio connection) the statements run one by one, as without the block."""
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        yield
        return
    try:
        with driver.pipeline():
            yield
    except psycopg.Error as error:  # from the sync at the end: the statements themselves raise SQLAlchemy's
        raise DBAPIError.instance(None, None, error, psycopg.Error) from error


def statement_connection(session: Session) -> Connection:
    """Where to run a statement on the driver for ``session``: the connection it holds (``HELD``) even before its
    transaction begins, when such a statement is a snapshot of its own (as on PostgreSQL's autocommit reads on the
    loop, dust.storage.loop); otherwise its transaction's connection, beginning the transaction if need be."""
    held: Connection | None = session.info.get(HELD)
    return held if held is not None else session.connection()


def driver_scalar(connection: Connection, sql: str) -> Any:
    """The first column of ``sql``'s first row (None without one), run on the driver itself (pysqlite, psycopg,
    psycopg's asyncio connection awaited in the loop's greenlet); its errors raised as SQLAlchemy's. For the
    statements every transaction runs (SQLite's BEGIN and the PRAGMAs around a write on the loop, the cache
    epochs): SQLAlchemy's execution cost more than the database's own work for them, ~12 µs a statement on
    SQLite and ~60 on PostgreSQL through the loop's asyncio adaptation (bench/request_cpu.py)."""
    row = driver_row(connection, sql)
    return None if row is None else row[0]


def driver_row(connection: Connection, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
    """``sql``'s first row as the driver gives it (None without one): see ``driver_scalar``."""
    return _on_driver(connection, sql, parameters, fetch=_ONE)


def driver_rows(connection: Connection, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
    """Every row of ``sql`` as the driver gives them: see ``driver_scalar``."""
    return cast(list[Any], _on_driver(connection, sql, parameters, fetch=_ALL))


# What _on_driver does: execute and fetch the first row, or every row; execute and fetch nothing; executemany
_ONE, _ALL, _RUN, _MANY = "one", "all", "run", "many"


def _on_driver(connection: Connection, sql: str, parameters: Any, *, fetch: str) -> Any:
    """``sql`` run on ``connection``'s driver: its first row or every row, nothing, or with ``fetch=_MANY`` once per
    set of ``parameters``."""
    driver = connection.connection.driver_connection
    assert driver is not None  # None only once the connection is closed
    cursor = driver.cursor()
    many = fetch == _MANY
    # Shown to the engine's statement listeners as SQLAlchemy's execution shows them (the tests count them so), but
    # with no execution context (None): there is none
    connection.dispatch.before_cursor_execute(connection, cursor, sql, parameters, None, many)
    try:
        if isinstance(cursor, psycopg.AsyncCursor):
            return await_only(_on_async_cursor(cursor, sql, parameters, fetch))
        try:
            if many:
                cursor.executemany(sql, parameters)
                return None
            cursor.execute(sql, parameters)
            return None if fetch == _RUN else cursor.fetchone() if fetch == _ONE else cursor.fetchall()
        finally:
            cursor.close()
    except (sqlite3.Error, psycopg.Error) as error:
        base = sqlite3.Error if isinstance(error, sqlite3.Error) else psycopg.Error
        raise DBAPIError.instance(sql, parameters, error, base) from error


async def _on_async_cursor(cursor: psycopg.AsyncCursor[Any], sql: str, parameters: Any, fetch: str) -> Any:
    """``_on_driver``'s work on psycopg's asyncio cursor, in one coroutine: the loop's greenlet then switches out
    and back once for the statement, not once for each of execute, fetch and close (together a few µs of a
    PostgreSQL ``/auth/me``'s ~400, bench/request_cpu.py)."""
    async with cursor:
        if fetch == _MANY:
            await cursor.executemany(sql, parameters)
            return None
        await cursor.execute(sql, parameters or None)
        if fetch == _RUN:
            return None
        return await cursor.fetchone() if fetch == _ONE else await cursor.fetchall()


class DriverQuery:
    """A SELECT of at most one row that a hot read runs on the driver itself (``driver_row``) rather than through
    SQLAlchemy's execution, which cost more than the query: compiled once per dialect, its parameters and columns
    converted as SQLAlchemy converts them (a UUID to SQLite's text and back, a JSON column decoded…)."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def first(self, connection: Connection, parameters: dict[str, Any]) -> dict[str, Any] | None:
        """The row's columns by name, or None."""
        compiled = self._for(connection)
        row = driver_row(connection, compiled.sql, compiled.bound(parameters))
        return None if row is None else compiled.row(row)

    def all(self, connection: Connection, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row's columns by name."""
        compiled = self._for(connection)
        return [compiled.row(row) for row in driver_rows(connection, compiled.sql, compiled.bound(parameters))]

    def _for(self, connection: Connection) -> _Compiled:
        compiled = self._compiled.get(connection.dialect.name)
        if compiled is None:
            compiled = self._compiled[connection.dialect.name] = self._compile(connection.dialect)
        return compiled

    def _compile(self, dialect: Any) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        binds = {name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()}
        columns = [
            (key, _remembered(column.type, column.type.dialect_impl(dialect).result_processor(dialect, None)))
            for key, column in self.statement.selected_columns.items()
        ]
        return _Compiled(compiled.string, compiled.positiontup, binds, columns)


REMEMBERED = 4096  # the most values a column's conversion remembers (then it starts again)
_IMMUTABLE = (uuid.UUID, datetime)  # what a remembered conversion may hand out again: no reader can change it


def _remembered(column_type: Any, convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """``convert`` of a column whose values are immutable (ids, times), remembering its answers: a hot read gets
    the same row again and again (a busy tensor's, the signed-in user's), and making its ids and times from the
    driver's text or its naive datetimes was ~1.2 µs a value, five a tensor's row (a twentieth of an SQLite point
    read's engine work). A column of anything else (JSON: a dict the reader may change) is converted every time."""
    try:
        immutable = issubclass(column_type.python_type, _IMMUTABLE)
    except NotImplementedError:  # a type that does not say
        immutable = False
    if convert is None or not immutable:
        return convert
    made: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        found = made.get(value, _NOT_MADE)
        if found is _NOT_MADE:
            if len(made) >= REMEMBERED:
                made.clear()
            found = made[value] = convert(value)
        return found

    return remembered


_NOT_MADE = object()


def driver_insert(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> bool:
    """Insert ``rows`` with ``statement`` on the driver itself, one executemany, their values converted as SQLAlchemy
    converts them; False (and nothing done) if SQLAlchemy would do more than that (``driver_takes``). The batch
    writer's audit records: SQLAlchemy's executemany cost ~3× SQLite's own work for a batch of one
    (bench/request_cpu.py)."""
    compiled = _insert_compiled(connection, statement, rows)
    if compiled is None:
        return False
    _on_driver(connection, compiled.sql, [compiled.bound(row) for row in rows], fetch=_MANY)
    return True


def driver_insert_at_once(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> bool:
    """Insert ``rows`` with ``statement`` on the driver itself as one statement (a VALUES list), so that all of them
    or none are written even outside a transaction (PostgreSQL's autocommit); False, and nothing done, if
    SQLAlchemy would do more than that (``driver_takes``) or there are more than ``AT_ONCE`` rows."""
    if not rows or len(rows) > AT_ONCE or not driver_takes(connection, statement, rows):
        return False
    keys = tuple(rows[0])
    cache = (statement, connection.dialect.name, keys, len(rows))
    compiled = _INSERTS.get(cache)
    if compiled is None:
        listed = statement.values([dict.fromkeys(keys) for _ in rows])
        compiled = _INSERTS[cache] = _compile_insert(listed, connection.dialect, keys)
        assert compiled is not None  # as the one-row statement (driver_takes)
    named = {f"{key}_m{i}": value for i, row in enumerate(rows) for key, value in row.items()}
    _on_driver(connection, compiled.sql, compiled.bound(named), fetch=_RUN)
    return True


def driver_takes(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> bool:
    """Whether ``driver_insert`` takes these rows: all of the same columns, none left out whose default is
    computed in Python, and nothing read back."""
    return _insert_compiled(connection, statement, rows) is not None


def _insert_compiled(connection: Connection, statement: Insert, rows: list[dict[str, Any]]) -> _Compiled | None:
    keys = tuple(rows[0]) if rows else ()
    if not keys or any(row.keys() != rows[0].keys() for row in rows):
        return None
    cache = (statement, connection.dialect.name, keys, 0)  # 0: for executemany, each row on its own
    if cache not in _INSERTS:
        _INSERTS[cache] = _compile_insert(statement, connection.dialect, keys)
    return _INSERTS[cache]


def _compile_insert(statement: Insert, dialect: Any, keys: tuple[str, ...]) -> _Compiled | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if compiled.insert_prefetch or compiled.effective_returning:  # defaults computed here, or rows read back
        return None
    binds = {name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()}
    return _Compiled(compiled.string, compiled.positiontup, binds, ())


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: list[str] | None  # the parameters' names in order; None: by name (psycopg)
    binds: Mapping[str, Callable[[Any], Any] | None]  # by parameter: how its value goes to the driver
    columns: Sequence[tuple[str, Callable[[Any], Any] | None]]  # by column: its name, and how its value comes back

    def bound(self, parameters: dict[str, Any]) -> list[Any] | dict[str, Any]:
        """The parameters as the driver takes them: by name (psycopg) or in order (SQLite), converted as
        SQLAlchemy converts them."""
        if self.positions is None:
            return {k: value if (bind := self.binds[k]) is None else bind(value) for k, value in parameters.items()}
        made = [parameters[name] for name in self.positions]
        for at, bind in self._bound_at:
            made[at] = bind(made[at])
        return made

    @cached_property
    def _bound_at(self) -> list[tuple[int, Callable[[Any], Any]]]:
        """In order (SQLite): where each parameter that needs converting is, and how."""
        assert self.positions is not None
        return [(at, bind) for at, name in enumerate(self.positions) if (bind := self.binds[name]) is not None]

    def row(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row from the driver, its columns by name, converted as SQLAlchemy converts them."""
        made = dict(zip(self._names, row, strict=True))
        for key, convert in self._converted:
            made[key] = convert(made[key])
        return made

    @cached_property
    def _names(self) -> list[str]:
        return [key for key, _ in self.columns]

    @cached_property
    def _converted(self) -> list[tuple[str, Callable[[Any], Any]]]:
        """The columns whose values the driver's differ from SQLAlchemy's (ids and times, on SQLite; JSON)."""
        return [(key, convert) for key, convert in self.columns if convert is not None]


def settle_sqlite_reads(session: Session) -> None:
    """On SQLite, let the write in flight (if any) commit and go on reading from a new snapshot that holds it.

    For a reader that must not miss a write begun before it asked (an "as of" read: dust.engine.tensors). A
    read-only transaction sees the database as of its first read, and a writer holds the write lock from its
    first statement to its commit; so the read ends its snapshot, takes the write lock once (behind this
    process's writers, by their turn, and other processes' by SQLite's), and begins again. A read-write
    transaction already holds the lock: no write is in flight. Nothing to do on other databases.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite" or not is_read_only(session):
        return
    turns = _TURNS.get(connection.engine.pool)
    driver = connection.connection.driver_connection
    assert driver is not None  # None only once the connection is closed
    turn = turns is not None and turns.lock.acquire(timeout=BUSY_SECONDS)
    try:
        driver.execute("COMMIT")  # the read has written nothing: this only ends its snapshot
        try:
            driver.execute("BEGIN IMMEDIATE")
            driver.execute("COMMIT")
        finally:
            driver.execute("BEGIN")  # the session's transaction goes on, and ends as usual
    finally:
        if turn:
            assert turns is not None
            turns.lock.release()


def checkpoint_wal(engine: Engine) -> None:
    """Copy what SQLite's WAL holds into the database file, on a connection outside any transaction: PASSIVE, so
    as far as no reader still needs and without the write lock, and writers and readers go on meanwhile. Done so,
    it keeps the WAL under the size at which a commit checkpoints it while holding the write lock. A no-op on
    other databases."""
    if engine.dialect.name != "sqlite":
        return
    connection = engine.raw_connection()
    try:
        connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # type: ignore[union-attr]
    finally:
        connection.close()


@contextmanager
def unit_of_work(factory: sessionmaker[Session], *, wait: bool = True) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error. ``wait=False``: a write that begins only if
    SQLite's write lock is free this moment, else raises WriteLockBusy (on other databases it waits as usual)."""
    with factory() as session, session.begin():
        if not wait:
            session.connection(execution_options={NO_WAIT: True})  # begins it, as _WriterTurns.begin decides
        yield session


@contextmanager
def core_unit_of_work(factory: sessionmaker[Session], *, wait: bool = True) -> Iterator[Connection]:
    """``unit_of_work`` on a Connection of the sessions' engine, for writes that need no Session (``Append``):
    the batch writer's usual batch, audit records only. A Session's transaction (its events, its flush, the
    listeners of every feature that watches commits) cost more than the INSERT: a lone client's audited entity
    get took 84 µs more CPU with it on SQLite, 210 µs on PostgreSQL (bench/request_cpu.py)."""
    with factory.kw["bind"].connect() as connection:
        if not wait:
            connection.execution_options(**{NO_WAIT: True})  # so _WriterTurns.begin decides as in unit_of_work
        with connection.begin():
            yield connection


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Apply Alembic migrations up to ``revision`` on ``engine``; the revisions applied, oldest first (logged
    only if there are any: every command migrates first, and mostly finds nothing to do)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after == before:
        return []
    steps = ScriptDirectory.from_config(cfg).iterate_revisions(after, before)  # newest first
    applied = [step.revision for step in steps][::-1]
    log.info(
        "migrations applied",
        database=engine.url.render_as_string(hide_password=True),
        revision=after,
        applied=applied,
    )
    return applied
