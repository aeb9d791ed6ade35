"""Keyset pages that no concurrent insert can slip behind (docs/reliability.md#paging).

A list pages by a key taken when a row is inserted: (created_at, id) for entities and relations, id for the
audit log. A key is taken before its transaction commits, so without care a transaction that inserts, then
commits after a page was read, puts its row behind the cursor that page handed out, and the walk never sees it.

- SQLite serialises writers (BEGIN IMMEDIATE), and every key is taken under the write lock: created_at by
  ``creation_time`` once the transaction has begun, the audit id by SQLite (max + 1) at the insert. Every row a
  page saw was committed before the next writer got the lock, so its key is below every key that writer takes:
  commit order is key order, and no row ever commits behind a cursor.
- PostgreSQL runs writers side by side. Each page is read with the list of transactions then in progress (its
  snapshot, in the same statement), and its cursor carries them (``Walk.waiting``): the next page also returns
  their rows that are behind the cursor, once they have committed. A transaction not in the list got its id
  after the page was read; keys are taken only once a transaction has its id (``dust_stamp()``,
  ``dust_next_id``, migration 0008), on the database's clock or sequence, so its keys all come after the page's.

Rather than capping pages below the oldest transaction in progress (pg_snapshot_xmin): that holds back every row
committed after a long transaction starts, anywhere on the server (transaction ids are per cluster), and a row
just created would be missing from the list it was created for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, cast, func, or_, select, text
from sqlalchemy.orm import QueryableAttribute, Session

from dust.storage.models import Alert, Anomaly, AuditRecord, Entity, Relation, UTCDateTime, WebhookDelivery, utcnow

Key = tuple[Any, ...]
Column = QueryableAttribute[Any]


@dataclass(frozen=True)
class Walk:
    """Where a walk through a list stands.

    ``after``: the key of the last row returned in list order (None: the first page). ``waiting``: transactions in
    progress when that page was read; their rows behind ``after`` are still owed. ``resuming``: transactions that
    had committed such rows, of which those up to ``resume`` (a key behind ``after``) have been returned.
    """

    after: Key | None = None
    waiting: tuple[int, ...] = ()
    resuming: tuple[int, ...] = ()
    resume: Key | None = None


def creation_time(session: Session) -> datetime:
    """The created_at of rows of a paged list that this transaction inserts (see the module's docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        stamped = session.scalar(select(func.dust_stamp(type_=UTCDateTime())))
        assert stamped is not None
        return stamped
    session.connection()  # SQLite: BEGIN IMMEDIATE first, so that the clock is read under the write lock
    return utcnow()


def page(
    session: Session,
    stmt: Select[Any],
    key: Sequence[Column],
    txid: Column,
    walk: Walk,
    limit: int,
    *,
    descending: bool = False,
) -> tuple[list[Any], frozenset[int]]:
    """Up to ``limit`` rows of ``stmt`` (one entity each) that ``walk`` has not returned yet, in ``key`` order (those
    owed from behind its cursor come first); and the transactions in progress when they were read (none on
    SQLite)."""
    wanted: ColumnElement[bool] | None = None
    if walk.after is not None:
        wanted = _beyond(key, walk.after, descending)
        behind = ~wanted
        if walk.waiting:
            wanted = or_(wanted, and_(txid.in_(walk.waiting), behind))
        if walk.resuming and walk.resume is not None:
            resumed = _beyond(key, walk.resume, descending)
            wanted = or_(wanted, and_(txid.in_(walk.resuming), resumed, behind))
    if wanted is not None:
        stmt = stmt.where(wanted)
    stmt = stmt.order_by(*(k.desc() if descending else k for k in key)).limit(limit)
    if session.get_bind().dialect.name != "postgresql":
        return list(session.scalars(stmt)), frozenset()
    # The snapshot of this very statement: the rows and the transactions in progress must be of the same moment.
    rows = session.execute(stmt.add_columns(cast(func.pg_current_snapshot(), Text))).all()
    return [row[0] for row in rows], (_in_progress(rows[0][-1]) if rows else frozenset())


def _beyond(key: Sequence[Column], values: Key, descending: bool) -> ColumnElement[bool]:
    """Rows after ``values`` in list order, written out column by column so that the index on ``key`` is used."""
    column, value = key[0], values[0]
    first = column < value if descending else column > value
    if len(key) == 1:
        return first
    return or_(first, and_(column == value, _beyond(key[1:], values[1:], descending)))


def _in_progress(snapshot: str) -> frozenset[int]:
    """The transactions in progress in a pg_snapshot (``xmin:xmax:xip,…``), the reader's own left out."""
    listed = snapshot.split(":")[2]
    return frozenset(int(xid) for xid in listed.split(",") if xid)


def next_walk(walk: Walk, last: Key, in_progress: frozenset[int], *, descending: bool = False) -> Walk:
    """The walk once a page that ended at key ``last`` has been returned."""
    waiting = tuple(sorted(in_progress))
    if walk.after is not None and not _after(last, walk.after, descending):  # the page ended among rows owed
        owed = (set(walk.waiting) | set(walk.resuming)) - in_progress  # committed, so all their rows are visible
        return Walk(walk.after, waiting, tuple(sorted(owed)), last)
    return Walk(last, waiting)


def _after(key: Key, other: Key, descending: bool) -> bool:
    return key < other if descending else key > other


PAGED = (Entity, Relation, AuditRecord, Anomaly, Alert, WebhookDelivery)


def forget_transactions(session: Session) -> None:
    """Clear ``txid`` on every listed row: after a restore onto another PostgreSQL server, whose transaction ids
    are not the ones stored, a live transaction could share an old row's id and have it returned twice."""
    for model in PAGED:
        table = model.__tablename__  # our own table names, not input; plain SQL: no onupdate of updated_at
        session.execute(text(f"UPDATE {table} SET txid = NULL WHERE txid IS NOT NULL"))
