"""Queries over ``idempotency_keys``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.storage.models import IdempotencyKey, utcnow


def _the(scope: str, key: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return IdempotencyKey.scope == scope, IdempotencyKey.key == key


def claim(
    session: Session, scope: str, key: str, fingerprint: str, owner: str, lease_until: datetime
) -> IdempotencyKey | None:
    """Claim ``key`` for a new request run by ``owner``; if it is taken, return the row that holds it."""
    try:
        with session.begin_nested():
            session.add(
                IdempotencyKey(scope=scope, key=key, fingerprint=fingerprint, owner=owner, lease_until=lease_until)
            )
        return None
    except IntegrityError:
        return session.scalars(select(IdempotencyKey).where(*_the(scope, key))).first()


def take_over(session: Session, held: IdempotencyKey, owner: str, lease_until: datetime) -> bool:
    """Make ``owner`` the holder of a claim read as ``held``, if it is still as read: not settled, its work not
    committed, and no one else took it over meanwhile. On PostgreSQL the UPDATE waits for a transaction that is
    marking the claim committed, then finds it committed and takes nothing."""
    taken = session.execute(
        update(IdempotencyKey)
        .where(
            *_the(held.scope, held.key),
            IdempotencyKey.status.is_(None),
            IdempotencyKey.committed_at.is_(None),
            IdempotencyKey.owner.is_not_distinct_from(held.owner),
        )
        .values(owner=owner, lease_until=lease_until)
    )
    return bool(getattr(taken, "rowcount", 0))


def renew(session: Session, scope: str, key: str, owner: str, lease_until: datetime) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(*_the(scope, key), IdempotencyKey.owner == owner, IdempotencyKey.status.is_(None))
        .values(lease_until=lease_until)
    )


def commit_mark(session: Session, scope: str, key: str, owner: str) -> bool:
    """Mark the claim's work committed, in the work's own transaction; False if ``owner`` no longer holds it."""
    marked = session.execute(
        update(IdempotencyKey)
        .where(*_the(scope, key), IdempotencyKey.owner == owner, IdempotencyKey.committed_at.is_(None))
        .values(committed_at=utcnow())
    )
    return bool(getattr(marked, "rowcount", 0))


def finish(session: Session, scope: str, key: str, owner: str, status: int, body: bytes) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(*_the(scope, key), IdempotencyKey.owner == owner)
        .values(status=status, body=body, lease_until=None)
    )


def release(session: Session, scope: str, key: str, owner: str) -> bool:
    """Free the key of a request whose work did not commit; False if it did (or another owner holds the key)."""
    freed = session.execute(
        delete(IdempotencyKey).where(
            *_the(scope, key), IdempotencyKey.owner == owner, IdempotencyKey.committed_at.is_(None)
        )
    )
    return bool(getattr(freed, "rowcount", 0))


def expire(session: Session, before: datetime) -> None:
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
