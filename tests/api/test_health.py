"""/healthz and /readyz: ready only while not draining and while the database and Redis (if set) answer."""

from __future__ import annotations

import signal
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.api.app import create_app
from dust.api.health import drain_on_signals
from dust.core.config import Settings
from tests.api.conftest import ONE_BACKEND

NOBODY = "127.0.0.1:1"  # a port nothing listens on


def ready(app: FastAPI) -> tuple[int, dict[str, Any]]:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # the process answers whatever /readyz says
    return response.status_code, response.json()


def test_ready_when_the_database_answers(app: FastAPI, settings: Settings) -> None:
    status, body = ready(app)
    assert (status, body) == (200, {"status": "ready", "database": app.state.engine.dialect.name})


def test_not_ready_while_draining(app: FastAPI) -> None:
    app.state.draining.set()
    try:
        status, body = ready(app)
    finally:
        app.state.draining.clear()
    assert status == 503
    assert body["title"] == "Not ready" and "shutting down" in body["detail"]


@ONE_BACKEND
def test_not_ready_when_the_database_does_not_answer(settings: Settings) -> None:
    gone = settings.model_copy(update={"database_url": f"postgresql+psycopg://nobody@{NOBODY}/none"})
    status, body = ready(create_app(gone, migrate=False))
    assert status == 503 and body["detail"].startswith("database is not reachable")


@ONE_BACKEND
def test_redis_must_answer_when_it_is_configured(settings: Settings) -> None:
    up = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}), migrate=False)
    assert ready(up) == (200, {"status": "ready", "database": "sqlite", "redis": "ok"})
    down = create_app(settings.model_copy(update={"redis_url": f"redis://{NOBODY}/0"}), migrate=False)
    status, body = ready(down)
    assert status == 503 and body["detail"] == "Redis is not reachable: ConnectionError"


def test_sigterm_marks_draining_and_still_reaches_the_server_handler() -> None:
    """The server's own handler (uvicorn's, which stops accepting and lets requests finish) still runs."""
    received: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        draining = threading.Event()
        drain_on_signals(draining)
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert draining.is_set() and received == [signal.SIGTERM]
