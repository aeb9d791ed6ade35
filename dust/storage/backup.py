"""Consistent snapshots of a live database, and putting them back (``dust db backup`` / ``dust db restore``).

- ``read_snapshot(url)``: a read-only session that sees one moment of the database while the server goes on
  writing; exports and the counts reported beside a backup read through it.
- SQLite: ``sqlite_backup`` copies the file with the online backup API (``sqlite3.Connection.backup``) from a
  pinned read snapshot, and ``sqlite_restore`` copies a backup back the same way.
- PostgreSQL: ``pg_backup`` runs ``pg_dump`` (custom format) on the very snapshot of a ``read_snapshot``
  session, and ``pg_restore`` puts it back with ``--clean --if-exists`` in one transaction.

The engine layer (``dust.engine.transfer``) chooses between these and the logical export. A backup file says
what it is by its first bytes (``kind_of``), so restoring needs no flag. Native backups hold everything,
password hashes and key digests included: they are written readable by their owner only.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from dust.core.errors import DustError, InvalidInput, ProblemType
from dust.storage.db import make_engine

Progress = Callable[[int, int | None], None]  # (done, total or None while unknown)
STEP_PAGES = 1024  # pages copied per step of the online backup (4 MiB at SQLite's default page size)
_MAGIC = {b"SQLite format 3\x00": "sqlite", b"PGDMP": "pg_dump", b"\x1f\x8b": "logical"}  # gzip: a tar.gz export


class BackupKind(StrEnum):
    sqlite = "sqlite"
    pg_dump = "pg_dump"
    logical = "logical"


class ToolFailed(DustError):
    """pg_dump or pg_restore ended with an error; its own message is the detail."""

    status = 500
    title = "Backup tool failed"
    type = ProblemType.internal_error


def kind_of(path: Path) -> BackupKind:
    """What a backup file is, from its first bytes."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; an export directory loads with `dust import dust {path}`")
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    with path.open("rb") as file:
        head = file.read(16)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return BackupKind(kind)
    raise InvalidInput(
        f"{path} is not a DUST backup: neither a SQLite database, a pg_dump custom-format archive nor a logical "
        "export (.tar.gz)"
    )


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidInput("an in-memory SQLite database has no file to back up or restore")
    return Path(parsed.database)


@contextmanager
def read_snapshot(url: str) -> Iterator[Session]:
    """A read-only session on one consistent moment of the database, that does not hold up writers.

    SQLite: a deferred BEGIN, pinned at its first read; in WAL mode readers never block writers. (The engines
    of ``dust.storage.db`` begin with BEGIN IMMEDIATE, which would hold the write lock for a whole export.)
    PostgreSQL: REPEATABLE READ, READ ONLY, the isolation pg_dump uses.
    """
    if sqlite_file(url) is not None:
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _read_only_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        bind: Any = engine
    else:
        engine = make_engine(url)
        bind = engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    try:
        with Session(bind) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" listener issues BEGIN itself
    dbapi_conn.execute("PRAGMA query_only=ON")
    dbapi_conn.execute("PRAGMA busy_timeout=30000")


def sqlite_backup(url: str, target: Path, progress: Progress | None = None, step_pages: int = STEP_PAGES) -> None:
    """Copy the SQLite database of ``url`` to ``target`` while others keep writing: one moment of it, whole.

    The source connection holds a read transaction for the whole copy, so every step copies pages of the same
    snapshot (without it, a write between steps would restart the copy). The copy is written beside
    ``target`` and renamed over it at the end, so ``target`` never holds half a backup.
    """
    source = _source(url, target)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with closing(sqlite3.connect(source, isolation_level=None)) as src:
            src.execute("PRAGMA busy_timeout=30000")
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot
            with closing(sqlite3.connect(partial)) as dest:
                src.backup(dest, pages=step_pages, progress=_pages(progress), sleep=0.05)
                # One self-contained file: the copied header says WAL, which would want a -wal file beside it.
                dest.execute("PRAGMA journal_mode=DELETE")
            src.execute("COMMIT")
        partial.chmod(0o600)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _source(url: str, target: Path) -> Path:
    source = sqlite_file(url)
    assert source is not None
    if not source.is_file():
        raise InvalidInput(f"there is no database at {source} to back up")
    if target.exists() and target.resolve() == source.resolve():
        raise InvalidInput(f"{target} is the database itself; write the backup somewhere else")
    target.parent.mkdir(parents=True, exist_ok=True)
    return source


def _pages(progress: Progress | None) -> Callable[[int, int, int], None] | None:
    if progress is None:
        return None
    return lambda _status, remaining, total: progress(total - remaining, total)


def sqlite_restore(backup: Path, url: str, progress: Progress | None = None) -> None:
    """Copy the SQLite backup ``backup`` into the database file of ``url``, replacing all of it."""
    target = sqlite_file(url)
    assert target is not None
    if target.exists() and target.resolve() == backup.resolve():
        raise InvalidInput(f"{backup} is the configured database itself")
    _check_sqlite_backup(backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        closing(sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dest,
    ):
        dest.execute("PRAGMA busy_timeout=30000")
        src.backup(dest, pages=STEP_PAGES, progress=_pages(progress), sleep=0.05)


def _check_sqlite_backup(backup: Path) -> None:
    """Refuse a damaged file, or a SQLite file that is not a DUST database, before anything is overwritten."""
    with closing(sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as error:
            raise InvalidInput(f"{backup} is damaged: {error}") from None
    if problems != ["ok"]:
        raise InvalidInput(f"{backup} is damaged: {'; '.join(problems[:5])}")
    if "alembic_version" not in tables:
        raise InvalidInput(f"{backup} is a SQLite database but not a DUST one (it has no migration table)")


def pg_tool(name: str) -> str | None:
    """The path of ``pg_dump`` or ``pg_restore`` on PATH, if any."""
    return shutil.which(name)


def pg_backup(snapshot: Session, url: str, target: Path) -> None:
    """``pg_dump`` in custom format of exactly what ``snapshot`` (a ``read_snapshot`` session on ``url``) sees."""
    exported = snapshot.scalar(select(func.pg_export_snapshot()))
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run("pg_dump", url, "--format=custom", f"--snapshot={exported}", f"--file={partial}")
        partial.chmod(0o600)
        os.replace(partial, target)
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()


def pg_restore(backup: Path, url: str) -> None:
    """Put a pg_dump archive back into the database of ``url``: its DUST tables are dropped and recreated, in
    one transaction (a failure leaves the database as it was). Objects are owned by the restoring user."""
    _run(
        "pg_restore",
        url,
        "--clean",
        "--if-exists",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        str(backup),
    )


def _run(tool: str, url: str, *args: str) -> None:
    path = pg_tool(tool)
    if path is None:
        raise ToolFailed(f"{tool} is not on PATH; install the PostgreSQL client tools")
    parsed = make_url(url)
    # The password goes in the environment, not on the command line, where any user could read it.
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    command = [path, "--no-password", f"--dbname={_libpq(parsed)}", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolFailed(f"{tool} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _libpq(url: URL) -> str:
    """A libpq connection URI (what pg_dump takes) for a SQLAlchemy URL, without its password."""
    plain = URL.create("postgresql", url.username, None, url.host, url.port, url.database, url.query)
    return plain.render_as_string(hide_password=False)
