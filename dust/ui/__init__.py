"""The web UI: a Dash app mounted in the API's server at /ui, on the same engine, sessions and access policy.

The Dash app is built on the first request to /ui, not with the API: importing Dash and building its app costs
about a second that an API-only process (and each test app) need not pay.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.types import Receive, Scope, Send

PATH = "/ui"


class LazyUI:
    """An ASGI app that builds the Dash app (as WSGI, behind a2wsgi) on its first request."""

    def __init__(self, app: FastAPI) -> None:
        self.state = app.state
        self._asgi: Any = None
        self._lock = threading.Lock()

    def _built(self) -> Any:
        with self._lock:
            if self._asgi is None:
                from a2wsgi import WSGIMiddleware

                from dust.ui.app import build

                self._asgi = WSGIMiddleware(build(self.state).server, workers=8)
            return self._asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asgi = self._asgi or await anyio.to_thread.run_sync(self._built)  # a second's work: not on the loop
        await asgi(scope, receive, send)


def mount(app: FastAPI) -> None:
    """The UI at /ui, and / sending browsers there."""
    app.mount(PATH, LazyUI(app), name="ui")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PATH}/", status_code=307)
