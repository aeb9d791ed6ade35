"""Group commit: one thread writes the small writes of many requests in one transaction.

A read's audit record must be committed before the read is answered, but taking the write lock for it in the
read's own transaction made readers queue behind each other (SQLite) and pay a commit each (PostgreSQL). Instead
a read hands its writes here after its read-only transaction ends and waits: whatever requests are waiting
meanwhile go into the same transaction, so under load one commit serves many of them, and only this thread
(and real writers) ever waits for SQLite's write lock.

A request on the event loop awaits ``written(writes)``: the wait holds neither a worker thread nor the loop (a
blocking wait on the loop stalled every other request for the length of a commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from dust.core.errors import Unavailable
from dust.core.logging import get_logger
from dust.storage.db import Write, unit_of_work

log = get_logger(__name__)
MAX_BATCH = 1000  # requests per transaction: bounds one transaction's size when a backlog builds up
IDLE_SECONDS = 2.0  # the thread ends after this long without work (and starts again on the next)


@dataclass
class _Job:
    writes: list[Write]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    wake: Callable[[], None] | None = None  # tells an awaiting request, from the writer's thread


class BatchWriter:
    """``write(writes)`` commits ``writes`` (callables given a session) and returns; raises if they failed."""

    def __init__(self, sessions: sessionmaker[Session], wait_seconds: float = 60.0) -> None:
        self._sessions = sessions
        self._wait = wait_seconds
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    @property
    def running(self) -> bool:
        """Whether the thread is there (it ends after IDLE_SECONDS without work)."""
        return self._running

    def write(self, writes: list[Write]) -> None:
        if not writes:
            return
        job = self._submit(_Job(writes))
        if not job.done.wait(self._wait):
            raise self._late()
        if job.error is not None:
            raise job.error

    async def written(self, writes: list[Write]) -> None:
        """``write(writes)`` for a coroutine: it waits on the event loop, holding no thread."""
        if not writes:
            return
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, finished)

        job = self._submit(_Job(writes, wake=wake))
        try:
            async with asyncio.timeout(self._wait):
                await finished
        except TimeoutError:
            raise self._late() from None
        if job.error is not None:
            raise job.error

    def _submit(self, job: _Job) -> _Job:
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="dust-batch-writer", daemon=True).start()
        return job

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

    def _commit(self, batch: list[_Job]) -> None:
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
        for job in batch:
            job.done.set()
            if job.wake is not None:
                job.wake()

    def _run_jobs(self, batch: list[_Job]) -> None:
        with unit_of_work(self._sessions) as session:
            for job in batch:
                for write in job.writes:
                    write(session)


def _settle(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)
