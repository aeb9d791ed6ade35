"""Whole-table queries for export, import and restore: stream every row, insert rows as they are, count, find
which tables hold data, empty them all, and move PostgreSQL's id sequences past imported ids."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Integer, Row, Table, column, delete, func, insert, inspect, literal, select, table, text
from sqlalchemy.orm import Session

from dust.storage.models import Base

STREAM_ROWS = 2_000  # rows held at a time while streaming a table


def stream(session: Session, source: Table, columns: Sequence[str], order: Sequence[str]) -> Iterator[Sequence[Row]]:
    """The ``columns`` of every row of ``source`` in ``order``, ``STREAM_ROWS`` at a time (a server-side cursor
    on PostgreSQL): never the whole table in memory."""
    stmt = select(*(source.c[name] for name in columns)).order_by(*(source.c[name] for name in order))
    yield from session.execute(stmt.execution_options(yield_per=STREAM_ROWS)).partitions()


def insert_rows(session: Session, target: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with every column given (ids included), by one executemany statement."""
    if rows:
        session.execute(insert(target), rows)


def count(session: Session, source: Table) -> int:
    return session.scalar(select(func.count()).select_from(source)) or 0


def occupied(session: Session) -> list[str]:
    """The tables that hold any row, DUST's or not (the migration record and the cache epochs aside, which every
    migrated database has): a restore must not overwrite another application's data unasked either."""
    names = sorted(set(inspect(session.connection()).get_table_names()) - {"alembic_version", "cache_epochs"})
    return [name for name in names if session.scalar(select(literal(1)).select_from(table(name)).limit(1))]


def clear(session: Session) -> None:
    """Delete every row of every DUST table (the migration record stays)."""
    tables = Base.metadata.sorted_tables
    if session.get_bind().dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in tables)  # our own table names, not input
        session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        return
    for each in reversed(tables):  # children before parents: foreign keys are enforced
        session.execute(delete(each))


def reset_sequences(session: Session, tables: Sequence[Table]) -> None:
    """Let PostgreSQL's next generated id follow the largest imported one. Rows inserted with their ids leave
    the sequence where it was, and the next insert would collide. (SQLite takes max(rowid) + 1 by itself.)"""
    if session.get_bind().dialect.name != "postgresql":
        return
    for each in tables:
        keys = list(each.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer) or keys[0].autoincrement is False:
            continue
        key = keys[0]
        sequence = func.pg_get_serial_sequence(each.name, key.name)
        session.execute(select(func.setval(sequence, func.coalesce(func.max(key), 0) + 1, False)).select_from(each))


def migration(session: Session) -> str | None:
    """The Alembic revision the database is at."""
    versions = table("alembic_version", column("version_num"))
    return session.scalar(select(versions.c.version_num).limit(1))
