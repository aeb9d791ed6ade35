"""ASGI middleware: request ids and the one log line per request, the request size limit and deadline."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import anyio
import structlog
from starlette.requests import ClientDisconnect
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dust.api.problems import problem
from dust.core.errors import ProblemType
from dust.core.logging import get_logger
from dust.engine.fields import excerpt

log = get_logger("dust.request")
CLIENT_CLOSED = 499  # logged for a client that went away mid-request (nginx's code); never sent
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
        # Not uuid4: a system call for each request to read the kernel's randomness, which an id for finding log
        # lines does not need (the generator is seeded from it once per process).
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else f"{random.getrandbits(128):032x}"
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
        except ClientDisconnect:
            status = CLIENT_CLOSED  # nobody to answer; the request did nothing (see buffered)
        except Exception:
            # Anything the routers did not turn into a problem is a bug: log its traceback, answer a bare 500.
            # The traceback is plain and bounded, without local variables (dust.core.logging): frames hold the
            # request's token and body and the settings' key, and formatting them stalled every request.
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            status = 500
            response = problem(
                500,
                f"an unexpected error occurred; quote request id {request_id} when reporting it",
                type_=ProblemType.internal_error,
                request_id=request_id,
                headers={"X-Request-ID": request_id},
            )
            await response(scope, receive, send)
        finally:
            log.info(
                "request",
                method=scope["method"],
                route=route_template(scope),
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
        detail = f"request body is over the limit of {self.max_bytes} bytes; split the request"
        response = problem(413, detail, type_=ProblemType.too_large)
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


DEADLINE = "dust.deadline"
"""Scope extension ``{"at": event-loop time}`` by which ``dust serve``'s protocol (dust.api.protocol) wants the
whole request to have arrived."""


class RequestTimeout:
    """Answer 408 (and close the connection) when the body has not arrived by the request's deadline.

    The deadline is the one the server put in the scope, so head and body share one budget; without one (a test
    client), ``seconds`` from when the request reaches the app. FastAPI reads a body in the event loop before a
    handler takes a worker thread, so a trickled body holds a connection and a task, never a thread: this ends
    them. Only the body is timed: an app still answering (or streaming) after that is not cut off.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = (scope.get("extensions") or {}).get(DEADLINE, {}).get("at") or anyio.current_time() + self.seconds
        arrived = answered = started = False

        async def receive_in_time() -> Message:
            nonlocal arrived, answered
            if arrived:
                return await receive()
            if not answered:
                with anyio.move_on_after(deadline - anyio.current_time()):
                    message = await receive()
                    arrived = message["type"] != "http.request" or not message.get("more_body", False)
                    return message
                answered = True
                if not started:
                    await self._refuse(scope, send)
            raise _TimedOut  # not a disconnect: the app must not act on part of a body, as 408 says nothing was done

        async def send_unless_answered(message: Message) -> None:
            nonlocal started
            if answered:  # the 408 went out; the app's late answer has nowhere to go
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_unless_answered)
        except Exception:  # _TimedOut, or what the framework made of it
            if not answered:
                raise

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = (
            f"the request did not arrive within {self.seconds:g} s (DUST_REQUEST_TIMEOUT_SECONDS); send the "
            "body without pauses, or split it into smaller requests"
        )
        response = problem(
            408, detail, type_=ProblemType.request_timeout, title="Request timeout", headers={"Connection": "close"}
        )
        await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class _TimedOut(Exception):
    pass


_TEMPLATE = "dust.route_template"  # scope: route_template's answer, for the request's log line and its metrics


def route_template(scope: Scope) -> str | None:
    """The matched route's path as declared, under the prefix its router was included with
    (``/api/v1/entities/{entity_id}``; the route in the scope has its own path only, matched against what follows
    ``/api/v1``); everything under a mount (the web UI) is one: ``/ui/{path}``. None if no route matched. Made once a
    request: its log line and its metrics both name it."""
    if _TEMPLATE in scope:
        return cast(str | None, scope[_TEMPLATE])
    route = scope.get("route")
    made = None if route is None else _template(route, scope["path"])
    scope[_TEMPLATE] = made
    return made


def _template(route: Any, path: str) -> str:
    if isinstance(route, Mount):
        return route.path + "/{path}"
    for cut in (i for i, char in enumerate(path) if char == "/"):
        if route.path_regex.match(path[cut:]):
            return path[:cut] + route.path
    return str(route.path)


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


class RejectBadText:
    """Refuse NUL and lone surrogates with 422 wherever a request carries text: the path, the query, and any
    key or string of a JSON or form body, whatever the media type's letter case. PostgreSQL stores neither:
    one entity stored with such an attribute made ``attr.`` filters fail for every user. The engine refuses
    them in names and attributes too (dust.engine.fields); this guards every other text field."""

    # A cheap scan first: a hit is only a suspect, decided by parsing (a surrogate pair is an emoji, and
    # "\\u0000" is an escaped backslash before text). Raw ED A0..BF is a surrogate encoded as UTF-8 bytes,
    # which json.loads lets through.
    SUSPECTS = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|\x00|\xed[\xa0-\xbf]")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = _bad_url_text(scope)
        kind = (header(scope, b"content-type") or "").lower()
        if detail is None and ("json" in kind or "x-www-form-urlencoded" in kind):
            body, receive = await buffered(receive)
            detail = self._bad_json(body) if "json" in kind else _bad_percent_text("body", body.replace(b"+", b" "))
        if detail is not None:
            await _bad_text_problem(detail, scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _bad_json(self, body: bytes) -> str | None:
        # Every suspect holds one of these bytes strings: three substring searches (memchr) cost a few µs where
        # the regex alone takes ~0.2 ms over a 40 kB batch of values.
        if not (b"\\u" in body or b"\x00" in body or b"\xed" in body) or not self.SUSPECTS.search(body):
            return None
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # not JSON: the framework says so, naming a raw NUL a control character
            return _BAD_TEXT.format(where="body", char="U+0000 (NUL)") if b"\x00" in body else None
        return _bad_json_text(parsed)


_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_BAD_TEXT = (
    "{where} must not contain {char}: no text may hold NUL (U+0000) or a lone surrogate (U+D800..U+DFFF "
    "without its pair)"
)


def _bad_url_text(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
    return _bad_percent_text("path", raw_path) or _bad_percent_text("query", scope.get("query_string", b""))


def _bad_percent_text(where: str, raw: bytes) -> str | None:
    """Percent-decoded, ``raw`` must be UTF-8 without NUL (Starlette would turn %ED%A0%80 into U+FFFD silently)."""
    text = unquote_to_bytes(raw)
    if b"\x00" in text:
        return _BAD_TEXT.format(where=f"the {where}", char="U+0000 (NUL, %00)")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return (
            f"the {where} must be UTF-8 text once percent-decoded; lone surrogates (such as %ED%A0%80) and "
            "other invalid byte sequences are refused"
        )
    return None


def _bad_json_text(parsed: object) -> str | None:
    """Where the first NUL or lone surrogate is in a parsed JSON body's keys and strings, or None."""
    stack: list[tuple[object, str]] = [(parsed, "body")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str) and (found := _BAD_CHAR.search(node)):
            return _BAD_TEXT.format(where=where, char=_char(found.group()))
        if isinstance(node, dict):
            for key, child in node.items():
                if found := _BAD_CHAR.search(key):
                    return _BAD_TEXT.format(where=f"{where}.{excerpt(key)} (a key)", char=_char(found.group()))
                stack.append((child, f"{where}.{excerpt(key)}"))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(node))
    return None


def _char(char: str) -> str:
    return "U+0000 (NUL)" if char == "\x00" else f"U+{ord(char):04X} (a lone surrogate)"


async def _bad_text_problem(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(422, detail, type_=ProblemType.invalid_input)
    await response(scope, receive, send)


async def buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a ``receive`` that hands it on unchanged.

    A client that disconnects before its body is complete raises ``ClientDisconnect``: handing the part that
    arrived on would let a truncated body that happens to parse (a shorter JSON list) be acted on.
    """
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
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
