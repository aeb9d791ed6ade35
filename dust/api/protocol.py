"""The HTTP protocol ``dust serve`` runs: uvicorn's httptools protocol with the request bounded in time, its head
in size, and the connections in number.

uvicorn (0.54) bounds neither time nor head. Its keep-alive timer starts only once a response is complete, and
any byte received cancels it: a connection that sends nothing, or trickles its headers or a body a byte at a time,
is held for ever. httptools buffers a head of any length (2 MB of headers were taken in a test). Here a request
must arrive whole within ``DUST_REQUEST_TIMEOUT_SECONDS`` of its first byte (of the connection, for a
connection's first request), and its head within ``DUST_MAX_HEADER_BYTES``. Until the head is complete nobody
else can answer, so this protocol answers 408 or 431; once the app has the request, the app's RequestTimeout
answers a late body with a 408 problem, by the deadline this protocol puts in the scope. Past
``DUST_MAX_CONNECTIONS`` a request is answered 503.
"""

from __future__ import annotations

import asyncio
import http
import json
from functools import cache
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dust.api.middleware import DEADLINE
from dust.api.problems import problem
from dust.core.config import Settings
from dust.core.errors import ProblemType
from dust.core.logging import get_logger

log = get_logger("dust.server")


@cache
def _limits() -> tuple[float, int, int]:
    """(request timeout, head bytes, connections), read once per process: a protocol object is made for every
    connection."""
    settings = Settings()
    return settings.request_timeout_seconds, settings.max_header_bytes, settings.max_connections


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    detail = "the server holds as many connections as it may (DUST_MAX_CONNECTIONS); retry shortly"
    busy = problem(503, detail, type_=ProblemType.unavailable, headers={"Retry-After": "1"})
    await busy(scope, receive, send)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """A request (head and body) within a deadline, its head within a size, and connections within a number."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_timeout, self.max_head, self.max_connections = _limits()
        self._app = self.app
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._in_head = True  # waiting for (the rest of) a request head, rather than inside a body
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte holds a socket too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Counted a read at a time, so the bound holds give or take one read (up to 256 KiB).
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head and not self.transport.is_closing():
            self._refuse(
                431,
                ProblemType.header_too_large,
                f"the request head is over {self.max_head} bytes (DUST_MAX_HEADER_BYTES)",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a later request on a kept-alive connection: from its first byte
            self._arm()
        self.scope["extensions"] = {DEADLINE: {"at": self._deadline}}

    def on_headers_complete(self) -> None:
        self._in_head = False
        # As uvicorn's limit_concurrency, which answers in plain text: this answers a problem, as every error is.
        busy = max(len(self.connections), len(self.tasks)) >= self.max_connections
        if busy:
            log.warning("connection limit reached", connections=len(self.connections), tasks=len(self.tasks))
        self.app = _busy if busy else self._app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_head, self._head_bytes = True, 0

    def _arm(self) -> None:
        self._deadline = self.loop.time() + self.request_timeout
        self._timer = self.loop.call_at(self._deadline, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # The app is answering: reading the body, its RequestTimeout answers 408 at this same deadline.
            # Either way the connection closes once that answer is out, which ends any trickle.
            self.cycle.keep_alive = False
        elif self._in_head and self._head_bytes:
            self._refuse(
                408, ProblemType.request_timeout, f"the request head did not arrive within {self.request_timeout:g} s"
            )
        else:  # nothing sent since connecting, or the rest of a body nobody reads: no one to answer
            self.transport.close()

    def _refuse(self, status: int, type_: ProblemType, detail: str) -> None:
        """Answer as a problem and close: the app never saw this request, so it cannot answer. (Unless a
        pipelined request's answer is still being written: then only close.)"""
        if self.cycle is None or self.cycle.response_complete:
            phrase = http.HTTPStatus(status).phrase
            problem = {"type": type_.value, "title": phrase.capitalize(), "status": status, "detail": detail}
            body = json.dumps(problem).encode()
            head = (
                f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        self.transport.close()
