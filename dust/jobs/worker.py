"""``Worker(settings)``: consume a database's queue in threads of this process.

Used by ``dust worker``, by ``dust serve`` on the embedded default (no Redis), and by tests. A huey consumer runs
the tasks in ``threads`` threads; a keeper thread sweeps at start (``dust.jobs.records.sweep``), then says every
``HEARTBEAT_SECONDS`` that this worker's jobs are still running, and takes back dead workers' jobs every
``SWEEP_SECONDS``. Signals are left to the process's owner (uvicorn, ``dust worker``), who calls ``stop``.

``exclusive``: consume only while holding the queue file's lock, so of the processes of ``dust serve --workers
N`` on a SQLite queue one consumes at a time (the others try again every ``HEARTBEAT_SECONDS``, and one takes
over when it stops). An in-memory queue needs no lock: only its own process can reach it.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from types import TracebackType
from typing import IO

from huey.consumer import Consumer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dust.core.config import Settings
from dust.core.logging import get_logger
from dust.jobs import records, registry
from dust.jobs.queue import Context, JobQueue, attach, queue_for
from dust.storage.db import make_engine, make_sessionmaker

log = get_logger("dust.jobs")
MAX_POLL_SECONDS = 0.5  # longest wait between looks at an idle SQLite or in-memory queue (Redis blocks instead)


class _Consumer(Consumer):
    def _set_signal_handlers(self) -> None:
        """Not ours to take: uvicorn, or ``dust worker``, handles the process's signals and calls ``stop``."""


class Worker:
    """Runs the jobs of ``settings``' database in this process until ``stop`` (or the end of ``with``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        threads: int = 2,
        sessions: sessionmaker[Session] | None = None,
        exclusive: bool = False,
    ) -> None:
        self.settings = settings
        self.threads = threads
        self.queue: JobQueue = queue_for(settings)
        self._sessions = sessions
        self._engine: Engine | None = None
        self._exclusive = exclusive and self.queue.where.backend == "sqlite"
        self._lock_file: IO[bytes] | None = None
        self._consumer: _Consumer | None = None
        self._context: Context | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    @property
    def consuming(self) -> bool:
        return self._consumer is not None

    def start(self) -> Worker:
        registry.load()  # every task and kind known before the first message arrives
        logging.getLogger("huey").setLevel(max(logging.getLogger().level, logging.WARNING))  # a line per task
        sessions = self._sessions
        if sessions is None:
            self._engine = make_engine(self.settings.database_url)
            sessions = make_sessionmaker(self._engine)
        attach(sessions, self.queue)
        self._context = Context(self.settings, sessions, self.queue)
        self._keeper = threading.Thread(target=self._keep, name="dust-jobs-keeper", daemon=True)
        if not self._exclusive or self._lock():
            self._consume()
        self._keeper.start()
        return self

    def _lock(self) -> bool:
        """Whether this process holds the queue file's consumer lock (taken now if free)."""
        assert self.queue.where.target is not None  # a SQLite queue
        if self._lock_file is None:
            self._lock_file = open(self.queue.where.target + ".lock", "ab")  # noqa: SIM115 (held until stop)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _consume(self) -> None:
        assert self._context is not None
        self.queue.bind(self._context)
        consumer = _Consumer(
            self.queue.huey,
            workers=self.threads,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            backoff=1.5,
            max_delay=MAX_POLL_SECONDS,
            scheduler_interval=1,
        )
        consumer.start()
        self._consumer = consumer
        log.info("job worker started", queue=self.queue.where.backend, threads=self.threads)

    def _keep(self) -> None:
        context = self._context
        assert context is not None
        starting = True
        last_sweep = 0.0
        while True:
            if self._consumer is None and self._lock():
                self._consume()
            if self._consumer is not None:
                try:
                    records.beat(context)
                    if starting or time.monotonic() - last_sweep >= records.SWEEP_SECONDS:
                        records.sweep(context, starting=starting)
                        starting, last_sweep = False, time.monotonic()
                    self._consumer.check_worker_health()
                except Exception as problem:  # the database away, or locked by a long job: try again later
                    log.warning("job worker upkeep failed; trying again", error=str(problem)[:500])
            if self._stop.wait(records.HEARTBEAT_SECONDS):
                return

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` seconds for those running to finish. One left running is
        taken back by the next worker's sweep (this process is gone by then)."""
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._consumer is not None:
            self._consumer.stop_flag.set()
            threads = [thread for _, thread in self._consumer.worker_threads] + [self._consumer.scheduler]
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            unfinished = sorted(str(job) for job in self._context.runs()) if self._context else []
            if unfinished:
                log.warning("job worker stopped with jobs running; another worker will take them back", jobs=unfinished)
            log.info("job worker stopped")
        if self._keeper is not None and self._keeper.is_alive():
            self._keeper.join(timeout=5)
        if self._context is not None:
            self.queue.unbind(self._context)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
        if self._engine is not None:
            self._engine.dispose()
        self._consumer = None

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
