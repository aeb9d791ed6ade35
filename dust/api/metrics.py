"""GET /metrics: Prometheus's text format, through prometheus_client.

What is measured: requests by route template (``/api/v1/entities/{entity_id}``, never the raw path, so the number
of series stays bounded) and status class, their latency, the database pool, the cached copies' hits and misses
and the shared cache's Redis errors (``dust.engine.caches``), and, read when scraped, the job queue's depth and the
jobs by state.

The route needs an admin's credential: CONTRACT.md exempts only the health probes, sign-in and the docs, and the
counts say who uses what. Prometheus scrapes with an admin's API key (docs/deploy.md).

``dust serve --workers N`` runs N processes; each counts into files of its own under ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode, set up by the CLI), and whichever worker answers a scrape adds them all up.
The pool's gauges count live workers only: one that crashed is taken out at the next scrape. With one process the
counts stay in its memory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as shared
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dust.api.deps import Router, SessionDep, allow
from dust.api.middleware import route_template
from dust.core.logging import get_logger
from dust.core.security import Permission
from dust.jobs import JobQueue
from dust.storage.repositories import jobs as jobs_repo

router = Router(tags=["health"])
log = get_logger("dust.metrics")
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"  # set: the processes of one server count into files in this folder
UNMATCHED = "unmatched"  # the route label of a request no route matched (any path: one series, not one each)
# Seconds: from a cached credential check (~2 ms) to a long scan; wrk's timeout is 2 s.
POOL_SAMPLE_SECONDS = 1.0  # in multiprocess mode: how often each process writes its pool's connections in use
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Children:
    """A labelled metric's children, kept by their label values: prometheus_client's ``labels()`` checks and
    joins the values under a lock each call, ~6 µs, and a read makes several (its cache lookups, its request's
    count and time)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric
        self._made: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self.metric.labels(*values)
        return child


class Metrics:
    """One app's instruments. In multiprocess mode they register nowhere: a scrape reads every process's files."""

    def __init__(self) -> None:
        disable_created_metrics()  # a *_created series beside each counter doubles the series for no use here
        self.multiprocess = bool(os.environ.get(MULTIPROCESS))
        self.registry = None if self.multiprocess else CollectorRegistry()
        where: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter("dust_http_requests", "HTTP requests answered.", ["method", "route", "status"], **where)
        labels = ["method", "route"]
        self.latency = Histogram(
            "dust_http_request_duration_seconds", "Time to answer, by route.", labels, buckets=BUCKETS, **where
        )
        live = {**where, "multiprocess_mode": "livesum"}  # summed over the processes alive
        self.pool_size = Gauge("dust_db_pool_size", "Connections the database pool keeps open.", **live)
        self.pool_checked_out = Gauge("dust_db_pool_checked_out", "Database connections in use now.", **live)
        self.cache = Counter(
            "dust_cache_lookups", "Lookups of cached copies, by cache and result.", ["cache", "result"], **where
        )
        self.cache_errors = Counter(
            "dust_cache_errors", "Failed calls to the shared cache's Redis, by cache.", ["cache"], **where
        )
        self._scraped: list[Collector] = []
        self._engines: list[Engine] = []
        self._kept: Callable[[], int] = lambda: 0
        self.counted, self.timed = _Children(self.requests), _Children(self.latency)
        self._lookups, self._cache_errors = _Children(self.cache), _Children(self.cache_errors)

    def cache_lookup(self, kind: str, hit: bool) -> None:
        self._lookups(kind, "hit" if hit else "miss").inc()

    def cache_error(self, kind: str) -> None:
        self._cache_errors(kind).inc()

    def watch_pool(self, *engines: Engine | AsyncEngine, kept: Callable[[], int] = lambda: 0) -> None:
        """Show the connections the pools of ``engines`` (the app's, and the event loop's) keep and lend out;
        ``kept``: how many of those lent out are idle, kept between reads by whom they were lent to."""
        self._kept = kept
        total = 0
        for engine in engines:
            sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
            size = getattr(sync.pool, "size", 0)  # QueuePool: a method; SingletonThreadPool (SQLite, memory): a number
            total += size() if callable(size) else size
            self._engines.append(sync)  # not its pool: disposing of the engine gives it a new one
        self.pool_size.set(total)

    def sample_pools(self) -> None:
        """Set the connections in use to what the pools count now: at each scrape, and every second in
        multiprocess mode (each process writes its own; the scrape sums them). Counting them as they were lent
        and returned, in a gauge behind a lock, cost a twentieth of a read's CPU on PostgreSQL (py-spy). A pool
        that does not count (an in-memory SQLite's, one connection per thread) shows none."""
        counts = (getattr(engine.pool, "checkedout", None) for engine in self._engines)
        self.pool_checked_out.set(sum(count() for count in counts if callable(count)) - self._kept())

    async def sample_pools_while_serving(self) -> None:
        """``sample_pools`` every ``POOL_SAMPLE_SECONDS`` until cancelled: the other processes' scrapes read it."""
        while True:
            self.sample_pools()
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    def read_when_scraped(self, collector: Collector) -> None:
        """Add figures that are read at each scrape (they are the same whichever process reads them)."""
        self._scraped.append(collector)
        if self.registry is not None:
            self.registry.register(collector)

    def exposition(self) -> bytes:
        self.sample_pools()
        if self.registry is not None:
            return generate_latest(self.registry)
        forget_dead_processes(os.environ[MULTIPROCESS])
        registry = CollectorRegistry()
        shared.MultiProcessCollector(registry)
        for collector in self._scraped:
            registry.register(collector)
        return generate_latest(registry)

    def stopped(self) -> None:
        """This process ends: its live gauges (the pool) leave the sums."""
        if self.multiprocess:
            shared.mark_process_dead(os.getpid())


def forget_dead_processes(folder: str) -> None:
    """Take the live gauges (the pool) of processes that ended without ``stopped`` (a crashed or killed worker,
    which uvicorn replaces) out of the sums. Their files name their pid; one that no longer runs is dead."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _running(int(pid)):
            shared.mark_process_dead(int(pid), folder)


def _running(pid: int) -> bool:
    """Alive, and not a zombie its parent has yet to reap (Linux's /proc; elsewhere, whether the pid exists)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _exists(pid)
    except (OSError, IndexError):
        return True  # unreadable: leave its figures in rather than drop a live process's


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class Jobs(Collector):
    """The queue's depth and the jobs by state, read at each scrape from the queue and the ``jobs`` table."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue: JobQueue = self.state.jobs
        depth = GaugeMetricFamily("dust_job_queue_depth", "Messages waiting in the job queue.", labels=["queue"])
        try:
            depth.add_metric(["pending"], queue.huey.pending_count())
            depth.add_metric(["scheduled"], queue.huey.scheduled_count())
        except Exception as problem:  # an unreachable Redis must not fail the scrape; /readyz says it
            log.warning("job queue depth unavailable", error=type(problem).__name__)
        yield depth
        jobs = GaugeMetricFamily("dust_jobs", "Background jobs by state (the jobs table).", labels=["state"])
        with self.state.reads() as session:
            counts = jobs_repo.count_by_state(session)
        for state in jobs_repo.STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs


class Measured:
    """Count each request and time it, by method, route template and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless an answer starts: what RequestLog, outside, answers an exception with
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope) or UNMATCHED
            method = scope["method"]
            self.metrics.counted(method, route, f"{status // 100}xx").inc()
            self.metrics.timed(method, route).observe(time.perf_counter() - started)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format."}},
    **allow(Permission.admin),
)
def metrics(request: Request, session: SessionDep) -> Response:
    """Admins (a scraper's API key): request counts and latencies by route, pool, caches, job queue."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
