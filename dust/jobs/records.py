"""User-visible jobs: a row in ``jobs`` (the record of truth) and a message that carries only its id.

``submit`` inserts the row and defers its run. A run (the ``jobs.run`` task) claims the row — queued → running,
in one UPDATE — so a message delivered twice, or enqueued again by a sweep, runs the job once. It reports progress
in short transactions of its own and records succeeded with the result, or failed with the error.

``sweep`` runs when a worker starts, and every ``SWEEP_SECONDS`` after: it enqueues again the jobs still queued
whose message may be lost (an in-memory queue, a crash between commit and enqueue, a queue that was away), and
takes back the jobs left running by a worker that is gone (``_gone``). Such a job is queued again, or failed once
it has been started ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dust.core.config import Settings
from dust.core.errors import DustError, InvalidInput, NotFound
from dust.core.logging import get_logger
from dust.core.security import Permission
from dust.engine import access
from dust.engine.paging import keyset_after, keyset_cursor
from dust.jobs import registry
from dust.jobs.queue import Context, defer
from dust.storage.models import Job, utcnow
from dust.storage.repositories import jobs as repo

log = get_logger("dust.jobs")
MAX_ATTEMPTS = 3  # starts of a job before a sweep fails it rather than queueing it again
HEARTBEAT_SECONDS = 10.0  # how often a worker says its jobs are still running
STALE_SECONDS = 120.0  # a job running on another host, not heard of for this long, is taken back
HUNG_SECONDS = 3600.0  # and on this host, where the worker's process is seen alive, this long
SWEEP_SECONDS = 30.0
SWEEP_BATCH = 10_000  # queued jobs enqueued again by one sweep
MAX_MESSAGE = 1000
MAX_ERROR = 2000
HOST = socket.gethostname()
State = Literal["queued", "running", "succeeded", "failed"]


class JobPublic(BaseModel):
    id: uuid.UUID
    kind: str
    state: State
    progress: float = Field(description="0..1; 1 once succeeded.")
    message: str | None = Field(description="What the job is doing, in its own words.")
    result: dict[str, Any] | None = Field(description="What it produced, once succeeded.")
    error: str | None = Field(description="Why it failed.")
    attempts: int = Field(description="Times it was started (a worker that stopped mid-run leaves it to another).")
    created_by: str | None = Field(description="The id of the user who submitted it.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = None


class JobAccepted(BaseModel):
    """The answer to a request that runs as a job: follow ``Location`` (GET /jobs/{id}) to its state."""

    job_id: uuid.UUID
    kind: str
    state: State = "queued"


def public(row: Job) -> JobPublic:
    return JobPublic.model_validate(row, from_attributes=True)


# --- submitting and reading -------------------------------------------------------------------------------------


def submit(session: Session, kind: str, payload: dict[str, Any], *, created_by: str | None = None) -> uuid.UUID:
    """Record a job of ``kind`` (registered with ``@kind``) with ``payload`` (JSON), to run once this
    transaction commits; its id."""
    registry.kind_named(kind)  # LookupError for a kind no worker could run
    json.dumps(payload)  # TypeError for what the jobs table cannot hold
    row = repo.add(session, kind, payload, created_by, utcnow())
    defer(session, "jobs.run", str(row.id))
    return row.id


def get(session: Session, job_id: uuid.UUID) -> JobPublic:
    """A job, for admins and for the user who submitted it; 404 for anyone else, as for no such job."""
    row = repo.get(session, job_id)
    who = access.principal(session)
    if row is None or (who is not None and not who.may(Permission.admin) and row.created_by != str(who.user_id)):
        raise NotFound(f"job {job_id} does not exist")
    return public(row)


def list_(
    session: Session,
    *,
    state: str | None = None,
    kind: str | None = None,
    created_by: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobList:
    """Jobs newest first (admins: everyone's)."""
    access.require(session, Permission.admin)
    if state is not None and state not in repo.STATES:
        raise InvalidInput(f"state '{state}' is none of {', '.join(repo.STATES)}")
    rows = repo.page(
        session, state=state, kind=kind, created_by=created_by, before=keyset_after(cursor), limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = keyset_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return JobList(items=[public(row) for row in rows], next_cursor=next_cursor)


# --- running ----------------------------------------------------------------------------------------------------


def worker_name() -> str:
    return f"{HOST}:{os.getpid()}"


@dataclass
class JobRun:
    """One run of a job, handed to its kind: the job's ids and payload, sessions of the worker, and ``progress``."""

    context: Context
    id: uuid.UUID
    kind: str
    created_by: str | None
    attempt: int

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def session(self) -> AbstractContextManager[Session]:
        """One transaction (``with run.session() as s:``)."""
        return self.context.session()

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far the job is (0..1) and, optionally, what it is doing; in a transaction of its own.

        On SQLite, call it between the job's transactions, not inside one that has written: it would wait for
        that one's lock."""
        if not (0.0 <= fraction <= 1.0) or math.isnan(fraction):
            raise ValueError(f"progress {fraction} is outside 0..1")
        with self.context.session() as session:
            repo.progress(session, self.id, self.attempt, fraction, _cut(message, MAX_MESSAGE), utcnow())


@registry.task("jobs.run")
def run(context: Context, job_id: str) -> None:
    """Claim the job and run its kind; a job already taken or done is left alone."""
    jid = uuid.UUID(job_id)
    with context.running(jid):  # from before the claim: a sweep must never see it running here and unattended
        with context.session() as session:
            claimed = repo.claim(session, jid, worker_name(), utcnow())
        if claimed is None:
            log.debug("job not queued: taken or done", job=job_id)
            return
        _execute(context, jid, claimed)


def _execute(context: Context, jid: uuid.UUID, claimed: repo.Claimed) -> None:
    run_ = JobRun(context, jid, claimed.kind, claimed.created_by, claimed.attempts)
    log.info("job started", job=str(jid), kind=claimed.kind, attempt=claimed.attempts)
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        result = _as_result(registry.kind_named(claimed.kind)(run_, claimed.payload))
    except DustError as problem:
        error = problem.detail
    except LookupError as problem:  # a kind this worker does not know (an older version?)
        error = str(problem)
    except Exception:
        log.exception("job failed unexpectedly", job=str(jid), kind=claimed.kind)
        error = f"an unexpected error stopped the job; the worker's log has the details (job {jid})"
    with context.session() as session:
        recorded = repo.finish(session, jid, claimed.attempts, utcnow(), result=result, error=_cut(error, MAX_ERROR))
    if error is None:
        log.info("job succeeded", job=str(jid), kind=claimed.kind)
    else:
        log.info("job failed", job=str(jid), kind=claimed.kind, error=error)
    if not recorded:  # taken back meanwhile (its worker seemed gone): the next run's outcome stands
        log.warning("job outcome not recorded: the job was taken back meanwhile", job=str(jid))


def _as_result(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    if not isinstance(value, dict):
        raise TypeError(f"a job kind returns a dict, a pydantic model or None, not {type(value).__name__}")
    json.dumps(value)
    return value


def _cut(text: str | None, most: int) -> str | None:
    return text if text is None or len(text) <= most else text[: most - 1] + "…"


# --- sweeping -----------------------------------------------------------------------------------------------------


def sweep(context: Context, *, starting: bool) -> None:
    """Enqueue again what may have lost its message, and take back jobs of workers that are gone."""
    now = utcnow()
    with context.session() as session:
        requeued = _take_back(session, context, now)
        queued = _lost(session, context, now, starting)
        for jid in set(queued) | set(requeued):
            defer(session, "jobs.run", str(jid))
    if queued or requeued:
        log.info("jobs swept", queued=len(queued), taken_back=len(requeued))
    if starting:
        for name, hook in registry.sweep_hooks().items():
            try:
                hook(context)
            except Exception:
                log.exception("sweep hook failed", hook=name)


def _lost(session: Session, context: Context, now: datetime, starting: bool) -> list[uuid.UUID]:
    """Queued jobs whose message may be lost: all of them at start; later, those queued for ``STALE_SECONDS``
    while the queue is empty (the queue was away when they were sent, say). A duplicate message costs a claim
    that finds nothing; a backlog is never doubled, since the queue is empty."""
    if starting:
        return repo.queued_ids(session, SWEEP_BATCH)
    if context.queue.huey.pending_count():
        return []
    return repo.queued_ids(session, SWEEP_BATCH, before=now - timedelta(seconds=STALE_SECONDS))


def _take_back(session: Session, context: Context, now: datetime) -> list[uuid.UUID]:
    queued_again = []
    for job in repo.running(session):
        if not _gone(job, context, now):
            continue
        error = None
        if job.attempts >= MAX_ATTEMPTS:
            error = f"its worker stopped while running it, {job.attempts} times (killed, or out of memory?)"
        if repo.take_back(session, job, error=error, now=now) and error is None:
            queued_again.append(job.id)
        log.warning("job taken back from a worker that is gone", job=str(job.id), worker=job.worker, failed=bool(error))
    return queued_again


def _gone(job: repo.Running, context: Context, now: datetime) -> bool:
    """Whether the worker that runs ``job`` is gone. On this host its process tells: dead, or (alive) silent for
    ``HUNG_SECONDS`` — a live process may be kept from beating for a while by a long SQLite transaction of its
    job, and its pid may have gone to another program since. On another host, silence for ``STALE_SECONDS``."""
    host, _, pid = (job.worker or "").rpartition(":")
    silent = math.inf if job.heartbeat_at is None else (now - job.heartbeat_at).total_seconds()
    if host != HOST or not pid.isdigit():
        return silent > STALE_SECONDS
    if int(pid) == os.getpid():
        return job.id not in context.runs()  # this process, but not running it: a previous one of this pid
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return silent > HUNG_SECONDS


def beat(context: Context) -> None:
    """Say that this worker's running jobs are still running."""
    running = context.runs()
    if running:
        with context.session() as session:
            repo.heartbeat(session, running, worker_name(), utcnow())
