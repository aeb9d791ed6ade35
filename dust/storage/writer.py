"""Group commit: the small writes of many requests in one transaction.

A read's audit record must be committed before the read is answered, but taking the write lock for it in the
read's own transaction made readers queue behind each other (SQLite) and pay a commit each (PostgreSQL). Instead
a read hands its writes here after its read-only transaction ends and waits: whatever requests are waiting
meanwhile go into the same transaction, so under load one commit serves many of them, and only the writer (and
real writers) ever waits for SQLite's write lock. The audit rows of a whole batch go in as one executemany, or on
PostgreSQL's loop as one INSERT (``Append``).

A request on the event loop awaits ``written(writes)``: the wait holds neither a worker thread nor the loop (a
blocking wait on the loop stalled every other request for the length of a commit). Its limit (``wait_seconds``) is
kept by one sweep a second on each loop (``_sweep``), not by a timer a request: an ``asyncio.timeout`` cost ~6 µs
a read, and its cancelled timer, one a read for the 60 s of the limit, stayed in the loop's heap, where every
other timer (uvicorn's keep-alive, one a response) is pushed and which the loop rebuilds whenever half of it is
cancelled.

Who commits: the event loop, with the loop's sessions (``dust.storage.loop``), if the database has them; else a
thread of its own. Handing a batch to the thread and back cost the loop more CPU than the commit (bench/serve.py:
entity get answered a fifth fewer requests on SQLite, and on PostgreSQL 639 against 798 a second).
- **PostgreSQL**: one commit at a time per loop, awaited in a greenlet (dust.storage.loop): the records of the
  requests answered while it waits on the network go into the next. A batch of audit records only (the usual
  one) is one INSERT of all its rows in autocommit, on a connection the loop keeps for them: a statement is its
  own transaction, so it needs no BEGIN and COMMIT round trips (``dust.storage.loop.AppendsAtOnce``).
- **SQLite file**: the loop commits what its requests left, with those answered meanwhile, at once if the write
  lock is free that moment, and hands them to the thread if not (nothing on the loop ever waits for the lock).
  Under load (a commit on the loop in the last ``BUSY_SECONDS`` that served several requests) the loop lets
  records gather for ``GATHER_SECONDS`` first: fewer, larger transactions; a lone client's reads, one after
  another, wait for no one. The loop's commits never checkpoint SQLite's WAL (5-16 ms of copying and syncing,
  dust.storage.db): every ``CHECKPOINT_EVERY``-th batch, the thread checkpoints the WAL outside any transaction
  and without the write lock, with no request waiting for it (``checkpoint_wal``). It used to commit that batch
  with the checkpoint inside, holding the lock: the batch's requests waited for the copy, the loop's next commits
  queued behind it, and that set the p99 of every audited read (entity get 25-33 ms at half load, 11 without).
A batch that fails on the loop goes to the thread, which gives each request its own transaction and outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.orm import Session, sessionmaker

from dust.core.errors import Unavailable
from dust.core.logging import get_logger
from dust.storage.db import Append, Write, WriteLockBusy, checkpoint_wal, core_unit_of_work, unit_of_work
from dust.storage.loop import LoopSessions

log = get_logger(__name__)
MAX_BATCH = 1000  # requests per transaction: bounds one transaction's size when a backlog builds up
IDLE_SECONDS = 2.0  # the thread ends after this long without work (and starts again on the next)
GATHER_SECONDS = 0.001  # on the loop, under load: how long records gather before their commit
BUSY_SECONDS = 0.01  # on the loop: "under load" is a commit this recently
CHECKPOINT_EVERY = 100  # on the loop: every this many batches, the thread checkpoints SQLite's WAL
SWEEP_SECONDS = 1.0  # how often a loop looks for awaited writes past their limit (so late by at most this)


@dataclass
class _Job:
    writes: list[Write]
    done: threading.Event | None = None  # set when committed, for a waiting thread (write)
    finished: asyncio.Future[None] | None = None  # settled when committed, for an awaiting request (written)
    error: BaseException | None = None
    checkpoint: bool = False  # not a write: the thread checkpoints SQLite's WAL, once what it commits is settled


class BatchWriter:
    """``write(writes)`` commits ``writes`` (callables given a session) and returns; raises if they failed."""

    def __init__(
        self, sessions: sessionmaker[Session], wait_seconds: float = 60.0, *, loop: LoopSessions | None = None
    ) -> None:
        self._sessions = sessions
        self._wait = wait_seconds
        self._loop = loop
        self._held: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # on the loop: what each loop commits next
        self._committing: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}  # PostgreSQL: the loop's commits
        self._last_on_loop = float("-inf")  # SQLite, on the loop: the loop's time of its last commit
        self._loop_batches = 0  # SQLite, on the loop: batches the loop has taken
        self._last_batch = 0  # SQLite, on the loop: how many jobs the last one had
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        # on each loop: the awaited writes, with when each is past its limit (arrival order: also limit order)
        self._waiting: dict[asyncio.AbstractEventLoop, deque[tuple[float, asyncio.Future[None]]]] = {}

    @property
    def running(self) -> bool:
        """Whether the thread is there (it ends after IDLE_SECONDS without work)."""
        return self._running

    def write(self, writes: list[Write]) -> None:
        if not writes:
            return
        done = threading.Event()
        job = self._submit(_Job(writes, done=done))
        if not done.wait(self._wait):
            raise self._late()
        if job.error is not None:
            raise job.error

    async def written(self, writes: list[Write]) -> None:
        """``write(writes)`` for a coroutine: it waits on the event loop, holding no thread."""
        if not writes:
            return
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        job = _Job(writes, finished=finished)
        if self._loop is None:
            self._submit(job)
        elif self._loop.over_network:
            self._queue(job, loop)
        else:
            self._hold(job, loop)
        self._watch(loop, finished)
        await finished  # raises _late() once past the limit (_sweep)
        if job.error is not None:
            raise job.error

    def _watch(self, loop: asyncio.AbstractEventLoop, finished: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = deque()
            loop.call_later(min(SWEEP_SECONDS, self._wait), self._sweep, loop)
        waiting.append((loop.time() + self._wait, finished))

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the loop's awaited writes that are past their limit, and forget those settled, from the front;
        again in ``SWEEP_SECONDS`` while any wait."""
        now, waiting = loop.time(), self._waiting[loop]
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, finished = waiting.popleft()
            if not finished.done():
                finished.set_exception(self._late())
        if waiting:
            loop.call_later(min(SWEEP_SECONDS, self._wait), self._sweep, loop)
        else:
            del self._waiting[loop]

    def _submit(self, job: _Job) -> _Job:
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="dust-batch-writer", daemon=True).start()
        return job

    def _queue(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Over the network (PostgreSQL): the job goes into the loop's next commit, which starts now unless one
        is under way."""
        self._held.setdefault(loop, []).append(job)
        if loop not in self._committing:
            self._committing[loop] = loop.create_task(self._commit_queued(loop))

    async def _commit_queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the loop's queued jobs, batch after batch, until none are left."""
        assert self._loop is not None
        try:
            while batch := self._held.pop(loop, None):
                try:
                    await self._loop.run(self._run_jobs, batch, sessions=self._loop.writes, appends=self._loop.appends)
                except Exception as error:
                    self._to_thread(batch, error)
                else:
                    _settle([job.finished for job in batch if job.finished is not None])
        finally:
            del self._committing[loop]

    def _hold(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        held = self._held.setdefault(loop, [])
        held.append(job)
        if len(held) == 1:
            if self._last_batch > 1 and loop.time() - self._last_on_loop < BUSY_SECONDS:
                loop.call_later(GATHER_SECONDS, self._commit_held, loop)
            else:
                loop.call_soon(self._commit_held, loop)

    def _commit_held(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: commit the held jobs if the write lock is free this moment; else (or if they fail) the
        thread takes them, and waits for the lock (or gives each job its own transaction)."""
        assert self._loop is not None
        batch = self._held.pop(loop)
        self._last_on_loop, self._last_batch = loop.time(), len(batch)
        self._loop_batches += 1
        if self._loop_batches % CHECKPOINT_EVERY == 0:
            self._submit(_Job([], checkpoint=True))
        try:
            self._run_jobs(batch, wait=False, appends=self._loop.appends)
        except WriteLockBusy:
            self._to_thread(batch)
        except Exception as error:
            self._to_thread(batch, error)
        else:
            _settle([job.finished for job in batch if job.finished is not None])

    def _to_thread(self, batch: list[_Job], error: Exception | None = None) -> None:
        if error is not None:
            log.warning("a batched write failed on the loop; retrying in the writer's thread", error=str(error))
        for job in batch:
            self._submit(job)

    def _late(self) -> Unavailable:
        return Unavailable(
            f"the database did not take this request's audit record within {self._wait:.0f} s; retry shortly",
            headers={"Retry-After": "5"},
        )

    def _run(self) -> None:
        while True:
            try:
                first = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # a job put after the timeout but before this would otherwise wait forever
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            self._commit(self._drain(first))

    def _drain(self, first: _Job) -> list[_Job]:
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, jobs: list[_Job]) -> None:
        batch = [job for job in jobs if not job.checkpoint]
        if batch:
            self._commit_batch(batch)
        if len(batch) < len(jobs):  # after the batch's requests are settled: none of them waits for it
            try:
                checkpoint_wal(self._sessions.kw["bind"])
            except Exception:
                log.exception("checkpointing SQLite's WAL failed; the next commit past its size limit will")

    def _commit_batch(self, batch: list[_Job]) -> None:
        try:
            self._run_jobs(batch)
        except Exception:
            # One job's failure must not fail the others: give each its own transaction and its own outcome.
            for job in batch:
                try:
                    self._run_jobs([job])
                except Exception as error:  # handed to the waiting request, which answers with it
                    log.exception("batched write failed")
                    job.error = error
        waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for job in batch:
            if job.done is not None:
                job.done.set()
            if job.finished is not None:
                waiting.setdefault(job.finished.get_loop(), []).append(job.finished)
        for loop, futures in waiting.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, futures)

    def _run_jobs(
        self,
        batch: list[_Job],
        wait: bool = True,
        sessions: sessionmaker[Session] | None = None,
        appends: Callable[[list[Append]], bool] | None = None,
    ) -> None:
        """In one transaction (of ``sessions``, by default the thread's); ``wait=False``: only if the write lock is
        free this moment (else WriteLockBusy). The Appends of all the jobs go in last, one executemany each.
        ``appends``: the loop's own commit of a batch of Appends only, if it takes them (``dust.storage.loop``)."""
        factory = sessions or self._sessions
        merged: dict[Insert, list[dict[str, Any]]] = {}
        others: list[Write] = []
        for write in (write for job in batch for write in job.writes):
            if isinstance(write, Append):
                merged.setdefault(write.statement, []).extend(write.rows)
            else:
                others.append(write)
        together = [Append(statement, rows) for statement, rows in merged.items()]
        if appends is not None and not others and appends(together):
            return  # committed on the connection the loop keeps for them
        if not others:  # audit records only, as most batches are: no Session to set up
            with core_unit_of_work(factory, wait=wait) as connection:
                for append in together:
                    append(connection)
            return
        with unit_of_work(factory, wait=wait) as session:
            for write in others:
                write(session)
            for append in together:
                append(session)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for finished in futures:
        if not finished.done():  # a request that timed out has cancelled its own
            finished.set_result(None)
