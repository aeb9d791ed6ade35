"""``dust.connect`` has the face of ``dust.open``: one scenario through both gives the same results, on SQLite and
PostgreSQL; every method of ``Dust`` is a method of ``Client`` with its signature; problems raise the embedded
API's exceptions; an expired access token is refreshed once.

One ``dust serve`` per backend for the module (a start costs seconds); each test uses names of its own on it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

import dust
from dust.client.client import NOT_OVER_HTTP, PLANS, AsyncClient, Client
from dust.client.plans import OPERATIONS
from dust.core.errors import Forbidden, Unauthorized
from dust.core.security import Role, issue_access_token, read_access_token
from dust.engine import users
from dust.engine.users import UserCreate
from tests.conftest import NO_POSTGRES, POSTGRES_URL
from tests.reliability.server import SECRET, Server, database
from tests.test_embedded_parity import PYTHON

PASSWORD = "a long enough password"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Differ by design: a trigger's secret is new each time; in process nobody signs in, so nobody is ``updated_by``.
NOT_COMPARED = {"as_of", "secret", "updated_by"}
UNORDERED = ("around_nodes", "around_edges", "master")
WHERE = re.compile(r"^(body|query|path)\.")  # REST names where a field was; the embedded API names the field


class Served:
    def __init__(self, url: str, database_url: str) -> None:
        self.url = url
        self.database_url = database_url

    def connect(self, **credentials: Any) -> Client:
        return dust.connect(self.url, **(credentials or {"username": "admin", "password": PASSWORD}))


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], Served]]:
    """``dust serve`` on a database of each backend, started when a test first asks for it; an admin and a
    viewer who sign in with ``PASSWORD``."""
    started: dict[str, Served] = {}
    closing: list[Any] = []

    def server(backend: str) -> Served:
        if backend not in started:
            if backend == "postgresql" and not POSTGRES_URL:
                pytest.skip(NO_POSTGRES)
            place = database(backend, POSTGRES_URL)
            url = place.__enter__()
            closing.append(place)
            with dust.open(url) as db, db.session() as s:
                users.create(s, UserCreate(username="admin", password=PASSWORD, role=Role.admin))
                users.create(s, UserCreate(username="viewer", password=PASSWORD, role=Role.viewer))
            running = Server(url)
            closing.append(running)
            running.start()
            started[backend] = Served(running.base, url)
        return started[backend]

    yield server
    for thing in reversed(closing):
        thing.__exit__(None, None, None)


@pytest.fixture
def served(database_url: str, servers: Callable[[str], Served]) -> Served:
    """The server of the backend of this test's ``database_url`` (the embedded side's database)."""
    return servers("sqlite" if database_url.startswith("sqlite") else "postgresql")


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with served.connect() as connected:
        yield connected


def test_client_has_every_method_of_dust_with_its_signature() -> None:
    public = {name for name, value in vars(dust.Dust).items() if not name.startswith("_") and callable(value)}
    for name in sorted(public - NOT_OVER_HTTP.keys()):
        for kind in (Client, AsyncClient):
            assert callable(getattr(kind, name, None)), f"{kind.__name__} lacks {name}"
            if name != "close":  # close takes no argument; the async one is a coroutine
                assert inspect.signature(getattr(kind, name)) == inspect.signature(getattr(dust.Dust, name)), name
    assert not NOT_OVER_HTTP.keys() & {n for n in vars(Client) if not n.startswith("_")}


def test_the_table_sends_each_method_to_its_rest_operation() -> None:
    """Each method of the table calls the REST operation that the embedded parity test maps to it, and every
    mapped operation has a plan."""
    wrong = {name: (op.verb, op.path) for name, op in OPERATIONS.items() if PYTHON.get((op.verb, op.path)) != name}
    assert not wrong, f"table entries that are not their method's REST operation: {wrong}"
    assert set(PYTHON.values()) <= PLANS.keys()


def scenario(db: Any) -> dict[str, Any]:
    """What a notebook does: schema, entities, a tensor and its values, relations, the master tensor, aggregates,
    anomalies, a trigger and its alert, and a few mistakes. The results as JSON, to compare."""
    out: dict[str, Any] = {}
    db.create_schema(
        {
            "name": "vitals",
            "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"], "ranges": {"heart_rate": [0, 300]}}],
        }
    )
    out["schema"] = db.get_schema("vitals")
    jane = db.create_entity("patient", "Jane Doe", external_id="MRN-1", attributes={"gender": "F", "ward": "A"})
    bob = db.create_patient("Bob Stone", attributes={"ward": "A"})
    doctor = db.create_entity("doctor", "Dr. Ada Park")
    out["ward_a"] = db.entities(kind="patient", ward="A")
    out["search"] = db.patients(q="jnae doe")
    out["updated"] = db.update_entity(jane.id, attributes={"ward": None})
    t = db.create_tensor(jane.id, "vitals", origin="2026-01-01T00:00:00Z")
    u = db.create_tensor(bob.id, "vitals", origin="2026-01-01T00:00:00Z")
    out["written"] = db.write_values(t.id, [{"time": i, "metric": "heart_rate", "value": 70 + i} for i in range(8)])
    out["array"] = db.write_array(u.id, np.array([[60.0, np.nan, 62.0], [36.6, 36.8, np.nan]]), start=2)
    out["tensor"] = db.get_tensor(t.id)
    for name, view in {
        "all": db.read_tensor(t.id),
        "one": db.read_tensor(t.id, time=3, labels={"metric": "heart_rate"}),
        "clipped": db.read_tensor(u.id, start=0, end=40),
        "latest": db.read_tensor(u.id, latest=True),
    }.items():
        out[f"view_{name}"] = view.to_json()
        out[f"numpy_{name}"] = np.nan_to_num(view.values, nan=-1).tolist()
        out[f"pandas_{name}"] = view.to_pandas().astype(str).to_dict("list")
    out["xarray"] = str(db.read_tensor(u.id).to_xarray().dims)
    db.write_values(t.id, [{"time": 0, "metric": "heart_rate", "value": 74}])
    out["history"] = db.tensor_history(t.id)
    treats = db.relate(doctor.id, jane.id, "treats", weight=0.5)
    db.relate(doctor.id, bob.id, "treats", attributes={"since": 2020})
    db.update_relation(treats.id, weight=0.9)
    out["relation"] = db.get_relation(treats.id)
    around = db.query_master(jane.id, depth=2)
    out["around_nodes"], out["around_edges"] = around.nodes, around.edges
    coo = db.master_tensor(type=["treats"])
    out["master"] = [
        [coo.types[t], coo.entity_ids[s], coo.entity_ids[g], v]
        for t, s, g, v in zip(*coo.indices, coo.values, strict=True)
    ]
    out["master_shape"] = coo.shape
    out["relations"] = db.relations(entity_id=doctor.id, type="treats", limit=1)
    out["aggregate"] = db.aggregate("vitals", "heart_rate", kind="patient", end="2026-01-06T00:00:00Z")
    out["cohort"] = db.aggregate("vitals", "heart_rate", agg="max", related_to=doctor.id, relation="treats")
    db.put_anomaly_rule("vitals", "heart_rate", "default", threshold=0.5)
    db.write_values(t.id, [{"time": 8 + i, "metric": "heart_rate", "value": 70 + i % 3} for i in range(20)])
    db.write_values(t.id, [{"time": 28, "metric": "heart_rate", "value": 250}])
    out["rules"] = db.anomaly_rules()
    out["anomalies"] = db.anomalies(tensor_id=t.id)
    fever = db.create_trigger(
        {
            "name": "fever",
            "when": {"kind": "patient", "schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
            "then": [{"action": "alert", "severity": "high", "message": "{entity.name}: {value}"}],
        }
    )
    db.write_values(t.id, [{"time": 1, "metric": "temperature", "value": 39.5}])
    alerts = db.alerts(trigger_id=fever.id)
    out["alerts"] = alerts
    out["acknowledged"] = db.update_alert(alerts.items[0].id, "acknowledged", note="on it")
    out["firings"] = db.firings(fever.id)
    out["errors"] = [
        _problem(lambda: db.get_entity(uuid.UUID(int=7))),
        _problem(lambda: db.create_entity("patient", "")),
        _problem(lambda: db.create_entity("patient", "Jane", external_id="MRN-1")),
        _problem(lambda: db.query_master(jane.id, depth=9)),
        _problem(lambda: db.read_tensor(t.id, time=400)),
        _problem(lambda: db.write_values(t.id, [{"time": 1, "metric": "pulse", "value": 1}])),
    ]
    return _comparable(out)


def _problem(bad: Callable[[], object]) -> list[Any]:
    with pytest.raises(dust.DustError) as caught:
        bad()
    problem = caught.value
    errors = [{**e, "loc": [p for p in e["loc"] if p not in {"body", "query", "path"}]} for e in problem.errors or []]
    return [type(problem).__name__, problem.status, WHERE.sub("", problem.detail), errors]


def _comparable(results: dict[str, Any]) -> Any:
    """JSON with each id numbered in the order first seen, and the write times (``…_at``) left out."""
    numbers: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        return numbers.setdefault(match.group(0), f"id-{len(numbers)}")

    def walk(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json", by_alias=True)
        if isinstance(value, uuid.UUID):
            value = str(value)
        if isinstance(value, dict):  # a cursor holds times: whether there is one is what compares
            kept = {k: v for k, v in value.items() if not k.endswith("_at") and k not in NOT_COMPARED}
            return {k: (v is not None) if k == "next_cursor" else walk(v) for k, v in kept.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return UUID.sub(number, value)
        return value if not hasattr(value, "isoformat") else value.isoformat()

    compared = walk(results)
    for unordered in UNORDERED:  # in the order of their random ids
        compared[unordered] = sorted(compared[unordered], key=json.dumps)
    return compared


def test_one_scenario_gives_the_same_results_embedded_and_served(db: dust.Dust, client: Client) -> None:
    served, embedded = scenario(client), scenario(db)
    assert {k: v for k, v in served.items() if v != embedded.get(k)} == {
        k: v for k, v in embedded.items() if v != served.get(k)
    }


def test_problems_are_the_embedded_exceptions_with_the_servers_detail(client: Client, served: Served) -> None:
    with pytest.raises(dust.NotFound, match="does not exist"):
        client.get_relation(uuid.uuid4())
    with pytest.raises(dust.InvalidInput) as invalid:
        client.create_entities([{"kind": "patient", "name": "A"}, {"kind": "patient"}])
    assert invalid.value.errors and invalid.value.errors[0]["loc"] == ["items", 1, "name"]
    with pytest.raises(dust.InvalidInput, match=r"UUID"):
        client.get_entity("not-a-uuid")
    with served.connect(username="viewer", password=PASSWORD) as viewer:
        with pytest.raises(Forbidden) as refused:
            viewer.create_entity("patient", "Nobody")
        assert refused.value.status == 403 and refused.value.detail
    with pytest.raises(Unauthorized):
        served.connect(username="admin", password="not the password")
    with served.connect(token="not-a-token") as stranger, pytest.raises(Unauthorized, match="invalid"):
        stranger.kinds()


def test_an_expired_access_token_is_refreshed_once_then_refused(client: Client) -> None:
    credentials = client._transport.credentials
    client.create_entity("refresh", "before")

    def expire() -> None:  # the same sign-in's token, issued already expired: the server says so (401)
        claims = read_access_token(SECRET, str(credentials.access))
        expired, _ = issue_access_token(
            SECRET, claims.user_id, claims.role, claims.version, timedelta(seconds=-5), claims.session_id
        )
        credentials.access = expired

    expire()
    stale = credentials.access
    assert client.create_entity("refresh", "after").name == "after"
    assert credentials.access != stale
    expire()
    credentials.refresh = "spent"
    with pytest.raises(Unauthorized, match="refresh token"):
        client.entities(kind="refresh")
    with pytest.raises(Unauthorized):  # refreshed once: nothing left to refresh with
        client.entities(kind="refresh")


def test_api_keys_and_tokens_sign_requests(served: Served) -> None:
    with dust.open(served.database_url) as db, db.session() as s:
        key = users.create_key(s, db.settings, users.by_username(s, "admin").id, "client tests").key
    with served.connect(api_key=key) as by_key:
        made = by_key.create_entity("keyed", "By key")
    with served.connect() as signed_in:
        token = signed_in._transport.credentials.access
    with served.connect(token=token) as by_token:
        assert by_token.get_entity(made.id).name == "By key"


def test_large_writes_go_in_batches_and_frames_and_arrays_write_as_embedded(client: Client) -> None:
    client.create_schema({"name": "bulk", "axes": [{"name": "metric", "labels": ["a", "b", "c"]}]})
    one = client.create_tensor(client.create_entity("bulk", "One").id, "bulk")
    two = client.create_tensor(client.create_entity("bulk", "Two").id, "bulk")
    array = np.arange(3 * 50, dtype=float).reshape(3, 50)
    array[1, ::7] = np.nan  # left as it is
    client._batch = 16  # as if the server took 16 values a request: ten requests
    assert client.write_arrays({one.id: array}, start=-5) == {one.id: int(np.count_nonzero(~np.isnan(array)))}
    view = client.read_tensor(one.id)
    assert view.coords["time"] == list(range(-5, 45))
    np.testing.assert_array_equal(view.values, array)
    client._batch = 100_000
    assert client.write_values(two.id, view.to_pandas()).written == view.to_pandas().shape[0]
    np.testing.assert_array_equal(client.read_tensor(two.id).values, array)
    with pytest.raises(dust.InvalidInput, match="does not match"):
        client.write_array(one.id, np.zeros((2, 4)))


def test_the_async_client_runs_the_same_plans(served: Served) -> None:
    async def work() -> list[str]:
        async with dust.connect_async(served.url, username="admin", password=PASSWORD) as db:
            made = await asyncio.gather(*(db.create_entity("async", f"E{i}") for i in range(4)))
            page = await db.entities(kind="async", limit=2)
            rest = await db.entities(kind="async", cursor=page.next_cursor)
            with pytest.raises(dust.NotFound):
                await db.get_entity(uuid.uuid4())
            assert sorted(e.name for e in made) == sorted(e.name for e in page.items + rest.items)
            return [e.name for e in page.items]

    assert len(asyncio.run(work())) == 2


def test_models_train_predict_and_explain_alike_embedded_and_served(
    db: dust.Dust, client: Client, served: Served
) -> None:
    pytest.importorskip("torch_geometric")
    from tests.models.clinics import request

    name = f"parity-{uuid.uuid4().hex[:8]}"  # the served database outlives one test: names and ids its own
    here_world = populate_in(db, name)
    with dust.open(served.database_url, migrate=False) as there:
        away_world = populate_in(there, name)
    here, away = db.train_model(request(name)), client.train_model(request(name))
    assert here.status == away.status == "succeeded" and here.version == away.version == 1
    same = ("task", "name", "kind", "target", "settings")
    assert [getattr(here, f) for f in same] == [getattr(away, f) for f in same]
    assert set(here.metrics) == set(away.metrics) and here.metrics["classes"] == away.metrics["classes"]
    assert [m.id for m in client.models(name=name).items] == [away.id]
    said = [
        face.predict(model.id, entity_ids=world.unlabelled, explain=True, top=3)
        for face, model, world in ((db, here, here_world), (client, away, away_world))
    ]
    for result, world in zip(said, (here_world, away_world), strict=True):
        assert [p.entity_id for p in result.predictions] == world.unlabelled
        assert all(p.predicted in ("high", "low") and p.explanation is not None for p in result.predictions)
    right = [sum(p.predicted == ("high" if i % 2 == 0 else "low") for i, p in enumerate(r.predictions)) for r in said]
    assert min(right) >= 8  # of 10: the clinics' own floor (tests/models/clinics.py)

    links = {"task": "link-prediction", "name": f"{name}-attends", "target": {"relations": ["attends"]}}
    links["settings"] = {"epochs": 10, "hidden": 10}
    here, away = db.train_model(links), client.train_model(links)
    assert here.status == away.status == "succeeded" and set(here.metrics or {}) == set(away.metrics or {})
    assert here.settings == away.settings and here.settings["layers"] == 1  # the task's defaults, both ways
    for face, model, world in ((db, here, here_world), (client, away, away_world)):
        ranked = face.predict(model.id, source=world.patients[0], type="attends", top=2)
        assert [link.source_id for link in ranked.links] == [world.patients[0]] * 2 and ranked.predictions == []
        scored = face.predict(model.id, candidates=[(world.patients[0], "attends", world.heart)])
        assert [(link.target_id, link.exists) for link in scored.links] == [(world.heart, True)]  # patient 0: heart


def populate_in(db: dust.Dust, tag: str) -> Any:
    from tests.models.clinics import populate

    with db.session() as s:
        return populate(s, tag=tag)
