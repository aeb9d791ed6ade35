"""Queries over ``webhook_deliveries``: the outbox of webhook calls (dust.engine.webhooks).

A row is claimed before it is sent: the claim pushes ``next_attempt_at`` out by a lease, in one UPDATE that
only matches a pending row that is due, so of two workers handed the same row only one sends it; the other
finds it no longer due. The outcome is written in a second, short transaction: nothing is held open while the
receiver takes its time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from dust.storage.models import WebhookDelivery
from dust.storage.repositories import paging

_TABLE = cast(Table, WebhookDelivery.__table__)
_INSERT = insert(_TABLE).returning(_TABLE.c.id)
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to send one attempt of a claimed delivery."""

    id: int
    url: str
    body: str
    idempotency_key: str
    secret: str
    attempts: int  # before this attempt


def add(session: Session, row: dict[str, Any]) -> int:
    """Insert one delivery (the columns of ``webhook_deliveries``); its id."""
    return int(session.execute(_INSERT, row).scalar_one())


def claim(session: Session, delivery_id: int, due_by: datetime, lease_until: datetime) -> Claimed | None:
    """Take a pending delivery due by ``due_by``, leased until ``lease_until`` (no other claim matches it till
    then); None if it is not pending, not due, or another worker holds it."""
    c = _TABLE.c
    taken = session.execute(
        update(_TABLE)
        .where(c.id == delivery_id, c.state == PENDING, c.next_attempt_at <= due_by)
        .values(next_attempt_at=lease_until)
        .returning(c.id, c.url, c.body, c.idempotency_key, c.secret, c.attempts)
    ).first()
    return None if taken is None else Claimed(*taken)


def delivered(session: Session, delivery_id: int, at: datetime, status: int) -> bool:
    """Mark a delivery delivered: whatever else happened to it meanwhile, the receiver has it now."""
    c = _TABLE.c
    done = session.execute(
        update(_TABLE)
        .where(c.id == delivery_id, c.state == PENDING)
        .values(state=DELIVERED, attempts=c.attempts + 1, delivered_at=at, last_status=status, last_error=None)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def failed(
    session: Session,
    claimed: Claimed,
    *,
    status: int | None,
    error: str,
    next_attempt_at: datetime,
    dead: bool,
) -> bool:
    """Record a failed attempt of ``claimed``: pending again from ``next_attempt_at``, or dead. Only if no other
    attempt was recorded since the claim (a worker whose lease ran out must not overwrite a newer outcome)."""
    c = _TABLE.c
    done = session.execute(
        update(_TABLE)
        .where(c.id == claimed.id, c.state == PENDING, c.attempts == claimed.attempts)
        .values(
            state=DEAD if dead else PENDING,
            attempts=claimed.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_status=status,
            last_error=error,
        )
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def requeue(session: Session, delivery_id: int, at: datetime) -> WebhookDelivery | None:
    """A dead or pending delivery pending again and due at ``at``; None if there is no such delivery. A delivered
    one is returned unchanged (the caller refuses it)."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is not None and row.state != DELIVERED:
        row.state, row.next_attempt_at = PENDING, at
        session.flush()
    return row


def pending(session: Session, limit: int) -> list[tuple[int, datetime]]:
    """(id, next attempt) of up to ``limit`` pending deliveries, soonest first."""
    c = _TABLE.c
    stmt = select(c.id, c.next_attempt_at).where(c.state == PENDING).order_by(c.next_attempt_at, c.id).limit(limit)
    return [(row_id, at) for row_id, at in session.execute(stmt)]


def due(session: Session, now: datetime, limit: int) -> list[int]:
    """Ids of up to ``limit`` pending deliveries due by ``now``, longest waiting first."""
    c = _TABLE.c
    stmt = (
        select(c.id).where(c.state == PENDING, c.next_attempt_at <= now).order_by(c.next_attempt_at, c.id).limit(limit)
    )
    return list(session.scalars(stmt))


def count(session: Session, state: str | None = None) -> int:
    stmt = select(func.count()).select_from(_TABLE)
    if state is not None:
        stmt = stmt.where(_TABLE.c.state == state)
    return session.scalar(stmt) or 0


def page(
    session: Session, state: str | None, trigger_id: uuid.UUID | None, walk: paging.Walk, limit: int
) -> tuple[list[WebhookDelivery], frozenset[int]]:
    """Newest first, those ``walk`` has not returned, in ``state`` and of ``trigger_id`` if given; and the
    transactions in progress meanwhile (dust.storage.repositories.paging)."""
    stmt = select(WebhookDelivery)
    if state is not None:
        stmt = stmt.where(WebhookDelivery.state == state)
    if trigger_id is not None:
        stmt = stmt.where(WebhookDelivery.trigger_id == trigger_id)
    return paging.page(session, stmt, (WebhookDelivery.id,), WebhookDelivery.txid, walk, limit, descending=True)
