"""/healthz (the process answers) and /readyz (this process should be sent requests: it is not draining, and the
database and Redis, if configured, answer)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text

from dust.api.deps import Router
from dust.api.problems import problem
from dust.core.errors import ProblemType

# Plain FastAPI routes (no Work, no sign-in: /readyz opens its own connection), in a Router so that the API's paths,
# whose routers come after it, are turned away at once rather than tried against each of its routes
router = Router(tags=["health"], route_class=APIRoute)
PROBE_SECONDS = 2.0  # a Redis that does not answer within this is not ready (a dead host would hang a probe)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up (answered on the event loop: a thread would only add the trip to it)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Draining (shutting down), or the database or Redis does not answer."}},
)
def readyz(request: Request) -> JSONResponse:
    """Readiness: not shutting down, the database answers a query and Redis (if configured) a ping."""
    state = request.app.state
    if state.draining.is_set():
        return _not_ready("the server is shutting down (draining requests in progress)")
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; say which
        return _not_ready(f"database is not reachable: {type(exc).__name__}")
    answer: dict[str, Any] = {"status": "ready", "database": state.engine.dialect.name}
    if state.settings.redis_url:
        try:
            _redis(state).ping()
        except Exception as exc:
            return _not_ready(f"Redis is not reachable: {type(exc).__name__}")
        answer["redis"] = "ok"
    return JSONResponse(answer)


def _not_ready(detail: str) -> JSONResponse:
    return problem(503, detail, type_=ProblemType.unavailable, title="Not ready")


def _redis(state: Any) -> Any:
    """A client of its own with short timeouts, made on first use (the job queue's blocks on reads)."""
    if getattr(state, "redis_probe", None) is None:
        import redis

        state.redis_probe = redis.Redis.from_url(
            state.settings.redis_url, socket_connect_timeout=PROBE_SECONDS, socket_timeout=PROBE_SECONDS
        )
    return state.redis_probe


def drain_on_signals(draining: threading.Event) -> None:
    """Set ``draining`` on SIGTERM or SIGINT, then let the handler already installed (uvicorn's) stop the server.

    Only the main thread may install handlers; elsewhere (an app under a test client) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for each in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(each)

        def chained(signum: int, frame: Any, before: Any = before) -> None:
            draining.set()
            if callable(before):
                before(signum, frame)
            elif before == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(each, chained)
