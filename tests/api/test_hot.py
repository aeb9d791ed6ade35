"""The hot reads' way past FastAPI's routing (dust.api.hot): taken by exactly the reads it is for, answering
every request as FastAPI's own routing of it would, and never where another route would answer instead."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fastapi.routing
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.api.deps import Router, SessionDep, on_the_loop
from dust.api.hot import HotReads
from dust.core.config import Settings
from tests.api.conftest import API, World

TAKEN = {"/auth/me", "/entities/{entity_id}", "/patients/{entity_id}", "/tensor/{tensor_id}", "/tensors/{tensor_id}"}


def hot(app: FastAPI) -> HotReads:
    stack = app.router.middleware_stack
    assert isinstance(stack, HotReads)
    return stack


@contextmanager
def without_lanes(app: FastAPI) -> Iterator[None]:
    """The app as it is without dust.api.hot: every request routed by FastAPI."""
    lanes = hot(app)
    app.router.middleware_stack = lanes.inner
    try:
        yield
    finally:
        app.router.middleware_stack = lanes


def test_the_reads_served_most_are_taken_past_fastapis_routing(app: FastAPI) -> None:
    assert {route.path for _, route in hot(app).lanes} == TAKEN
    assert all(route.on_the_loop is not None for _, route in hot(app).lanes)


def test_each_request_is_answered_as_fastapis_routing_answers_it(
    app: FastAPI,
    client: TestClient,
    anon_client: TestClient,
    login_as: Callable[..., TestClient],
    world: World,
    searches: list[str],
) -> None:
    """Signed in or not, as an admin or a doctor's clinician, the thing there, missing or someone else's, the
    parameters good or bad, another method, a path a character off: the same status, body and headers with the
    lanes as without, and the lanes' requests never searched FastAPI's routers."""
    clinician = login_as("clinician", entity_id=world["A"])
    forged = TestClient(app, raise_server_exceptions=False, headers={"Authorization": "Bearer not-a-token"})
    hot_paths = [
        "/auth/me",
        f"/entities/{world['PA']}",
        f"/entities/{world['PA'].upper()}",
        f"/patients/{world['PA']}",
        f"/entities/{uuid.uuid4()}",
        f"/tensor/{world['TPA']}?time=0&metric=heart_rate",
        f"/tensor/{world['TPA']}?time=soon&metric=heart_rate",
        f"/tensor/{world['TPA']}?time=0&metric=no_such_metric",
        f"/tensors/{world['TPA']}",
    ]
    other_paths = [
        "/entities/not-a-uuid",
        f"/entities/{world['PA']}/",
        f"/entities/{world['PA']}x",
        f"/entities/{world['PA']}/tensors",
        f"/patients/{world['PB']}",
        "/patients?limit=5",
    ]
    asked = [
        (reader, method, API + path)
        for reader in (client, clinician, anon_client, forged)
        for method in ("GET", "HEAD", "PUT")  # PUT: no such route, 405
        for path in (hot_paths if method == "GET" else hot_paths[:2]) + other_paths
    ]

    def answers() -> list[tuple[int, bytes, dict[str, str]]]:
        replies = [reader.request(method, path) for reader, method, path in asked]
        dropped = {"x-request-id", "date", "server-timing"}  # a new one each time
        return [(r.status_code, r.content, {k: v for k, v in r.headers.items() if k not in dropped}) for r in replies]

    searches.clear()
    for path in hot_paths[:2]:
        assert client.get(API + path).status_code == 200
    assert searches == [], "a hot read went through FastAPI's routing"
    taken = answers()
    with without_lanes(app):
        routed = answers()
    assert taken == routed
    statuses = {status for status, *_ in taken}
    assert statuses >= {200, 401, 404, 405, 422}, statuses


def test_a_hot_route_another_route_would_answer_for_is_left_to_fastapi(settings: Settings) -> None:
    """Lanes are made only where FastAPI picks the route: a route before it that matches its paths wins."""
    first, second = Router(), Router()

    @first.get("/things/{name}")
    def by_name(name: str, session: SessionDep) -> dict[str, str]:
        return {"by": "name"}

    @second.get("/things/{thing_id}")
    @on_the_loop()
    def by_id(thing_id: uuid.UUID, session: SessionDep) -> dict[str, str]:
        return {"by": "id"}

    @second.get("/gadgets/{gadget_id}")
    @on_the_loop()
    def gadget(gadget_id: uuid.UUID, session: SessionDep) -> dict[str, str]:
        return {"by": "id"}

    app = FastAPI()
    for router in (first, second):
        app.include_router(router)
        router.mounted_at("")
    lanes = HotReads.install(
        app, [("", route) for route in second.routes if isinstance(route, fastapi.routing.APIRoute)]
    )
    assert [route.path for _, route in lanes.lanes] == ["/gadgets/{gadget_id}"]
