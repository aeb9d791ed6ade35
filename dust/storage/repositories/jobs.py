"""Queries over ``jobs``: background jobs' state (dust.jobs.records).

A run claims its job with one UPDATE that matches only a queued row, and every later write of that run (progress,
outcome) matches only the row as it claimed it (running, with the same ``attempts``): a duplicate message finds
nothing to claim, and a run whose job was taken back from it (its worker seemed dead) cannot overwrite the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from dust.storage.models import Job

_TABLE = cast(Table, Job.__table__)
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Claimed:
    """What a run needs of the job it claimed; ``attempts`` (this run's number) identifies the run."""

    kind: str
    payload: dict[str, Any]
    created_by: str | None
    attempts: int


@dataclass(frozen=True)
class Running:
    id: uuid.UUID
    worker: str | None
    heartbeat_at: datetime | None
    attempts: int


def add(session: Session, kind: str, payload: dict[str, Any], created_by: str | None, now: datetime) -> Job:
    row = Job(kind=kind, payload=payload, state=QUEUED, progress=0.0, attempts=0, created_by=created_by, created_at=now)
    session.add(row)
    session.flush()
    return row


def get(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id)


def claim(session: Session, job_id: uuid.UUID, worker: str, now: datetime) -> Claimed | None:
    """Take a queued job for a run by ``worker``; None if it is not queued (taken, done, or no such job)."""
    c = _TABLE.c
    taken = session.execute(
        update(_TABLE)
        .where(c.id == job_id, c.state == QUEUED)
        .values(state=RUNNING, attempts=c.attempts + 1, started_at=now, heartbeat_at=now, worker=worker, progress=0.0)
        .returning(c.kind, c.payload, c.created_by, c.attempts)
    ).first()
    return None if taken is None else Claimed(*taken)


def _run_of(job_id: uuid.UUID, attempts: int) -> ColumnElement[bool]:
    c = _TABLE.c
    return and_(c.id == job_id, c.state == RUNNING, c.attempts == attempts)


def progress(
    session: Session, job_id: uuid.UUID, attempts: int, fraction: float, message: str | None, now: datetime
) -> bool:
    values: dict[str, Any] = {"progress": fraction, "heartbeat_at": now}
    if message is not None:
        values["message"] = message
    done = session.execute(update(_TABLE).where(_run_of(job_id, attempts)).values(**values))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def finish(
    session: Session,
    job_id: uuid.UUID,
    attempts: int,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the run's outcome: succeeded with ``result``, or failed with ``error``."""
    values: dict[str, Any] = {"finished_at": now, "heartbeat_at": now, "worker": None}
    if error is None:
        values.update(state=SUCCEEDED, progress=1.0, result=result, error=None)
    else:
        values.update(state=FAILED, error=error)
    done = session.execute(update(_TABLE).where(_run_of(job_id, attempts)).values(**values))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def heartbeat(session: Session, job_ids: Collection[uuid.UUID], worker: str, now: datetime) -> None:
    c = _TABLE.c
    if job_ids:
        mine = and_(c.id.in_(list(job_ids)), c.state == RUNNING, c.worker == worker)
        session.execute(update(_TABLE).where(mine).values(heartbeat_at=now))


def queued_ids(session: Session, limit: int, *, before: datetime | None = None) -> list[uuid.UUID]:
    """Queued jobs, oldest first; only those created before ``before``, if given."""
    c = _TABLE.c
    stmt = select(c.id).where(c.state == QUEUED).order_by(c.created_at).limit(limit)
    if before is not None:
        stmt = stmt.where(c.created_at < before)
    return list(session.scalars(stmt))


def running(session: Session) -> list[Running]:
    c = _TABLE.c
    rows = session.execute(select(c.id, c.worker, c.heartbeat_at, c.attempts).where(c.state == RUNNING))
    return [Running(*row) for row in rows]


def count_by_state(session: Session) -> dict[str, int]:
    """How many jobs are in each state (a state with none is absent)."""
    rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
    return {state: count for state, count in rows}


def take_back(session: Session, job: Running, *, error: str | None, now: datetime) -> bool:
    """A run whose worker is gone: its job queued again, or failed with ``error``; False if the run ended or
    reported meanwhile."""
    c = _TABLE.c
    still = and_(_run_of(job.id, job.attempts), _same(c.worker, job.worker), _same(c.heartbeat_at, job.heartbeat_at))
    if error is None:
        values: dict[str, Any] = {"state": QUEUED, "worker": None, "message": "queued again: its worker stopped"}
    else:
        values = {"state": FAILED, "worker": None, "error": error, "finished_at": now}
    done = session.execute(update(_TABLE).where(still).values(**values))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def _same(column: Any, value: Any) -> ColumnElement[bool]:
    return cast(ColumnElement[bool], column.is_(None) if value is None else column == value)


def page(
    session: Session,
    *,
    state: str | None,
    kind: str | None,
    created_by: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Job]:
    """Up to ``limit`` jobs, newest first, older than ``before`` (created_at, id)."""
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if created_by is not None:
        stmt = stmt.where(Job.created_by == created_by)
    if before is not None:
        at, last = before
        stmt = stmt.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last)))
    return list(session.scalars(stmt))
