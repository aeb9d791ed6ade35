"""Engines, sessions and migrations for one database URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dust.core.logging import get_logger

log = get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
MMAP_BYTES = 1 << 30  # SQLite maps up to this much of a database file; beyond it, it reads as usual


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, enforced foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINTs; take it over. IMMEDIATE takes
    # the write lock up front: nearly every transaction writes (an audit record at least), and a deferred
    # one that reads first fails with "database is locked" instead of waiting when another writer is active.
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a crash of the process (not of the OS); FULL would fsync each commit.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # Reads through a memory map of the file rather than copies into SQLite's page cache: a scan of every block
    # of a schema (insights.aggregate_by_step) runs ~1.5x faster (bench/ingest_aggregate.py --what-if). Only
    # address space: the pages are the OS's file cache, shared by every connection.
    cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on ``engine``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("migrations applied", database=engine.url.render_as_string(hide_password=True), revision=revision)
