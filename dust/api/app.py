"""``create_app(settings)``: the FastAPI application. Nothing global is created at import time."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from dust import __version__, ui
from dust.api import (
    alerts,
    anomalies,
    ask,
    audit,
    auth,
    domains,
    entities,
    health,
    insights,
    jobs,
    kinds,
    metrics,
    models,
    openapi,
    plugins,
    problems,
    relations,
    schemas,
    tensors,
    triggers,
    users,
    webhooks,
    weights,
)
from dust.api.deps import OneHop, Router
from dust.api.hot import HotReads
from dust.api.idempotency import Idempotency
from dust.api.middleware import BodyLimit, RejectBadText, RequestLog, RequestTimeout, SecurityHeaders
from dust.core.config import Settings
from dust.core.logging import configure_logging, get_logger
from dust.core.security import dummy_hash
from dust.engine import firing
from dust.engine.caches import for_settings as caches_for
from dust.jobs import Worker, attach, queue_for
from dust.models import cache as model_cache
from dust.storage.db import make_engine, make_sessionmaker, upgrade
from dust.storage.loop import loop_sessions
from dust.storage.writer import BatchWriter

API = "/api/v1"
log = get_logger("dust")


def create_app(settings: Settings | None = None, *, migrate: bool = True, run_jobs: bool = False) -> FastAPI:
    """Build the app on ``settings``; ``migrate`` applies pending migrations at startup; ``run_jobs`` consumes the
    job queue in this process while it serves, unless the queue is shared (Redis: ``dust worker`` does)."""
    settings = settings or Settings()
    if not settings.secret_key:
        raise ValueError("DUST_SECRET_KEY must be set: it signs every access token")
    configure_logging(settings.log_level, settings.log_format)
    model_cache.configure(settings.model_cache_size, settings.model_cache_mb)
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting", version=__version__, database=engine.url.render_as_string(hide_password=True))
        health.drain_on_signals(app.state.draining)  # /readyz answers 503 from SIGTERM until the process ends
        await anyio.to_thread.run_sync(dummy_hash)  # so the first sign-in under an unknown name takes no longer
        worker = None
        if run_jobs and not app.state.jobs.shared:
            # exclusive: of the processes of `dust serve --workers N`, one consumes a SQLite queue at a time
            worker = Worker(settings, sessions=app.state.sessions, exclusive=True).start()
        watching = app.state.metrics
        sampling = asyncio.create_task(watching.sample_pools_while_serving()) if watching.multiprocess else None
        if app.state.loop is not None:
            app.state.loop.start()
        yield
        if sampling is not None:
            sampling.cancel()
        if worker is not None:
            await anyio.to_thread.run_sync(worker.stop, settings.shutdown_grace_seconds)
        if app.state.loop is not None:  # first: it gives back the connection its reads kept
            await app.state.loop.dispose()
        engine.dispose()
        app.state.metrics.stopped()
        log.info("stopped")

    if migrate:
        upgrade(engine)
    app = FastAPI(
        title="DUST",
        version=__version__,
        description="Entities, their tensors over time, and the weighted relations between them.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry bridge looks up the global providers (and the environment) on every
        # request, about 5% of a signed-in read; DUST exports its metrics itself (GET /metrics).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    app.state.reads = make_sessionmaker(engine, read_only=True)
    app.state.metrics = metrics.Metrics()
    app.state.caches = caches_for(settings, app.state.metrics.cache_lookup, app.state.metrics.cache_error)
    app.state.draining = threading.Event()
    app.state.jobs = queue_for(settings)
    attach(app.state.sessions, app.state.jobs)  # their deferred tasks go to this database's queue
    firing.bound(app.state.sessions, settings)
    app.state.loop = loop_sessions(engine, app.state.reads, app.state.sessions)  # made like those, so after them
    app.state.writer = BatchWriter(app.state.sessions, loop=app.state.loop)
    loop = app.state.loop
    app.state.metrics.watch_pool(engine, *(loop.engines if loop else ()), kept=loop.kept if loop else lambda: 0)
    app.state.metrics.read_when_scraped(metrics.Jobs(app.state))
    problems.install(app)
    # The most requested first: a request is matched against the routes in this order, twice (FastAPI's router,
    # then the included router's own), about 1 µs a route: a point read paid 2 × 59 µs when tensors came eighth.
    routers = (
        auth.router,
        tensors.router,
        entities.router,
        entities.patients_router,
        users.router,
        audit.router,
        kinds.router,
        schemas.router,
        relations.router,
        weights.router,
        insights.router,
        plugins.router,
        anomalies.router,
        jobs.router,
        models.router,
        alerts.router,
        triggers.router,
        webhooks.router,
        domains.router,
        ask.router,
    )
    # /healthz and /readyz first: a route is found by trying each in turn, and load balancers ask them often.
    include(app, health.router, "")
    for router in routers:
        include(app, router, API)
    include(app, health.router, API)
    include(app, metrics.router, "")
    include(app, metrics.router, API)
    ui.mount(app)  # the web UI: Dash under /ui, and / sending browsers there
    # The small reads marked to run on the event loop are the ones served most: past FastAPI's routing (dust.api.hot)
    hot = [(API, r) for router in routers for r in router.routes if isinstance(r, OneHop) and r.on_the_loop]
    HotReads.install(app, hot)
    credential_paths = frozenset(API + path for path in auth.CREDENTIAL_PATHS)
    openapi.document(app, passthrough=credential_paths)  # every error each operation can answer, as problem+json
    # Outermost first: every request gets an id and a log line, then the size limit, then idempotency.
    app.add_middleware(
        Idempotency,
        state=app.state,
        settings=settings,
        passthrough=credential_paths,
    )
    app.add_middleware(RejectBadText)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_seconds)
    app.add_middleware(SecurityHeaders, api_prefix=API)
    if settings.cors_origins:  # off unless origins are named
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        )
    app.add_middleware(metrics.Measured, metrics=app.state.metrics)
    app.add_middleware(RequestLog)
    return app


YOUNG_OBJECTS = 7000  # allocations between collections of the youngest generation, in a serving process


def serving_app() -> FastAPI:
    """The app for ``dust serve``: settings from the environment; the CLI has already migrated."""
    app = create_app(Settings(), migrate=False, run_jobs=True)
    # What is loaded by now (the libraries, the routes, the web UI: millions of objects) lives as long as the
    # process. Frozen, the collector's full passes skip it: they took 140-160 ms each under load, the p99 of
    # every signed-in route (bench/serve.py, paced: entity get p99 69 → 17 ms).
    gc.collect()
    gc.freeze()
    # A young generation of 700 objects (Python's default) fills several times a request, and what the requests
    # in flight still hold is carried into the middle one, whose collections took 2-3 ms each: under 16 clients
    # in process, the collector took 40 µs of an entity get (gc.callbacks); ten times as large, 23, and a point
    # read's CPU fell 459 → 378 µs. Over HTTP (bench/serve.py, four runs each) the point read's fell 0.66 → 0.61 ms.
    # Measured again once requests no longer left a reference cycle (dust.api.deps.OneHop), alternating two runs of
    # each over HTTP: with 700, entity get 1,852-2,328 req/s and point read 1,461-1,580; with this, 2,309-2,450 and
    # 1,556-1,721.
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    return app


def include(app: FastAPI, router: Router, prefix: str) -> None:
    """``router``'s routes under ``prefix``; the router is told, so that it turns away other paths at once."""
    app.include_router(router, prefix=prefix)
    router.mounted_at(prefix)
