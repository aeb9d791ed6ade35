"""``create_app(settings)``: the FastAPI application. Nothing global is created at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from dust import __version__
from dust.api import (
    anomalies,
    audit,
    auth,
    entities,
    health,
    insights,
    kinds,
    openapi,
    plugins,
    problems,
    relations,
    schemas,
    tensors,
    users,
)
from dust.api.idempotency import Idempotency
from dust.api.middleware import BodyLimit, RejectBadText, RequestLog, RequestTimeout, SecurityHeaders
from dust.core.config import Settings
from dust.core.logging import configure_logging, get_logger
from dust.engine.caches import Caches
from dust.storage.db import make_engine, make_sessionmaker, upgrade
from dust.storage.writer import BatchWriter

API = "/api/v1"
log = get_logger("dust")


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the app on ``settings``; ``migrate`` applies pending migrations at startup."""
    settings = settings or Settings()
    if not settings.secret_key:
        raise ValueError("DUST_SECRET_KEY must be set: it signs every access token")
    configure_logging(settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting", version=__version__, database=engine.url.render_as_string(hide_password=True))
        yield
        engine.dispose()
        log.info("stopped")

    if migrate:
        upgrade(engine)
    app = FastAPI(
        title="DUST",
        version=__version__,
        description="Entities, their tensors over time, and the weighted relations between them.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    app.state.reads = make_sessionmaker(engine, read_only=True)
    app.state.writer = BatchWriter(app.state.sessions)
    app.state.caches = Caches()
    problems.install(app)
    routers = (
        auth.router,
        users.router,
        audit.router,
        kinds.router,
        entities.router,
        entities.patients_router,
        schemas.router,
        tensors.router,
        relations.router,
        insights.router,
        plugins.router,
        anomalies.router,
    )
    for router in routers:
        app.include_router(router, prefix=API)
    app.include_router(health.router)
    app.include_router(health.router, prefix=API)
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
    app.add_middleware(RequestLog)
    return app


def serving_app() -> FastAPI:
    """The app for ``dust serve``: settings from the environment; the CLI has already migrated."""
    return create_app(Settings(), migrate=False)
