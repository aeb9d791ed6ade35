"""Concurrent requests against a real ``dust serve``: no lost update, no duplicate, no 5xx, no request left waiting.

Each case releases its clients through a barrier so that their requests really overlap; each client has an
API key of its own (requests of one key wait for each other on PostgreSQL, see test_locks.py). Every request
is bounded (``BOUND`` seconds: a deadlock shows as a timeout), and each case records the statuses it saw:
printed as a JSON line (``pytest -s``) and appended to ``$DUST_RELIABILITY_REPORT`` if that is set.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, or_, select

from dust.storage.db import make_engine, make_sessionmaker
from dust.storage.models import Relation, Tensor, TensorBlock, TensorHistory
from tests.reliability import snapshot
from tests.reliability.server import Server, admin_keys, bearer, database

CLIENTS = 8
BOUND = 20.0  # seconds one request may take; the databases wait 30 s for a lock, so a deadlock trips this
LABELS = ["a", "b", "c", "d"]

Work = Callable[[httpx.Client], list[httpx.Response]]  # one client's requests, sent one after another


@dataclass
class Live:
    backend: str
    url: str
    api: str
    keys: list[str]
    server: Server

    def http(self, client: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers=bearer(self.keys[client]), timeout=BOUND)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One ``dust serve`` per backend on a fresh database, shared by the cases (each makes its own data)."""
    postgres_url = os.environ.get("DUST_TEST_POSTGRES_URL")
    if request.param == "postgresql" and not postgres_url:
        pytest.skip("PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)")
    with database(request.param, postgres_url) as url:
        keys = admin_keys(url, CLIENTS)
        with Server(url, DUST_LOG_LEVEL="WARNING") as server:
            yield Live(request.param, url, server.start(), keys, server)


def together(live: Live, jobs: list[Work]) -> list[httpx.Response]:
    """Each job on its own thread, connection and key, all released at once; every response they got.

    A request that gets no answer within BOUND fails the test (httpx raises ReadTimeout).
    """
    barrier = threading.Barrier(len(jobs), timeout=BOUND)

    def run(client: int) -> list[httpx.Response]:
        with live.http(client) as http:
            http.get("/healthz")  # connect first: the barrier should release requests, not TCP handshakes
            barrier.wait()
            return jobs[client](http)

    with ThreadPoolExecutor(len(jobs)) as pool:
        done = pool.map(run, range(len(jobs)), timeout=BOUND * 10)
        return [response for responses in done for response in responses]


def record(case: str, live: Live, responses: list[httpx.Response], counts: Counter[str] | None = None) -> Counter[str]:
    """Report the statuses of a case; fail on any 5xx or any request slower than BOUND."""
    counts = counts or Counter(str(r.status_code) for r in responses)
    slowest = max(r.elapsed.total_seconds() for r in responses)
    line = {"case": case, "backend": live.backend, "statuses": dict(sorted(counts.items())), "slowest_s": slowest}
    print(json.dumps(line))
    if path := os.environ.get("DUST_RELIABILITY_REPORT"):
        with open(path, "a") as report:
            report.write(json.dumps(line) + "\n")
    errors = [r.text for r in responses if r.status_code >= 500]
    assert not errors, f"{len(errors)} 5xx answers, e.g. {errors[0]}; the server's log ends:\n{_errors_logged(live)}"
    assert slowest < BOUND, f"a request took {slowest:.1f} s"
    return counts


def _errors_logged(live: Live) -> str:
    """The last exception the server logged (its traceback ends with the exception's type and message)."""
    lines = live.server.log_text().splitlines()
    ends = [i for i, line in enumerate(lines) if line.startswith(("sqlalchemy.", "psycopg.", "sqlite3."))]
    return "\n".join(lines[ends[-1] : ends[-1] + 6]) if ends else "\n".join(lines[-20:])


def made(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def a_tensor(http: httpx.Client) -> tuple[str, str]:
    """A new schema, entity and tensor: (entity id, tensor id)."""
    name = f"conc_{uuid.uuid4().hex[:8]}"
    made(http, "/schemas", {"name": name, "axes": [{"name": "metric", "labels": LABELS}], "time": {"unit": "second"}})
    entity = made(http, "/entities", {"kind": "thing", "name": name})
    tensor = made(http, "/tensors", {"entity_id": entity["id"], "schema": name, "origin": "2026-01-01T00:00:00Z"})
    return entity["id"], tensor["id"]


def things(http: httpx.Client, count: int) -> list[str]:
    return [made(http, "/entities", {"kind": "thing", "name": f"thing {i}"})["id"] for i in range(count)]


# --- one new block ------------------------------------------------------------------------------------------


def test_clients_writing_one_new_block_lose_no_cell(live: Live) -> None:
    """Each client writes its own cells, interleaved with the others', of a block not stored yet."""
    blocks, steps = 4, 64 // CLIENTS
    with live.http() as http:
        _, tensor = a_tensor(http)

    def writer(block: int, client: int) -> Work:
        times = [block * 64 + step * CLIENTS + client for step in range(steps)]
        values = [{"time": t, "metric": label, "value": t * 10.0 + i} for t in times for i, label in enumerate(LABELS)]
        return lambda http: [http.post(f"/tensors/{tensor}/values", json={"values": values})]

    responses = [r for b in range(blocks) for r in together(live, [writer(b, c) for c in range(CLIENTS)])]
    assert record("one new block", live, responses) == {"200": blocks * CLIENTS}
    with live.http() as http:
        body = http.get(f"/tensors/{tensor}").json()
    assert body["coords"]["time"] == list(range(blocks * 64))
    for i, row in enumerate(body["values"]):
        assert row == [t * 10.0 + i for t in range(blocks * 64)], f"cells of label {LABELS[i]} were lost"


# --- one relation -------------------------------------------------------------------------------------------


def test_one_relation_created_by_many_at_once_exists_once(live: Live) -> None:
    with live.http() as http:
        source, target = things(http, 2)
    responses = []
    for attempt in range(3):
        kind = f"race_{attempt}"
        tried = together(live, [_creator(source, target, kind, weight=c + 1.0) for c in range(CLIENTS)])
        assert Counter(r.status_code for r in tried) == {201: 1, 409: CLIENTS - 1}
        winner = next(r.json() for r in tried if r.status_code == 201)
        with live.http() as http:
            found = http.get("/relations", params={"entity_id": source, "type": kind}).json()["items"]
            history = http.get(f"/relations/{winner['id']}").json()["history"]
        assert [r["id"] for r in found] == [winner["id"]]
        assert [h["weight"] for h in history] == [winner["weight"]]
        responses += tried
    record("same relation", live, responses)


def _creator(source: str, target: str, kind: str, weight: float) -> Work:
    body = {"source_id": source, "target_id": target, "type": kind, "weight": weight}
    return lambda http: [http.post("/relations", json=body)]


# --- one idempotency key ------------------------------------------------------------------------------------


def test_one_idempotency_key_posted_by_many_at_once_runs_once(live: Live) -> None:
    """All clients sign in as the same user (keys are per user): one runs, the rest get its replay or 409."""
    kind = f"idem{uuid.uuid4().hex[:8]}"
    responses = []
    for attempt in range(3):
        key = f"{kind}-{attempt}"
        body = {"kind": kind, "name": f"made once {key}"}

        def post(http: httpx.Client, key: str = key, body: dict[str, str] = body) -> list[httpx.Response]:
            return [http.post("/entities", json=body, headers={"Idempotency-Key": key})]

        tried = together(live, [post] * CLIENTS)
        made_here = [r for r in tried if r.status_code == 201 and "idempotent-replayed" not in r.headers]
        replays = [r for r in tried if r.status_code == 201 and "idempotent-replayed" in r.headers]
        assert len(made_here) == 1, [r.status_code for r in tried]
        assert {r.json()["id"] for r in made_here + replays} == {made_here[0].json()["id"]}
        assert all(r.status_code in (201, 409) for r in tried)
        responses += tried
    with live.http() as http:
        names = [e["name"] for e in http.get("/entities", params={"kind": kind, "limit": 100}).json()["items"]]
    assert sorted(names) == [f"made once {kind}-{n}" for n in range(3)]
    replayed = Counter("201 replay" if "idempotent-replayed" in r.headers else str(r.status_code) for r in responses)
    record("same idempotency key", live, responses, replayed)


# --- a delete among writes ----------------------------------------------------------------------------------


def test_an_entity_deleted_while_others_write_to_it_leaves_nothing_behind(live: Live) -> None:
    """Writers of its tensor, creators of relations to it and of a tensor for it, and its delete, all at once:
    no 5xx, and afterwards no row of it or pointing to it."""
    responses = []
    for _ in range(3):
        with live.http() as http:
            doomed, tensor = a_tensor(http)
            others = things(http, 4)
            spare = f"spare_{uuid.uuid4().hex[:8]}"
            made(http, "/schemas", {"name": spare, "axes": [{"name": "m", "labels": ["x"]}], "time": {"unit": "day"}})
        responses += together(live, _racing_a_delete(doomed, tensor, others, spare))
        _assert_gone(live, doomed, tensor)
    counts = record("delete while writing", live, responses)
    assert counts["204"] == 3
    assert set(counts) <= {"200", "201", "204", "404", "422"}, counts


def _racing_a_delete(doomed: str, tensor: str, others: list[str], spare_schema: str) -> list[Work]:
    def delete(http: httpx.Client) -> list[httpx.Response]:
        time.sleep(0.02)  # a few writes first, then the delete among the rest
        return [http.delete(f"/entities/{doomed}")]

    def writer(offset: int) -> Work:
        def write(http: httpx.Client) -> list[httpx.Response]:
            cells = ({"values": [{"time": offset + n, "metric": "a", "value": 1.0}]} for n in range(10))
            return _until_refused(
                [lambda body=body: http.post(f"/tensors/{tensor}/values", json=body) for body in cells]
            )

        return write

    def relater(client: int) -> Work:
        def relate(http: httpx.Client) -> list[httpx.Response]:
            bodies = [{"source_id": o, "target_id": doomed, "type": f"r{client}_{n}"} for n, o in enumerate(others)]
            return _until_refused([lambda body=body: http.post("/relations", json=body) for body in bodies])

        return relate

    def new_tensor(http: httpx.Client) -> list[httpx.Response]:
        return [http.post("/tensors", json={"entity_id": doomed, "schema": spare_schema})]

    return [delete, writer(0), writer(64), writer(128), relater(0), relater(1), relater(2), new_tensor]


def _until_refused(requests: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Send in turn until one is refused (the entity is gone): the responses so far."""
    responses = []
    for send in requests:
        responses.append(send())
        if not responses[-1].is_success:
            break
    return responses


def _assert_gone(live: Live, entity: str, tensor: str) -> None:
    engine = make_engine(live.url)
    entity_id, tensor_id = uuid.UUID(entity), uuid.UUID(tensor)
    counts = {
        "tensors": select(func.count()).select_from(Tensor).where(Tensor.entity_id == entity_id),
        "blocks": select(func.count()).select_from(TensorBlock).where(TensorBlock.tensor_id == tensor_id),
        "history": select(func.count()).select_from(TensorHistory).where(TensorHistory.tensor_id == tensor_id),
        "relations": select(func.count())
        .select_from(Relation)
        .where(or_(Relation.source_id == entity_id, Relation.target_id == entity_id)),
    }
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            left = {what: session.scalar(query) for what, query in counts.items()}
            assert not any(left.values()), f"rows of the deleted entity are left: {left}"
            assert snapshot.orphans(session) == []
    finally:
        engine.dispose()


# --- deletes of related entities ----------------------------------------------------------------------------


def test_related_entities_deleted_at_once_while_relations_among_them_are_made(live: Live) -> None:
    """Deletes of entities related to each other both ways, and creates of more relations among them, at once:
    every request answers within BOUND, none with a 5xx (test_locks.py has the deadlock this found)."""
    responses = []
    for _ in range(3):
        with live.http() as http:
            ring = things(http, 4)
            pairs = [(a, b) for a in ring for b in ring if a != b]
            for a, b in pairs:
                made(http, "/relations", {"source_id": a, "target_id": b, "type": "link"})
        tried = together(live, _racing_deletes(ring, pairs))
        responses += tried
        with live.http() as http:
            still = {e: http.get(f"/entities/{e}").status_code for e in ring}
        assert set(still.values()) == {404}, (still, _errors_logged(live))
        with live.http() as http:
            left = [http.get("/relations", params={"entity_id": e}).json()["items"] for e in ring]
        assert left == [[]] * len(ring)
    counts = record("related deletes", live, responses)
    assert counts["204"] == 3 * len(ring)
    assert set(counts) <= {"201", "204", "404", "422"}, counts


def _racing_deletes(ring: list[str], pairs: list[tuple[str, str]]) -> list[Work]:
    def deleter(entity: str) -> Work:
        return lambda http: [http.delete(f"/entities/{entity}")]

    def relater(client: int) -> Work:
        def relate(http: httpx.Client) -> list[httpx.Response]:
            order = pairs[client * 3 :] + pairs[: client * 3]
            return [
                http.post("/relations", json={"source_id": a, "target_id": b, "type": f"new{client}"}) for a, b in order
            ]

        return relate

    return [*(deleter(e) for e in ring), *(relater(n) for n in range(CLIENTS - len(ring)))]
