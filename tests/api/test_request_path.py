"""What a request costs and what it may not skip: reads take no write lock, the hot routes run few queries, and
a cached credential is refused by the very next request after it is revoked, through any process."""

from __future__ import annotations

import gc
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import fastapi.routing
import psycopg
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.routing import Match

from dust.api.app import create_app, include
from dust.api.deps import Router, SessionDep, Work, get_settings
from dust.core.config import Settings
from dust.storage.db import READ_ONLY
from tests.api.conftest import API, VITALS, World, engines, make
from tests.api.test_middleware import logged
from tests.conftest import PASSWORD

WRITER = "dust-batch-writer"


class Statements:
    """The statements an engine ran, split into the request's own and the batch writer's: a read's are in its
    read-only transaction; the writer's are in a thread of its own, or on the loop, in a write."""

    def __init__(self, read: bool) -> None:
        self.read = read
        self.request: list[str] = []
        self.writer: list[str] = []

    def seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.read:
            mine = not conn.get_execution_options().get(READ_ONLY)
        else:
            mine = threading.current_thread().name == WRITER
        (self.writer if mine else self.request).append(" ".join(statement.split()))

    @property
    def queries(self) -> list[str]:
        """The request's statements but BEGIN: those a database answers."""
        return [s for s in self.request if not s.startswith("BEGIN")]


@contextmanager
def counted(app: FastAPI, *, read: bool = True) -> Iterator[Statements]:
    """The statements of the app's engines: its own and (PostgreSQL) the event loop's."""
    statements = Statements(read)
    for engine in engines(app):
        event.listen(engine, "before_cursor_execute", statements.seen)
    try:
        yield statements
    finally:
        for engine in engines(app):
            event.remove(engine, "before_cursor_execute", statements.seen)


def hot_routes(world: World) -> dict[str, str]:
    return {
        "/auth/me": "/auth/me",
        "entity get": f"/entities/{world['PA']}",
        "point read": f"/tensor/{world['TPA']}?time=0&metric=heart_rate",
        "whole tensor": f"/tensor/{world['TPA']}",
        "patient list": "/patients?limit=50",
    }


# The most queries each hot route may run, for an admin and for a clinician (whose reach is part of the query).
# An entity's or a tensor's row comes with the cache epochs, in the first query (dust.api.deps.reads_first).
MOST = {"/auth/me": 1, "entity get": 1, "point read": 2, "whole tensor": 2, "patient list": 2}


@pytest.mark.parametrize("role", ["admin", "clinician"])
def test_hot_routes_run_few_queries_and_leave_their_audit_to_the_batch_writer(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient], role: str
) -> None:
    reader = client if role == "admin" else login_as("clinician", entity_id=world["A"])
    for name, path in hot_routes(world).items():
        assert reader.get(API + path).status_code == 200  # caches warm, as on a serving process
        with counted(app) as statements:
            response = reader.get(API + path)
        assert response.status_code == 200, response.text
        assert len(statements.queries) <= MOST[name], (name, statements.queries)
        assert not [s for s in statements.request if s.startswith(("INSERT", "UPDATE", "DELETE"))], name
        if name != "/auth/me":  # reading the data is recorded, in the writer's transaction
            assert any(s.startswith("INSERT INTO audit_log") for s in statements.writer), name


@pytest.mark.parametrize("role", ["admin", "clinician"])
def test_a_request_leaves_nothing_for_the_collector(
    client: TestClient, world: World, login_as: Callable[..., TestClient], role: str
) -> None:
    """A request's objects (its Request, Work, Session…) go as soon as it is answered, read or write, and are not
    left in a reference cycle for the collector: under load its passes freed thousands at a time, 4-17 ms each,
    the bare route's p99 (bench/serve.py)."""
    reader = client if role == "admin" else login_as("clinician", entity_id=world["A"])
    ask = [lambda path=path: reader.get(API + path) for path in hot_routes(world).values()]
    ask.append(lambda: reader.patch(f"{API}/entities/{world['PA']}", json={"attributes": {"note": "seen"}}))
    for each in ask:
        assert each().status_code == 200  # caches warm, as on a serving process
    gc.collect()
    kinds = Request | Work | Session
    # Another test's objects may still be alive, and die in a cycle meanwhile (a failed write's traceback, held by
    # a writer thread that ends now): only those made by these requests count
    before = {id(o) for o in gc.get_objects() if issubclass(type(o), kinds)}  # not o.__class__: some warn
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a pass finds unreachable is kept in gc.garbage, to be looked at
    try:
        for each in ask:
            assert each().status_code == 200
        gc.collect()
        left = sorted({type(o).__qualname__ for o in gc.garbage if isinstance(o, kinds) and id(o) not in before})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == [], "in a reference cycle"


# The reads marked on_the_loop: on an SQLite file they take no trip at all.
ON_THE_LOOP = {"/auth/me", "entity get", "point read"}


@pytest.mark.parametrize("role", ["admin", "clinician"])
def test_hot_routes_take_one_trip_to_the_thread_pool_or_none(
    app: FastAPI,
    client: TestClient,
    world: World,
    login_as: Callable[..., TestClient],
    role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sign-in, permission check, handler, response check and commit in one trip (dust.api.deps.OneHop): FastAPI
    would take one for each plain def dependency and handler and one for the response, and a trip costs more
    CPU than a cached sign-in's query. The small reads take none: they run on the event loop."""
    on_loop = app.state.loop is not None  # an SQLite file or PostgreSQL
    reader = client if role == "admin" else login_as("clinician", entity_id=world["A"])
    trips: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted_trip(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    now = datetime.now(UTC)
    others = {  # a route of each other router that reads: every API router is made of OneHop routes
        "relations": f"/relations?source_id={world['A']}",
        "query_master": f"/query_master?entity_id={world['A']}&depth=2&direction=both",
        "schemas": "/schemas",
        "anomalies": "/anomalies",
        "alerts": "/alerts",
        # may wait for a write in flight (dust.engine.tensors._settled): never on the loop
        "point read as of": f"/tensor/{world['TPA']}?time=0&metric=heart_rate&as_of={now:%Y-%m-%dT%H:%M:%SZ}",
    }
    writes = {"a write": f"/entities/{world['PA']}"} if role == "admin" else {}
    for name, path in {**hot_routes(world), **others, **writes}.items():
        assert reader.get(API + path).status_code == 200, (name, reader.get(API + path).text)
        monkeypatch.setattr(anyio.to_thread, "run_sync", counted_trip)
        trips.clear()
        response = reader.patch(API + path, json={"name": "renamed"}) if name == "a write" else reader.get(API + path)
        monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)
        assert response.status_code == 200, response.text
        assert len(trips) == (0 if on_loop and name in ON_THE_LOOP else 1), (name, trips)


def test_routes_of_the_usual_shape_solve_their_dependencies_directly_and_answer_as_fastapi_would(
    app: FastAPI, client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dust.api.deps._Solver: a route whose dependencies are path and query parameters and the credential does not
    go through FastAPI's general solving, which cost more CPU than a small read's queries. Asked again with a
    dependency override (which brings FastAPI's solving back), every request gets the same answer: signed in or
    not, parameters good or bad, the thing there or not."""
    solved: list[object] = []
    fastapis = fastapi.routing.solve_dependencies

    async def counted_solving(**kwargs: Any) -> Any:
        solved.append(kwargs["dependant"].call)
        return await fastapis(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted_solving)
    paths = [
        *hot_routes(world).values(),
        f"/entities/{world['PA']}/tensors",
        "/entities/not-a-uuid",
        f"/entities/{uuid.uuid4()}",
        f"/tensor/{world['TPA']}?time=soon&metric=heart_rate",
        f"/tensor/{world['TPA']}?time=0&metric=no_such_metric",
        "/patients?limit=0&cursor=%%%",
        f"/query_master?entity_id={world['A']}&depth=99",
    ]
    unsigned = TestClient(app, raise_server_exceptions=False)

    def answers() -> list[tuple[int, object]]:
        asked = [(reader, path) for reader in (client, unsigned) for path in paths]
        return [(r.status_code, r.json()) for r in (reader.get(API + path) for reader, path in asked)]

    directly = answers()
    assert not solved, "a route of the usual shape went through FastAPI's solving"
    monkeypatch.setitem(app.dependency_overrides, get_settings, get_settings)
    assert answers() == directly
    assert solved, "the override did not bring FastAPI's solving back: the comparison compared nothing"
    assert {status for status, _ in directly} >= {200, 401, 404, 422}


def test_routers_that_turn_away_other_paths_find_the_route_fastapi_would(app: FastAPI) -> None:
    """Every operation of the API, and a few paths of none, resolve to the same route with each router turning
    away the paths that begin with none of its routes' literal parts (dust.api.deps.Router) as without."""
    operations = [(path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item]
    concrete = [(re.sub(r"\{[^}]*\}", str(uuid.UUID(int=7)), path), method) for path, method in operations]
    concrete += [(f"{API}/entities/", "GET"), (f"{API}/nowhere", "GET"), ("/metrics", "GET"), (f"{API}/auth/me", "PUT")]
    routers = [r.original_router for r in app.router.routes if isinstance(getattr(r, "original_router", None), Router)]
    turning_away = [resolved(app, path, method) for path, method in concrete]
    assert len(routers) > 15 and all(router._heads for router in routers)
    heads = [router._heads for router in routers]
    try:
        for router in routers:
            router._heads = ()  # tries every route, as an APIRouter does
        assert [resolved(app, path, method) for path, method in concrete] == turning_away
    finally:
        for router, kept in zip(routers, heads, strict=True):
            router._heads = kept
    assert all(found is not None for found in turning_away[: len(operations)])


def test_a_request_finds_its_route_once_and_gets_the_answer_fastapi_would_give(
    app: FastAPI, client: TestClient, world: World, searches: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route an API router matches is handled without finding it again (dust.api.deps.Router.handle): one
    search of the router's routes a request, none for the hot reads (dust.api.hot); and each answer (found, not
    found, wrong method, parameters refused, the health routes under both prefixes) is the one FastAPI's own
    handling gives."""
    paths = [*hot_routes(world).values(), "/entities/not-a-uuid", f"/entities/{uuid.uuid4()}"]
    asked = [("GET", API + path) for path in paths]
    asked += [("PUT", f"{API}/auth/me"), ("GET", "/healthz"), ("GET", f"{API}/healthz"), ("GET", f"{API}/nowhere")]

    def answers() -> list[tuple[int, object, str | None]]:
        replies = [client.request(method, path) for method, path in asked]
        return [(r.status_code, r.json(), r.headers.get("allow")) for r in replies]

    once = []
    for method, path in asked[: len(hot_routes(world))]:
        searches.clear()
        assert client.request(method, path).status_code == 200
        once.append(searches.count(path.partition("?")[0]))
    assert once == [0, 0, 0, 0, 1]  # the hot reads not at all (dust.api.hot), the patient list once
    ours = answers()
    monkeypatch.setattr(Router, "handle", APIRouter.handle)  # FastAPI's: the route found again to handle it
    assert answers() == ours
    assert [status for status, *_ in ours] == [200] * 5 + [422, 404, 405, 200, 200, 404]


def test_a_route_added_to_a_router_after_it_was_mounted_is_found(settings: Settings) -> None:
    app = create_app(settings, migrate=False)
    late = Router(prefix="/late")

    @late.get("/first")
    def first() -> None: ...

    include(app, late, API)
    assert resolved(app, f"{API}/late/first", "GET") == ("full", late.routes[0])

    @late.get("/then/{n}")
    def then(n: int) -> None: ...

    assert resolved(app, f"{API}/late/then/3", "GET") == ("full", late.routes[1])


def resolved(app: FastAPI, path: str, method: str) -> tuple[str, object] | None:
    """How the app's router matches ``method path`` (first full match, else first partial), and the route it picks."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}, "headers": []}
    partial = None
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.NONE:
            continue
        picked = route._match(scope)[2] if hasattr(route, "_match") else route  # an included router: its route
        if match is Match.FULL:
            return "full", picked
        partial = partial or ("partial", picked)
    return partial


def test_a_route_with_a_session_must_be_a_one_hop_route(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """The session dependencies leave opening and committing the transaction to the OneHop trip: on a route of
    another class nothing would, so such a route fails at its first request (a TypeError naming OneHop, logged
    as any bug is) rather than answering unsigned."""
    app = create_app(settings, migrate=False)
    plain = APIRouter()

    @plain.get("/plain")
    def handler(session: SessionDep) -> dict[str, str]:
        return {}

    app.include_router(plain)
    with TestClient(app) as client:
        logged(capsys)
        answer = client.get("/plain", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "TypeError: /plain: a route with a session must be a OneHop route" in logged(capsys)


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_an_entitys_tensors_are_listed_in_a_fixed_number_of_queries(
    app: FastAPI, client: TestClient, settings: Settings, cache: str
) -> None:
    """However many tensors (of however many schemas) the entity has; cold: a process that has read no schema."""
    counts = []
    for schemas in (1, 6):
        entity = make(client, "/entities", {"kind": "thing", "name": f"has {schemas}"})
        for n in range(schemas):
            name = f"s{schemas}_{n}"
            assert client.post(f"{API}/schemas", json={**VITALS, "name": name}).status_code == 201
            make(client, "/tensors", {"entity_id": entity, "schema": name})
        reader = create_app(settings, migrate=False) if cache == "cold" else app
        with TestClient(reader) as other:
            other.headers["Authorization"] = client.headers["Authorization"]
            if cache == "warm":
                assert other.get(f"{API}/entities/{entity}/tensors").status_code == 200
            with counted(reader) as statements:
                listed = other.get(f"{API}/entities/{entity}/tensors")
        assert listed.status_code == 200, listed.text
        assert len(listed.json()) == schemas
        counts.append(len(statements.queries))
        assert sum("FROM schemas" in s for s in statements.queries) <= 1, statements.queries
    assert counts[0] == counts[1], counts


def test_a_batch_write_waits_for_postgresql_a_fixed_number_of_times(
    app: FastAPI, client: TestClient, world: World, database_url: str
) -> None:
    """The reads a write needs go one by one (the credential's epochs, the row and advisory locks, the stored
    blocks); what it writes — its audit record, the blocks new and changed, the tensor's range — goes together, in
    one round trip (``dust.storage.db.pipelined``)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("round trips: SQLite runs in this process")
    path = f"{API}/tensors/{world['TPA']}/values"

    def batch(first: int) -> dict[str, Any]:
        return {"values": [{"time": t, "metric": "heart_rate", "value": 60 + t % 7} for t in range(first, first + 40)]}

    # Blocks of 512 steps: the first write makes blocks 0 and 1 (and warms the caches, as on a serving process);
    # the second changes block 1 and makes block 2.
    assert client.post(path, json=batch(480)).json()["written"] == 40
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        status = conn.connection.driver_connection.pgconn.pipeline_status
        seen.append((" ".join(statement.split())[:40], status != psycopg.pq.PipelineStatus.OFF))

    event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        answer = client.post(path, json=batch(1000))
    finally:
        event.remove(app.state.engine, "before_cursor_execute", record)
    assert answer.json()["written"] == 40, answer.text
    alone = [statement for statement, piped in seen if not piped]
    together = [statement for statement, piped in seen if piped]
    assert len(alone) <= 4, alone
    for written in ("INSERT INTO audit_log", "INSERT INTO tensor_blocks", "UPDATE tensors"):
        assert any(statement.startswith(written) for statement in together), (written, together)


def test_reads_begin_without_the_write_lock_and_writes_with_it(
    app: FastAPI, client: TestClient, world: World, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's locks")
    with counted(app) as read:
        client.get(f"{API}/entities/{world['PA']}")
    with counted(app, read=False) as write:
        client.patch(f"{API}/entities/{world['PA']}", json={"name": "renamed"})
    # A small read on the loop (caches warm) is one statement, a snapshot of its own: no BEGIN, no COMMIT, no lock
    assert len(read.request) == 1 and read.request[0].startswith("SELECT"), read.request
    assert write.request[0] == "BEGIN IMMEDIATE"
    with counted(app) as listed:  # a read through the thread pool: a transaction, begun deferred
        client.get(f"{API}/entities", params={"limit": 5})
    assert listed.request[0] == "BEGIN"
    assert "BEGIN IMMEDIATE" not in listed.request


def test_a_read_is_answered_only_after_its_audit_record_is_committed(client: TestClient, world: World) -> None:
    read = client.get(f"{API}/entities/{world['PA']}")
    trail = client.get(f"{API}/audit", params={"entity_id": world["PA"]}).json()["items"]
    assert read.headers["x-request-id"] in [entry["request_id"] for entry in trail]


# --- credentials: cached per process, refused at once after a revocation through any process ----------------


@pytest.fixture
def second_worker(settings: Settings) -> Iterator[TestClient]:
    """Another process's app on the same database: caches of its own."""
    with TestClient(create_app(settings, migrate=False), raise_server_exceptions=False) as other:
        yield other


@pytest.fixture
def alice(client: TestClient) -> dict[str, Any]:
    response = client.post(f"{API}/users", json={"username": "alice", "password": PASSWORD, "role": "clinician"})
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(anon: TestClient) -> dict[str, Any]:
    response = anon.post(f"{API}/auth/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


REVOCATIONS: dict[str, Callable[[TestClient, dict[str, Any], str], Any]] = {
    "logout": lambda admin, alice, token: admin.post(f"{API}/auth/logout", headers=bearer(token)),
    "logout everywhere": lambda admin, alice, token: admin.post(
        f"{API}/auth/logout", params={"everywhere": "true"}, headers=bearer(token)
    ),
    "role change": lambda admin, alice, token: admin.patch(f"{API}/users/{alice['id']}", json={"role": "viewer"}),
    "disable": lambda admin, alice, token: admin.patch(f"{API}/users/{alice['id']}", json={"disabled": True}),
    "password change": lambda admin, alice, token: admin.patch(
        f"{API}/users/{alice['id']}", json={"password": "a brand new password"}
    ),
}


@pytest.mark.parametrize("revocation", list(REVOCATIONS))
def test_a_revoked_token_is_refused_by_the_next_request_on_every_process(
    client: TestClient, anon_client: TestClient, second_worker: TestClient, alice: dict[str, Any], revocation: str
) -> None:
    token = sign_in(anon_client)["access_token"]
    for worker in (anon_client, second_worker):  # both processes have it cached
        assert worker.get(f"{API}/auth/me", headers=bearer(token)).status_code == 200
    done = REVOCATIONS[revocation](client, alice, token)
    assert done.status_code in (200, 204), done.text
    for worker in (second_worker, anon_client):
        assert worker.get(f"{API}/auth/me", headers=bearer(token)).status_code == 401


def test_a_revoked_api_key_is_refused_by_the_next_request_on_every_process(
    anon_client: TestClient, second_worker: TestClient, alice: dict[str, Any]
) -> None:
    token = sign_in(anon_client)["access_token"]
    key = anon_client.post(f"{API}/auth/api-keys", json={"name": "etl"}, headers=bearer(token)).json()
    for worker in (anon_client, second_worker):
        assert worker.get(f"{API}/auth/me", headers=bearer(key["key"])).status_code == 200
    assert anon_client.delete(f"{API}/auth/api-keys/{key['id']}", headers=bearer(token)).status_code == 204
    assert second_worker.get(f"{API}/auth/me", headers=bearer(key["key"])).status_code == 401


def test_a_new_role_applies_to_the_next_request_on_every_process(
    client: TestClient, anon_client: TestClient, second_worker: TestClient, alice: dict[str, Any]
) -> None:
    """A role change signs the user out; their next sign-in acts with the new role everywhere."""
    before = sign_in(anon_client)["access_token"]
    assert second_worker.get(f"{API}/users", headers=bearer(before)).status_code == 403
    assert client.patch(f"{API}/users/{alice['id']}", json={"role": "admin"}).status_code == 200
    after = sign_in(anon_client)["access_token"]
    assert second_worker.get(f"{API}/users", headers=bearer(after)).status_code == 200


def test_a_token_revoked_under_concurrent_use_is_refused_from_then_on(
    client: TestClient, anon_client: TestClient, second_worker: TestClient, alice: dict[str, Any]
) -> None:
    """Readers hammer two processes with one token; every request that starts after the logout answered is 401."""
    token = sign_in(anon_client)["access_token"]
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def hammer(worker: TestClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            results.append((started, worker.get(f"{API}/auth/me", headers=bearer(token)).status_code))

    threads = [threading.Thread(target=hammer, args=(w,)) for w in (anon_client, second_worker, second_worker)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert client.post(f"{API}/auth/logout", headers=bearer(token)).status_code == 204
    answered = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join()
    before = [status for started, status in results if started < answered]
    after = [status for started, status in results if started > answered]
    assert 200 in before and after, "the readers did not overlap the logout"
    assert set(after) == {401}


def test_a_schema_deleted_and_made_again_is_read_afresh_by_every_process(
    client: TestClient, second_worker: TestClient
) -> None:
    """Deleting a schema is the one change that gives a name and version other labels: no process keeps the old."""
    token_header = dict(client.headers)
    client.post(f"{API}/schemas", json=VITALS)
    patient = make(client, "/patients", {"name": "Jane"})
    tensor = make(client, "/tensors", {"entity_id": patient, "schema": "vitals"})
    assert second_worker.get(f"{API}/tensor/{tensor}", headers=token_header).json()["coords"]["metric"] == [
        "heart_rate",
        "temperature",
    ]
    assert client.delete(f"{API}/tensors/{tensor}").status_code == 204
    assert client.delete(f"{API}/schemas/vitals").status_code == 204
    client.post(f"{API}/schemas", json={"name": "vitals", "axes": [{"name": "metric", "labels": ["spo2"]}]})
    tensor = make(client, "/tensors", {"entity_id": patient, "schema": "vitals"})
    read = second_worker.get(f"{API}/tensor/{tensor}", headers=token_header).json()
    assert read["coords"]["metric"] == ["spo2"]
