"""ASGI middleware: request ids and the one log line per request, and the request size limit."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dust.api.problems import problem
from dust.core.logging import get_logger

log = get_logger("dust.request")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class RequestLog:
    """Give each request an id (kept from a well-formed ``X-Request-ID``), echo it, and log one line;
    turn an unhandled exception into a logged 500 problem."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Anything the routers did not turn into a problem is a bug: log it whole, answer a bare 500.
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            status = 500
            response = problem(
                500,
                f"an unexpected error occurred; quote request id {request_id} when reporting it",
                request_id=request_id,
                headers={"X-Request-ID": request_id},
            )
            await response(scope, receive, send)
        finally:
            log.info(
                "request",
                method=scope["method"],
                route=_route_template(scope),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user=scope.get("state", {}).get("user"),
                client=(scope.get("client") or ("-",))[0],
            )
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"request body is over the limit of {self.max_bytes} bytes; split the request")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def _route_template(scope: Scope) -> str | None:
    """The matched route with its parameters named (``/api/v1/entities/{entity_id}``); None if none matched."""
    if "route" not in scope:
        return None
    path = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(str(value), "{" + name + "}", 1)
    return path


def header(scope: Scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class SecurityHeaders:
    """Headers that keep browsers from sniffing, framing or caching API answers."""

    API_HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp, api_prefix: str) -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The interactive docs load their own scripts and styles; a strict policy is for API answers.
        strict = scope["path"].startswith(self.api_prefix)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                chosen = self.API_HEADERS if strict else self.API_HEADERS[:3]
                present = {name for name, _ in headers}
                headers.extend(h for h in chosen if h[0] not in present)
            await send(message)

        await self.app(scope, receive, with_headers)


class RejectNul:
    """Refuse NUL characters in the path, query, a JSON or a form body with 422: no DUST text may hold one,
    and PostgreSQL cannot store one."""

    ESCAPES = {"json": (b"\\u0000",), "x-www-form-urlencoded": (b"%00",)}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").lower()
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            await _nul_problem(scope, receive, send)
            return
        kind = header(scope, b"content-type") or ""
        escapes = self.ESCAPES.get(next((k for k in self.ESCAPES if k in kind), ""))
        if escapes is None:
            await self.app(scope, receive, send)
            return
        body, replay = await buffered(receive)
        if b"\x00" in body or any(e in body.lower() for e in escapes):
            await _nul_problem(scope, receive, send)
            return
        await self.app(scope, replay, send)


async def _nul_problem(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(
        422, "text must not contain NUL characters (\\u0000)", type_="https://dust.dev/problems/invalid-input"
    )
    await response(scope, receive, send)


async def buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a ``receive`` that hands it on unchanged."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(parts)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
