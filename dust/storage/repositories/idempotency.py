"""Queries over ``idempotency_keys``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.storage.models import IdempotencyKey


def claim(session: Session, scope: str, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Claim ``key`` for a new request; if it is taken, return the row that holds it."""
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(scope=scope, key=key, fingerprint=fingerprint))
        return None
    except IntegrityError:
        return session.scalars(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        ).first()


def finish(session: Session, scope: str, key: str, status: int, body: bytes) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        .values(status=status, body=body)
    )


def release(session: Session, scope: str, key: str) -> None:
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key))


def expire(session: Session, before: datetime) -> None:
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
