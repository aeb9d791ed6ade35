"""Queries over ``models``: versions per name, a training run's outcome, and the artefact (read only to predict)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.storage.models import Model

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


def next_version(session: Session, name: str) -> int:
    return (session.scalar(select(func.max(Model.version)).where(Model.name == name)) or 0) + 1


def add(session: Session, fields: dict[str, Any]) -> Model | None:
    """Insert a model; None if its (name, version) was taken meanwhile (a concurrent training of the name)."""
    row = Model(status=QUEUED, **fields)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return row


def get(session: Session, model_id: uuid.UUID) -> Model | None:
    return session.get(Model, model_id)


def artefact(session: Session, model_id: uuid.UUID) -> bytes | None:
    return session.scalar(select(Model.artefact).where(Model.id == model_id))


def page(
    session: Session,
    *,
    name: str | None,
    seen_by: ColumnElement[bool] | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Model]:
    """Up to ``limit`` models, newest first, older than ``before`` (created_at, id); ``seen_by``: a condition on
    the rows (who may see them)."""
    stmt = select(Model).order_by(Model.created_at.desc(), Model.id.desc()).limit(limit)
    if name is not None:
        stmt = stmt.where(Model.name == name)
    if seen_by is not None:
        stmt = stmt.where(seen_by)
    if before is not None:
        at, last = before
        stmt = stmt.where(or_(Model.created_at < at, and_(Model.created_at == at, Model.id < last)))
    return list(session.scalars(stmt))


def visible_to(user_id: str) -> ColumnElement[bool]:
    """The models a user who is not an admin may see: their own, and those shared."""
    return or_(Model.created_by == user_id, Model.shared.is_(True))


def start(session: Session, model_id: uuid.UUID) -> None:
    """Running, unless it has an outcome already (a job run again after its outcome was recorded here)."""
    unfinished = and_(Model.id == model_id, Model.status.in_([QUEUED, RUNNING]))
    session.execute(update(Model).where(unfinished).values(status=RUNNING, error=None))


def succeed(
    session: Session,
    model_id: uuid.UUID,
    *,
    metrics: dict[str, Any],
    data_version: datetime,
    artefact: bytes,
    now: datetime,
) -> None:
    values = {
        "status": SUCCEEDED,
        "metrics": metrics,
        "data_version": data_version,
        "artefact": artefact,
        "artefact_bytes": len(artefact),
        "error": None,
        "finished_at": now,
    }
    session.execute(update(Model).where(Model.id == model_id).values(**values))


def fail(session: Session, model_id: uuid.UUID, error: str, now: datetime) -> None:
    unfinished = and_(Model.id == model_id, Model.status != SUCCEEDED)
    session.execute(update(Model).where(unfinished).values(status=FAILED, error=error, finished_at=now))
