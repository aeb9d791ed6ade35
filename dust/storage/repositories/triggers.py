"""Queries over ``triggers``, ``trigger_versions`` and ``trigger_firings``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from dust.storage.models import Trigger, TriggerFiring, TriggerVersion, utcnow
from dust.storage.repositories import paging

_FIRINGS = cast(Table, TriggerFiring.__table__)
# Built once: a write may fire many times, and building a statement costs about as much as running it.
_ADD_FIRING = insert(_FIRINGS).returning(_FIRINGS.c.id)


def add(
    session: Session, document: dict[str, Any], scope: dict[str, Any], *, enabled: bool, secret: str, by: str | None
) -> Trigger:
    row = Trigger(name=document["name"], document=document, enabled=enabled, secret=secret, created_by=by, **scope)
    session.add(row)
    session.flush()
    session.add(TriggerVersion(trigger_id=row.id, version=1, document=document, enabled=enabled, changed_by=by))
    session.flush()
    return row


def new_version(
    session: Session, row: Trigger, document: dict[str, Any], scope: dict[str, Any], *, enabled: bool, by: str | None
) -> None:
    row.version += 1
    row.name = document["name"]
    row.document = document
    row.enabled = enabled
    for name, value in scope.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(
        TriggerVersion(trigger_id=row.id, version=row.version, document=document, enabled=enabled, changed_by=by)
    )
    session.flush()


def get(session: Session, trigger_id: uuid.UUID, *, lock: bool = False) -> Trigger | None:
    stmt = select(Trigger).where(Trigger.id == trigger_id)
    return session.scalars(stmt.with_for_update() if lock else stmt).first()


def by_name(session: Session, name: str) -> Trigger | None:
    return session.scalars(select(Trigger).where(Trigger.name == name)).first()


def all_(session: Session) -> list[Trigger]:
    return list(session.scalars(select(Trigger).order_by(Trigger.name)))


def enabled(session: Session) -> list[tuple[uuid.UUID, int]]:
    """(id, version) of the enabled rules: what the write path's index is made of, read per transaction unless
    cached, so no more than that."""
    stmt = select(Trigger.id, Trigger.version).where(Trigger.enabled.is_(True)).order_by(Trigger.name)
    return [(row[0], row[1]) for row in session.execute(stmt)]


def by_ids(session: Session, ids: Sequence[uuid.UUID]) -> list[Trigger]:
    return list(session.scalars(select(Trigger).where(Trigger.id.in_(ids)))) if ids else []


def delete(session: Session, row: Trigger) -> None:
    session.delete(row)
    session.flush()


def versions(session: Session, trigger_id: uuid.UUID) -> list[TriggerVersion]:
    stmt = select(TriggerVersion).where(TriggerVersion.trigger_id == trigger_id).order_by(TriggerVersion.version)
    return list(session.scalars(stmt))


def add_firing(session: Session, row: dict[str, Any]) -> int:
    """Records a firing; its id, which the alerts and webhooks it causes name."""
    return int(session.execute(_ADD_FIRING, row).scalar_one())


def firings_page(
    session: Session, trigger_id: uuid.UUID, walk: paging.Walk, limit: int
) -> tuple[list[TriggerFiring], frozenset[int]]:
    stmt = select(TriggerFiring).where(TriggerFiring.trigger_id == trigger_id)
    return paging.page(session, stmt, (TriggerFiring.id,), TriggerFiring.txid, walk, limit, descending=True)
