"""The queue of one DUST database, on huey, and ``defer``: run a task once the transaction that asked commits.

Where the queue lives follows the settings:
- ``DUST_REDIS_URL``: Redis (huey's RedisHuey, blocking reads), shared by every process of a team's deployment;
  ``dust worker`` processes consume it;
- else ``DUST_JOBS_PATH``, or a SQLite database file's neighbour (``dust.db`` → ``dust.jobs.db``): a SQLite file
  (SqliteHuey) that survives restarts; ``dust serve`` consumes it itself;
- else (an in-memory database, or PostgreSQL without Redis) in this process's memory (MemoryHuey): consumed by
  this process's own worker, and lost with it; the ``jobs`` table and the sweep at the next start recover what
  matters (``dust.jobs.records.sweep``).

Each database gets its own queue name (a hash of its URL), so two deployments on one Redis never take each
other's messages. A message carries a task's name and JSON arguments, in JSON: never pickle, which would let
whoever can write to Redis run code in every worker.

Sessions find their queue on ``session.info``, put there by their sessionmaker (``attach``), as they find the
app's caches (``dust.engine.caches``). A session without one (a plain script) defers nothing: durable work is in
tables (the ``jobs`` table, the webhook outbox), and a worker's start-up sweep enqueues it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from dust.core.config import Settings
from dust.core.logging import get_logger
from dust.jobs import registry
from dust.storage.db import unit_of_work

log = get_logger("dust.jobs")
QUEUE = "dust.jobs.queue"  # session.info: the JobQueue its deferred tasks go to
DEFERRED = "dust.jobs.deferred"  # session.info: what this transaction deferred, sent when it commits
SQLITE_BUSY_SECONDS = 30  # as dust.storage.db: how long the queue file's writer waits for its lock
Backend = Literal["redis", "sqlite", "memory"]


@dataclass(frozen=True)
class Location:
    backend: Backend
    target: str | None  # the Redis URL or the SQLite file; None in memory
    name: str  # the queue's name: one per DUST database


def location(settings: Settings) -> Location:
    """Where the queue of ``settings``' database lives (see the module's docstring)."""
    url = make_url(settings.database_url)
    on_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    sqlite_file = url.database if on_file else None
    identity = f"sqlite:{Path(sqlite_file).resolve()}" if sqlite_file else url.render_as_string(hide_password=True)
    name = "dust_" + hashlib.sha256(identity.encode()).hexdigest()[:16]
    if settings.redis_url:
        return Location("redis", settings.redis_url, name)
    if settings.jobs_path:
        return Location("sqlite", str(Path(settings.jobs_path).resolve()), name)
    if sqlite_file:
        database = Path(sqlite_file).resolve()
        return Location("sqlite", str(database.with_name(database.stem + ".jobs.db")), name)
    return Location("memory", None, name)


@dataclass
class Context:
    """What a task gets first: the worker's settings and sessions on its database. Each ``session()`` is one
    transaction, whose deferred tasks are sent when it commits."""

    settings: Settings
    sessions: sessionmaker[Session]
    queue: JobQueue
    _running: Counter[Any] = field(default_factory=Counter)  # the jobs this worker runs now, by id (and how often)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with unit_of_work(self.sessions) as session:
            yield session

    @contextmanager
    def running(self, job_id: Any) -> Iterator[None]:
        """Count ``job_id`` as run by this worker meanwhile (a duplicate message in another thread counts apart)."""
        with self._lock:
            self._running[job_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[job_id] -= 1
                if self._running[job_id] <= 0:
                    del self._running[job_id]

    def runs(self) -> set[Any]:
        """The ids of the jobs this worker is running now."""
        with self._lock:
            return set(self._running)


class JobQueue:
    """One database's queue. The huey instance (and the SQLite file or Redis connection) is made on first use."""

    def __init__(self, where: Location) -> None:
        self.where = where
        self._contexts: list[Context] = []  # of the workers consuming this queue in this process, newest last
        self._made = threading.Lock()

    @property
    def shared(self) -> bool:
        """Other processes consume it (Redis): ``dust serve`` leaves the work to ``dust worker``."""
        return self.where.backend == "redis"

    @property
    def durable(self) -> bool:
        """Its messages survive the process that enqueued them."""
        return self.where.backend != "memory"

    @cached_property
    def huey(self) -> Huey:
        with self._made:
            return self._make()

    def _make(self) -> Huey:
        common: dict[str, Any] = {"results": False, "serializer": _JsonMessages(), "utc": True}
        where = self.where
        huey: Huey
        if where.backend == "redis":
            huey = RedisHuey(where.name, url=where.target, blocking=True, read_timeout=1, **common)
        elif where.backend == "sqlite":
            assert where.target is not None
            Path(where.target).parent.mkdir(parents=True, exist_ok=True)
            huey = SqliteHuey(where.name, filename=where.target, timeout=SQLITE_BUSY_SECONDS, **common)
        else:
            huey = MemoryHuey(where.name, **common)
        self._dispatch = huey.task(name="run")(self._run)
        return huey

    def send(self, name: str, args: list[Any], delay: float = 0.0) -> None:
        """Enqueue task ``name`` with ``args`` now (``delay``: to run that many seconds from now)."""
        self.huey  # noqa: B018 (made on first use, with its dispatcher)
        if delay > 0:
            self._dispatch.schedule(args=(name, args), delay=delay)
        else:
            self._dispatch(name, args)

    def bind(self, context: Context) -> None:
        self._contexts.append(context)

    def unbind(self, context: Context) -> None:
        if context in self._contexts:
            self._contexts.remove(context)

    def _run(self, name: str, args: list[Any]) -> None:
        """Every message runs here, in a consumer thread: the registered task of that name."""
        if not self._contexts:
            log.error("job message taken by no worker", task=name)  # a consumer not started by Worker
            return
        try:
            task = registry.task_named(name)
        except LookupError as problem:  # e.g. sent by a newer version: its durable work stays in its tables
            log.error("job message for an unknown task", task=name, error=str(problem))
            return
        try:
            task(self._contexts[-1], *args)
        except Exception:
            log.exception("task failed", task=name)

    def __repr__(self) -> str:
        return f"JobQueue({self.where.backend}, {self.where.name})"


class _JsonMessages(Serializer):
    """huey's messages as JSON. DUST sends plain messages only (no chains, chords or results)."""

    def _serialize(self, data: Any) -> bytes:
        if not isinstance(data, Message):
            raise TypeError(f"DUST's job queue carries task messages only, not {type(data).__name__}")
        fields = data._asdict()
        if any(fields.get(name) is not None for name in ("on_complete", "on_error", "chord_config")):
            raise TypeError("DUST's job queue carries plain task messages (no chains or chords)")
        eta = fields["eta"]
        fields["eta"] = eta.isoformat() if eta is not None else None
        return json.dumps(fields, separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Any:
        fields = json.loads(data)
        if fields.get("eta") is not None:
            fields["eta"] = datetime.fromisoformat(fields["eta"])
        fields["args"] = tuple(fields.get("args") or ())
        return Message(**{name: fields.get(name) for name in Message._fields})


_queues: dict[Location, JobQueue] = {}
_queues_lock = threading.Lock()


def queue_for(settings: Settings) -> JobQueue:
    """The queue of ``settings``' database: one object per location in this process, so an app and the worker
    in the same process share it (an in-memory queue only works so)."""
    where = location(settings)
    with _queues_lock:
        if where not in _queues:
            _queues[where] = JobQueue(where)
        return _queues[where]


def _forget_queues() -> None:
    _queues.clear()  # a forked child must not share the parent's SQLite or Redis connections


os.register_at_fork(after_in_child=_forget_queues)


def attach(factory: sessionmaker[Session], queue: JobQueue) -> None:
    """Sessions made by ``factory`` defer their tasks to ``queue``."""
    factory.configure(info={**factory.kw.get("info", {}), QUEUE: queue})


def of(session: Session) -> JobQueue | None:
    return session.info.get(QUEUE)


# --- defer ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Deferred:
    within: SessionTransaction | None  # the savepoint it was deferred in, if any: its rollback drops it
    name: str
    args: list[Any]
    delay: float


def defer(session: Session, name: str, *args: Any, delay: float = 0.0) -> None:
    """Run task ``name`` with ``args`` (JSON values) once this session's transaction commits, on the session's
    queue; nothing if it rolls back (or if the savepoint it was deferred in does). Without a queue on the session
    (a plain script), nothing: keep the work itself in a table that a sweep hook re-enqueues."""
    registry.task_named(name)  # a typo fails here, in the caller's transaction, not later in a worker
    json.dumps(args)  # and so do arguments a message cannot carry (TypeError)
    queue = of(session)
    if queue is None:
        return
    deferred = _Deferred(session.get_nested_transaction(), name, list(args), max(0.0, float(delay)))
    if not session.in_transaction():
        _send(queue, [deferred])
        return
    session.info.setdefault(DEFERRED, []).append(deferred)


def _send(queue: JobQueue, deferred: list[_Deferred]) -> None:
    for item in deferred:
        try:
            queue.send(item.name, item.args, item.delay)
        except Exception:
            # Committed already: failing now would report a failure for work that is done. The work itself is in
            # a table (a queued job, a pending delivery), and the next worker start re-enqueues it.
            log.exception("could not enqueue a task; the next worker start will sweep it up", task=item.name)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: its tasks wait for the outermost commit
    deferred = session.info.pop(DEFERRED, None)
    queue = of(session)
    if deferred and queue is not None:
        _send(queue, deferred)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    deferred: list[_Deferred] | None = session.info.get(DEFERRED)
    if not deferred:
        return
    if previous.parent is None:
        del session.info[DEFERRED]
        return
    session.info[DEFERRED] = [item for item in deferred if not _inside(item.within, previous)]


def _inside(savepoint: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is ended:
            return True
        savepoint = savepoint.parent
    return False


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(DEFERRED, None)  # sent on commit; dropped on rollback or close
