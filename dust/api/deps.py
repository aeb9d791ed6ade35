"""Dependencies shared by the routers, as ``Annotated`` aliases, and ``OneHop``, the route class that gives a
request one trip to the thread pool.

``SessionDep`` is the signed-in session: the bearer credential is checked first in its transaction and the
principal put on the session, where the engine's access policy finds it. ``allow(permission)`` declares what a
route needs (and tags its OpenAPI operation with ``x-permission``, which the access tests read).

FastAPI runs each plain ``def`` dependency, the handler, and the check of its answer in the thread pool, one trip
each: four for a signed-in read, and a trip costs more CPU than the read's queries. So the dependencies here are
``async`` and do no blocking work, and a ``OneHop`` route runs everything that does — begin the transaction,
check the credential and the permissions, the handler, the check of its answer, the commit — in ONE trip, then
awaits the batch writer's commit of the request's audit records. What a handler is given that needs the
credential checked first (``PrincipalDep``, ``SignedInDep``) is filled in by that trip, before the handler runs.

The session dependencies are plain functions, not generators that close what they opened: FastAPI wraps each
generator dependency in an exit stack and a shielded cancel scope (a sixth of a point read's CPU, by py-spy);
the trip owns the transaction instead. So every route that uses them must be a ``OneHop`` route (every API router is).

A route whose dependencies are only path and query parameters and the credential (every read and delete) has
them solved by ``_Solver`` rather than by FastAPI, whose general solving cost more CPU than a small read's
queries; any dependency override (tests) brings FastAPI's back.

A read marked ``on_the_loop`` (small and bounded: ``/auth/me``, an entity, one time step of a tensor) makes no
trip at all: it runs on the event loop, with the loop's sessions (``dust.storage.loop``: on PostgreSQL, in a
greenlet that yields to the loop while it waits for the database). The driver lets go of the GIL at every
statement and every row; in a worker thread, each of those meant queueing for the GIL again behind the loop and
the other workers, which cost more CPU than the read itself (16 connections, ``/auth/me``: SQLite 1,350 → 2,430
req/s, PostgreSQL 551 → 1,230).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar, cast

from anyio import to_thread
from fastapi import Depends, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import _get_param_model, get_dependant, get_validation_alias, request_params_to_args
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import (  # the included router's internals: Router.handle does what it does with a match
    _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY,
    APIRoute,
    APIRouter,
    _get_fastapi_scope,
    _get_scope_included_router,
    _IncludedRouter,
    _route_selected,
    _update_scope,
)
from fastapi.security import OAuth2PasswordBearer
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.orm import Session
from starlette._utils import get_route_path  # what Starlette's routes match against
from starlette.datastructures import State
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from dust.core.config import Settings
from dust.core.errors import Unauthorized
from dust.core.security import Permission
from dust.engine import access, caches, users
from dust.storage.db import AFTER_COMMIT, Write
from dust.storage.loop import lent

F = TypeVar("F", bound=Callable[..., Any])
bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


READS = frozenset({"GET", "HEAD", "OPTIONS"})
_ON_THE_LOOP = "dust_on_the_loop"  # on a handler: when (given the request) it may run on the event loop
_READS_FIRST = "dust_reads_first"  # on a handler: (read, parameter), its row read along with the epochs


@contextmanager
def transaction(state: State, *, read_only: bool, before_commit: Write | None = None) -> Iterator[Session]:
    """One transaction on the app's database, with the app's caches, for work outside a route (middleware).

    A read's transaction is read-only: on SQLite it takes no lock, so reads never queue behind each other or a
    writer. The small writes it causes (audit records, an API key's last use) are committed right after it by
    the app's batch writer, together with those of every other request waiting meanwhile. ``before_commit``
    runs last in the transaction once the work has succeeded."""
    with (state.reads if read_only else state.sessions)() as session:
        after: list[Write] = []
        session.info[AFTER_COMMIT] = after
        caches.attach(session, state.caches)
        with session.begin():
            yield session
            if before_commit is not None:
                before_commit(session)
        state.writer.write(after)


# request.state: what to run last in the request's write transaction (dust.api.idempotency puts it there)
BEFORE_COMMIT = "before_commit"
_WORK = "dust_work"  # request.state: the request's Work
_REQUEST = "dust_request_"  # the parameter through which a OneHop handler gets the request
_SELECTED = "dust.selected"  # scope: the route Router.matches found, for Router.handle
_PERMISSION = "dust_permission"  # on allow()'s check: the permission it checks


class Work:
    """One request's database work: its session, and what comes first in its transaction — the bearer
    credential checked and acted as, the permissions the route requires."""

    def __init__(self, request: Request, token: str | None, *, on_loop: bool = False) -> None:
        state = request.app.state
        self.request = request
        self.token = token
        self.read_only = request.method in READS
        self.on_loop = on_loop  # runs on the event loop, with its sessions (dust.storage.loop)
        self.required: list[Permission] = []  # checked once signed in
        self.signed: users.SignedIn | None = None
        self.after: list[Write] = []
        self.session = (state.loop.reads if on_loop else state.reads if self.read_only else state.sessions)()
        self.session.info[AFTER_COMMIT] = self.after
        caches.attach(self.session, state.caches)

    @contextmanager
    def opened(self, first: Callable[[Session], None] | None = None) -> Iterator[Session]:
        """The transaction, signed in; committed (with the Idempotency-Key's mark last) if the block succeeds.
        ``first``: the transaction's first read, before the credential is checked (``reads_first``).

        The transaction begins at the session's first statement, not here: a small read on the loop whose
        statements all go to the driver (``dust.storage.db.statement_connection``: the epochs, an entity's row)
        and whose credential and reach the caches hold never begins one — no BEGIN, no COMMIT, and none of the
        Session's bookkeeping for them, a fifth of ``/auth/me``'s CPU (bench/request_cpu.py)."""
        hook = None if self.read_only else getattr(self.request.state, BEFORE_COMMIT, None)
        with lent(self.session):
            if first is not None:
                first(self.session)
            self._sign_in()
            yield self.session
            if hook is not None:
                hook(self.session)
            if self.session.in_transaction():
                self.session.commit()

    async def written(self) -> None:
        """Wait, on the event loop, until the batch writer has committed what the transaction left it."""
        await self.request.app.state.writer.written(self.after)

    def require(self, permission: Permission) -> None:
        if self.signed is None and self.token is not None:
            self.required.append(permission)  # checked in the trip, once signed in
        else:
            access.require(self.session, permission)

    def later(self, make: Callable[[Work], Any]) -> Any:
        """``make(self)`` now if signed in, else a value the OneHop trip fills in once it is."""
        return make(self) if self.signed is not None else _Deferred(self, make)

    def _sign_in(self) -> None:
        if self.token is None:
            return
        request, settings = self.request, self.request.app.state.settings
        try:
            signed = users.authenticate(self.session, settings, self.token)
        except users.AuthError as problem:
            raise Unauthorized(str(problem)) from None
        client = request.scope.get("client")
        who = access.principal_for(
            signed.user,
            settings,
            request_id=getattr(request.state, "request_id", None),
            client=client[0] if client else None,
            method=request.method,
            path=request.scope["path"][:512],  # as routed; request.url would build the whole URL for it (~2% of a read)
        )
        access.act_as(self.session, who)
        request.state.user = signed.user.username
        self.signed = signed
        for permission in self.required:
            access.require(self.session, permission)


class _Deferred:
    """A handler's argument that needs the credential checked first: filled in by the OneHop trip."""

    def __init__(self, work: Work, make: Callable[[Work], Any]) -> None:
        self.work, self.make = work, make

    def value(self) -> Any:
        return self.make(self.work)


class OneHop(APIRoute):
    """A route whose plain ``def`` handler runs in one trip to the thread pool together with everything around it
    that blocks: the request's transaction (begun, signed in, permissions checked, committed) and the check of
    the handler's answer against the response model (in the transaction, as FastAPI would), and its JSON. The
    batch writer's commit of the request's audit records is awaited on the event loop afterwards, holding no
    thread.

    The JSON is made in the trip too, leaving FastAPI a Response to send: the event loop, which serves every
    connection, neither checks the answer a second time nor encodes it."""

    direct: Callable[[Request], Coroutine[Any, Any, Response]] | None = None  # set by get_route_handler

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.permissions: list[Permission] = []  # checked in the trip, once signed in
        self.on_the_loop: Callable[[Request], bool] | None = getattr(endpoint, _ON_THE_LOOP, None)
        self.reads_first: tuple[Callable[..., None], str] | None = getattr(endpoint, _READS_FIRST, None)
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = self._in_one_hop(endpoint)
            if _signs_in(get_dependant(path=path, call=endpoint)):
                # allow()'s check becomes a step of the trip: each dependency costs FastAPI more than the check
                checks = [d for d in kwargs.get("dependencies") or [] if hasattr(d.dependency, _PERMISSION)]
                self.permissions = [getattr(d.dependency, _PERMISSION) for d in checks]
                kwargs["dependencies"] = [d for d in kwargs.get("dependencies") or [] if d not in checks]
        super().__init__(path, endpoint, **kwargs)
        # The JSON made in the trip, as FastAPI would make it, unless the route asks for more than a plain JSON
        # answer: a response class of its own, or headers set on a Response parameter (which FastAPI merges).
        self.json_in_trip = (
            isinstance(self.response_class, DefaultPlaceholder)
            and is_body_allowed_for_status_code(self.status_code)
            and not any(p.annotation is Response for p in inspect.signature(endpoint).parameters.values())
        )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, or, for a route whose dependencies ``_Solver`` knows, one that solves them itself
        (``direct``) unless the app's dependencies are overridden (tests)."""
        generic = super().get_route_handler()
        direct = self.direct = self._direct()
        if direct is None:
            return generic

        async def handler(request: Request) -> Response:
            if not self.json_in_trip or request.app.dependency_overrides:
                return await generic(request)  # an answer FastAPI completes, or dependencies swapped for tests
            return await direct(request)

        return handler

    def _direct(self) -> Callable[[Request], Coroutine[Any, Any, Response]] | None:
        """For a route whose dependencies ``_Solver`` knows, the handler that solves them itself, for a request
        matched to this route (its ``path_params`` in the scope) whose answer is the JSON made in the trip."""
        solver = _Solver.of(self.dependant)
        if solver is None:
            return None
        call = cast(Callable[..., Coroutine[Any, Any, Any]], self.dependant.call)

        async def direct(request: Request) -> Response:
            return cast(Response, await call(**await solver.values(request)))

        return direct

    def _in_one_hop(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(endpoint, eval_str=True)
        own = next((p.name for p in signature.parameters.values() if p.annotation is Request), None)
        name = own or _REQUEST

        @functools.wraps(endpoint)
        async def one_hop(**values: Any) -> Any:
            request: Request = values[name] if own else values.pop(name)
            work: Work | None = getattr(request.state, _WORK, None)
            try:
                if work is not None and work.on_loop:
                    answer = await request.app.state.loop.run(self._run, work, endpoint, values)
                else:
                    answer = await to_thread.run_sync(self._run, work, endpoint, values)
                if work is not None:
                    await work.written()
                return answer
            finally:
                # The request holds its Work and the Work its request: a cycle that kept every request's objects
                # (~85, the session's among them) for the collector, whose passes under 16 connections freed
                # thousands at a time, 4-17 ms each (gc.callbacks in dust serve). Broken, they go at once.
                if work is not None:
                    delattr(request.state, _WORK)

        if own is None:  # the handler does not take the request: ask FastAPI for it under a name of our own
            extra = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
            signature = signature.replace(parameters=[*signature.parameters.values(), extra])
        one_hop.__signature__ = signature  # type: ignore[attr-defined]
        one_hop.dust_one_hop = True  # type: ignore[attr-defined]
        return one_hop

    def stays_on_loop(self, request: Request) -> bool:
        """Whether this request runs on the event loop rather than in the thread pool (``on_the_loop``)."""
        return (
            self.on_the_loop is not None
            and request.method in READS
            and request.app.state.loop is not None
            and self.on_the_loop(request)
        )

    def _run(self, work: Work | None, endpoint: Callable[..., Any], values: dict[str, Any]) -> Any:
        if work is None:  # a route without a session
            return self._checked(endpoint(**values))
        work.required += self.permissions
        first = None
        if self.reads_first is not None:
            read, parameter = self.reads_first
            first = functools.partial(read, key=values[parameter])
        with work.opened(first):
            filled = {k: v.value() if isinstance(v, _Deferred) else v for k, v in values.items()}
            return self._checked(endpoint(**filled))

    def _checked(self, answer: Any) -> Any:
        """The answer validated against the response model here, in the transaction: FastAPI validates it again on
        the event loop, which for the model instance this returns is a check of its type."""
        if self.response_field is None or isinstance(answer, Response):  # a Response goes out as it is
            return answer
        value, errors = self.response_field.validate(answer, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=answer)
        if not self.json_in_trip:
            return value
        content = self.response_field.serialize_json(
            value,
            include=self.response_model_include,
            exclude=self.response_model_exclude,
            by_alias=self.response_model_by_alias,
            exclude_unset=self.response_model_exclude_unset,
            exclude_defaults=self.response_model_exclude_defaults,
            exclude_none=self.response_model_exclude_none,
        )
        return Response(content, status_code=self.status_code or 200, media_type="application/json")


class Router(APIRouter):
    """An API router of OneHop routes (unless given another ``route_class``) that, once included (``mounted_at``),
    turns away at once a request for a path none of its routes could match, and finds the route of one it takes
    once, not twice.

    FastAPI tries each included router in turn, and each tries every route it has (a regular expression and two
    bookkeeping entries in the scope each): a request for a router included late paid for every route before
    it, ~28 µs for an entity get and ~90 for a trigger route (20 routers in). A route can match only a path that
    begins with its literal part (the path up to its first parameter), so a path that begins with none of this
    router's is no match, and the routes are not tried.

    The router that matches then finds its route again to handle the request (FastAPI's ``_handle_selected``):
    the route found by ``matches`` is kept in the scope for ``handle`` instead, ~8 µs of an entity get's ~250."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("route_class", OneHop)
        super().__init__(**options)
        self._prefixes: list[str] = []
        self._heads: tuple[str, ...] = ()
        self._heads_of = 0  # how many routes the heads were found from: a route added since brings its own

    def mounted_at(self, prefix: str) -> None:
        """Told by the app that it included this router under ``prefix`` (again for each inclusion)."""
        if prefix not in self._prefixes:  # an app made again in the same process (tests) mounts it again
            self._prefixes.append(prefix)
            self._heads_of = 0

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self._heads_of != len(self.routes):
            literal = {getattr(route, "path", "/").split("{", 1)[0] for route in self.routes}
            self._heads = tuple(prefix + head for prefix in self._prefixes for head in literal)
            self._heads_of = len(self.routes)
        if self._heads and scope["type"] == "http" and not get_route_path(scope).startswith(self._heads):
            return Match.NONE, {}
        included = _get_scope_included_router(scope)  # the inclusion asking, as in APIRouter.matches
        if not isinstance(included, _IncludedRouter) or included.original_router is not self:
            return super().matches(scope)
        match, child_scope, route, context = included._match(scope)
        if match == Match.FULL and isinstance(route, APIRoute) and context is not None:
            scope[_SELECTED] = (included, child_scope, route, context)  # the app handles a full match at once
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The route ``matches`` found, handled as FastAPI's ``_IncludedRouter._handle_selected`` handles it; any
        other request as FastAPI does."""
        selected = scope.pop(_SELECTED, None)
        if selected is None or selected[0] is not _get_scope_included_router(scope):
            await super().handle(scope, receive, send)
            return
        _, child_scope, route, context = selected
        _update_scope(scope, child_scope)
        _route_selected(scope=scope, path=getattr(context.starlette_route, "path_format", None) or context.path_format)
        _get_fastapi_scope(scope)[_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY] = context
        scope["route"] = route
        await route.handle(scope, receive, send)


def selected_route(scope: Scope, candidate: Any, child_scope: Scope) -> Any:
    """The route that ``candidate``, one of an app's routes that matched ``scope`` in full, handles it with: for an
    included Router, the route its ``matches`` found."""
    selected = scope.pop(_SELECTED, None)
    return selected[2] if selected is not None else child_scope.get("route", candidate)


class _Solver:
    """FastAPI's solving of a route's dependencies, done directly for the usual shape of a DUST route: path and
    query parameters, the request, and dependencies that take nothing but the request and the bearer credential
    (this module's ``SessionDep``, ``SignedInDep``…). FastAPI's general solving (a level of recursion, a cache
    key and a scope check per dependency, exit stacks) cost more CPU than a small read's own queries: 16% of an
    entity get (py-spy). Errors come out as from FastAPI: a dependency's exception first (401), then every
    parameter's problem in one RequestValidationError (422)."""

    def __init__(self, dependant: Dependant, steps: list[tuple[str, Callable[..., Any], str | None, str | None]]):
        self.dependant = dependant
        self.steps = steps  # each dependency: (its parameter, its call, where it takes the request, the token)
        self.needs_token = any(token is not None for *_, token in steps)
        # Each path parameter with the name it comes under, or None for a model of path parameters (FastAPI's way)
        self.path: list[tuple[Any, str]] | None = [(f, get_validation_alias(f)) for f in dependant.path_params]
        if any(_get_param_model(field) is not None for field in dependant.path_params):
            self.path = None

    @classmethod
    def of(cls, dependant: Dependant) -> _Solver | None:
        """A solver for ``dependant`` (the route's handler), or None if it has more than the shape above."""
        if _has_more_than(dependant, "path_params", "query_params") or dependant.request_param_name is None:
            return None
        steps = []
        for sub in dependant.dependencies:
            if sub.name is None or not inspect.iscoroutinefunction(sub.call) or _has_more_than(sub):
                return None
            if any(d.call is not bearer or d.name is None for d in sub.dependencies):
                return None
            token = sub.dependencies[0].name if sub.dependencies else None
            steps.append((sub.name, cast(Callable[..., Any], sub.call), sub.request_param_name, token))
        return cls(dependant, steps)

    async def values(self, request: Request) -> dict[str, Any]:
        """The handler's arguments from ``request``, as FastAPI would give them."""
        token = await bearer(request) if self.needs_token else None
        values: dict[str, Any] = {}
        for name, call, takes_request, takes_token in self.steps:
            arguments: dict[str, Any] = {takes_request: request} if takes_request else {}
            if takes_token:
                arguments[takes_token] = token
            values[name] = await call(**arguments)
        path, errors = self._path(request.path_params)
        if self.dependant.query_params:  # request.query_params parses the query string: only when there are any
            query, query_errors = request_params_to_args(self.dependant.query_params, request.query_params)
            errors += query_errors
            values.update(query)
        if errors:
            raise RequestValidationError(errors)
        values.update(path)
        values[cast(str, self.dependant.request_param_name)] = request
        return values

    def _path(self, received: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """The path parameters validated. Once the route matched, each is there, one string under its own name:
        checked against its field at once, where FastAPI's ``request_params_to_args`` looks for a list, a JSON
        field and a default every time (that and the query string parsed only where needed: ~25 µs of an entity
        get's ~240, bench/request_cpu.py)."""
        if self.path is None:
            return request_params_to_args(self.dependant.path_params, received)
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for field, alias in self.path:
            value, problems = field.validate(received[alias], values, loc=("path", alias))
            if problems:
                errors.extend(problems)
            else:
                values[field.name] = value
        return values, errors


def _has_more_than(dependant: Dependant, *allowed: str) -> bool:
    """Whether ``dependant`` takes any kind of parameter but ``allowed`` and the request."""
    kinds = ("path_params", "query_params", "header_params", "cookie_params", "body_params")
    special = (
        "websocket_param_name",
        "http_connection_param_name",
        "response_param_name",
        "background_tasks_param_name",
        "security_scopes_param_name",
    )
    return any(getattr(dependant, kind) for kind in kinds if kind not in allowed) or any(
        getattr(dependant, name) is not None for name in special
    )


def on_the_loop(when: Callable[[Request], bool] = lambda request: True) -> Callable[[F], F]:
    """Mark a OneHop read whose work is small and bounded (``when`` the request asks for little): it runs on the
    event loop rather than in the thread pool, if the database allows (see the module's docstring). Put it
    below the route's decorators."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ON_THE_LOOP, when)
        return endpoint

    return mark


def reads_first(read: Callable[..., None], parameter: str) -> Callable[[F], F]:
    """Mark a OneHop read whose first query is the row that path parameter ``parameter`` names:
    ``read(session, key=value)`` reads it along with the cache epochs, in one statement, before the credential
    is checked (which needs the epochs); the handler's read of that row then takes it without a query. On
    PostgreSQL a round trip less."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _READS_FIRST, (read, parameter))
        return endpoint

    return mark


def _signs_in(dependant: Dependant) -> bool:
    """Whether ``dependant`` (a handler) depends on ``signed_in``, itself or through another dependency."""
    return any(d.call in _SIGNING_IN or _signs_in(d) for d in dependant.dependencies)


def _start(request: Request, token: str | None) -> Work:
    """The request's Work, for its OneHop trip to open, sign in and commit."""
    route = request.scope.get("route")
    if not isinstance(route, OneHop) or not getattr(route.endpoint, "dust_one_hop", False):
        raise TypeError(f"{request.url.path}: a route with a session must be a OneHop route (APIRouter(route_class=…))")
    work = Work(request, token, on_loop=route.stays_on_loop(request))
    setattr(request.state, _WORK, work)
    return work


async def get_session(request: Request) -> Session:
    """The request's transaction, without a credential: committed when the handler returns, before the answer."""
    return _start(request, None).session


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


PublicSessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def signed_in(request: Request, token: Annotated[str | None, Depends(bearer)]) -> Session:
    """The request's transaction, with the bearer credential checked first in it and its principal on the
    session (a request without a credential opens no transaction)."""
    return _signed(request, token).session


SessionDep = Annotated[Session, Depends(signed_in)]


async def principal_of(request: Request, token: Annotated[str | None, Depends(bearer)]) -> access.Principal:
    return cast(access.Principal, _signed(request, token).later(lambda work: access.principal(work.session)))


PrincipalDep = Annotated[access.Principal, Depends(principal_of)]


async def signed_in_as(request: Request, token: Annotated[str | None, Depends(bearer)]) -> users.SignedIn:
    return cast(users.SignedIn, _signed(request, token).later(lambda work: work.signed))


SignedInDep = Annotated[users.SignedIn, Depends(signed_in_as)]
# Each of them asks for the credential itself rather than for SessionDep: FastAPI's solving of a dependency costs
# more than the dependency (~9 µs a level, a tenth of /auth/me's CPU for the two levels it saves).
_SIGNING_IN = frozenset({signed_in, principal_of, signed_in_as})


def _signed(request: Request, token: str | None) -> Work:
    """The request's signed-in Work: started by the first of the dependencies above that the route has."""
    work: Work | None = getattr(request.state, _WORK, None)
    if work is not None:
        return work
    if not token:
        raise Unauthorized("sign in first: send Authorization: Bearer <access token or API key>")
    return _start(request, token)


def _work(request: Request) -> Work:
    return cast(Work, getattr(request.state, _WORK))


def allow(permission: Permission) -> dict[str, Any]:
    """Route options requiring ``permission``: ``@router.get(..., **allow(Permission.read))``."""

    async def check(request: Request, session: SessionDep) -> None:
        _work(request).require(permission)

    setattr(check, _PERMISSION, permission)  # a OneHop route that signs in anyway checks it in its trip instead
    return {"dependencies": [Depends(check)], "openapi_extra": {"x-permission": permission.value}}
