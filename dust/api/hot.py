"""The hot reads' way past FastAPI's routing: ``GET /auth/me``, an entity or a patient, a tensor.

FastAPI finds a request's route by asking each included router in turn and then the router's routes, keeping
bookkeeping in the scope at each step, and then wraps the handler in two exit stacks and its own exception
handling. For the reads a busy deployment serves most (the routes marked ``on_the_loop``, dust.api.deps), that was
an eighth to a sixth of their CPU in process (entity get ~45 of ~390 µs, ``/auth/me`` ~70 of ~450:
``bench/request_cpu.py --without-lanes``). Their paths are fixed but for an id, so here each is one regular
expression, tried before FastAPI's routing, and a match calls the route's own direct handler (``OneHop.direct``).
Everything the route does is unchanged and its own: the credential checked, the permissions, the access policy,
the audit record; errors become problem+json in the app's exception handlers, the layer around this one, as they
do for a route FastAPI found.

Only what FastAPI itself would send to that route is taken: a path parameter must look like a UUID (anything else
goes FastAPI's way, which refuses it with its 422), only GET, and the route is taken only if FastAPI, asked when
the app is made, picks it for such a path (no earlier route shadows it). Dependency overrides (tests) turn the
lane off.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from fastapi import FastAPI, Request
from starlette._utils import get_route_path  # what Starlette's routes match against
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from dust.api.deps import OneHop, selected_route

_PARAMETER = re.compile(r"\{(\w+)\}")
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class HotReads:
    """The innermost layer of the app (inside its exception handlers, in front of its router): the hot reads'
    lanes, and the router for every other request."""

    def __init__(self, app: FastAPI, inner: ASGIApp, lanes: list[tuple[re.Pattern[str], OneHop]]) -> None:
        self.app, self.inner, self.lanes = app, inner, lanes

    @classmethod
    def install(cls, app: FastAPI, routes: Iterable[tuple[str, OneHop]]) -> HotReads:
        """A lane for each of ``routes`` (the prefix it is included under, the route) that FastAPI would pick
        for its paths and whose handler is direct, put in front of ``app``'s router."""
        lanes = [
            (_pattern(prefix + route.path), route)
            for prefix, route in routes
            if route.direct is not None and route.json_in_trip and _picked(app, prefix + route.path) is route
        ]
        hot = cls(app, app.router.middleware_stack, lanes)
        app.router.middleware_stack = hot  # Starlette's Router calls this for every request it is given
        return hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not self.app.dependency_overrides:
            path = get_route_path(scope)
            for pattern, route in self.lanes:
                found = pattern.fullmatch(path)
                if found is not None:
                    await self._answer(route, found.groupdict(), scope, receive, send)
                    return
        await self.inner(scope, receive, send)

    async def _answer(self, route: OneHop, found: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        """The scope as FastAPI leaves it for the route it found (what the middleware and the handlers read), and
        the route's answer."""
        assert route.direct is not None  # a lane is made only for a direct route
        scope.setdefault("router", self.app.router)
        scope.update(endpoint=route.endpoint, path_params=found, route=route)
        response = await route.direct(Request(scope, receive, send))
        await response(scope, receive, send)


def _pattern(path: str) -> re.Pattern[str]:
    """``path`` as a regular expression whose parameters are UUIDs."""
    parts = _PARAMETER.split(path)  # literal, name, literal, name, …, literal
    return re.compile("".join(f"(?P<{part}>{_UUID})" if i % 2 else re.escape(part) for i, part in enumerate(parts)))


def _picked(app: FastAPI, path: str) -> object:
    """The route FastAPI's routing picks for a GET of ``path`` with a new UUID for each parameter."""
    concrete = _PARAMETER.sub(lambda _: str(uuid.uuid4()), path)
    scope: Scope = {"type": "http", "method": "GET", "path": concrete, "root_path": "", "headers": []}
    for candidate in app.router.routes:
        match, child = candidate.matches(scope)
        if match == Match.FULL:
            return selected_route(scope, candidate, child)
    return None
