"""/query_master (neighbourhoods) and /query_master/tensor (the master tensor as sparse COO), on every backend.

Tests marked ONE_BACKEND re-check what the engine test named beside each (tests/engine/) checks on both backends;
on one backend they check how HTTP carries it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import String, Uuid, bindparam, cast, func, insert, literal, select

from dust.storage.models import Entity, Relation, utcnow
from tests.api.conftest import ONE_BACKEND

API = "/api/v1"


def entity(client: TestClient, name: str, kind: str) -> str:
    response = client.post(f"{API}/entities", json={"kind": kind, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def relate(client: TestClient, source: str, target: str, type_: str, weight: float = 1.0, **body: object) -> dict:
    response = client.post(
        f"{API}/relations",
        json={"source_id": source, "target_id": target, "type": type_, "weight": weight, **body},
    )
    assert response.status_code == 201, response.text
    return response.json()


class Graph:
    """A small care network, named so results read as names.

    supplier -supplies 0.5-> hospital <-works_at 1.0- dr_a, dr_b
    dr_a -treats 0.9-> p1, dr_a -treats 0.4-> p2, dr_b -treats 0.6-> p3, p1 -referred 0.7-> dr_b
    """

    EDGES = [
        ("supplier", "supplies", "hospital", 0.5),
        ("dr_a", "works_at", "hospital", 1.0),
        ("dr_b", "works_at", "hospital", 1.0),
        ("dr_a", "treats", "p1", 0.9),
        ("dr_a", "treats", "p2", 0.4),
        ("dr_b", "treats", "p3", 0.6),
        ("p1", "referred", "dr_b", 0.7),
    ]
    KINDS = {"supplier": "company", "hospital": "hospital", "dr_a": "doctor", "dr_b": "doctor"}

    def __init__(self, client: TestClient) -> None:
        self.client = client
        names = sorted({e[0] for e in self.EDGES} | {e[2] for e in self.EDGES})
        self.ids = {name: entity(client, name, self.KINDS.get(name, "patient")) for name in names}
        self.names = {v: k for k, v in self.ids.items()}
        for source, type_, target, weight in self.EDGES:
            relate(client, self.ids[source], self.ids[target], type_, weight)

    def query(self, start: str, **params: object) -> tuple[dict[str, int], set[tuple[str, str, str, float]]]:
        """({node name: depth}, {(source, type, target, weight)}) of a neighbourhood query."""
        response = self.client.get(f"{API}/query_master", params={"entity_id": self.ids[start], **params})
        assert response.status_code == 200, response.text
        body = response.json()
        nodes = {self.names[n["id"]]: n["depth"] for n in body["nodes"]}
        assert len(nodes) == len(body["nodes"]), "a node came back twice"
        edges = {
            (self.names[e["source_id"]], e["type"], self.names[e["target_id"]], e["weight"]) for e in body["edges"]
        }
        assert len(edges) == len(body["edges"]), "an edge came back twice"
        return nodes, edges


def edges_named(*wanted: tuple[str, str, str]) -> set[tuple[str, str, str, float]]:
    weights = {(s, t, d): w for s, t, d, w in Graph.EDGES}
    return {(s, t, d, weights[(s, t, d)]) for s, t, d in wanted}


TREATS_P1 = ("dr_a", "treats", "p1")
TREATS_P2 = ("dr_a", "treats", "p2")
TREATS_P3 = ("dr_b", "treats", "p3")
REFERRED = ("p1", "referred", "dr_b")
A_WORKS = ("dr_a", "works_at", "hospital")
B_WORKS = ("dr_b", "works_at", "hospital")
SUPPLIES = ("supplier", "supplies", "hospital")


@pytest.fixture
def graph(client: TestClient) -> Graph:
    return Graph(client)


def test_depth_one_in_each_direction(graph: Graph) -> None:
    assert graph.query("p1", direction="in") == ({"p1": 0, "dr_a": 1}, edges_named(TREATS_P1))
    assert graph.query("p1", direction="out") == ({"p1": 0, "dr_b": 1}, edges_named(REFERRED))
    both = graph.query("p1", direction="both")
    assert both == ({"p1": 0, "dr_a": 1, "dr_b": 1}, edges_named(TREATS_P1, REFERRED))
    assert graph.query("p1") == both  # both and depth 1 are the defaults


def test_depth_two_and_three_both_ways(graph: Graph) -> None:
    nodes, edges = graph.query("p1", depth=2)
    assert nodes == {"p1": 0, "dr_a": 1, "dr_b": 1, "hospital": 2, "p2": 2, "p3": 2}
    assert edges == edges_named(TREATS_P1, REFERRED, A_WORKS, B_WORKS, TREATS_P2, TREATS_P3)
    nodes, edges = graph.query("p1", depth=3)
    assert nodes == {"p1": 0, "dr_a": 1, "dr_b": 1, "hospital": 2, "p2": 2, "p3": 2, "supplier": 3}
    assert edges == edges_named(*[(s, t, d) for s, t, d, _ in Graph.EDGES])


def test_depth_follows_only_the_asked_direction(graph: Graph) -> None:
    out2 = graph.query("p1", direction="out", depth=2)
    assert out2 == ({"p1": 0, "dr_b": 1, "hospital": 2, "p3": 2}, edges_named(REFERRED, B_WORKS, TREATS_P3))
    assert graph.query("p1", direction="out", depth=3) == out2  # nothing leaves the hospital or p3
    in1 = graph.query("hospital", direction="in")
    assert in1 == ({"hospital": 0, "dr_a": 1, "dr_b": 1, "supplier": 1}, edges_named(A_WORKS, B_WORKS, SUPPLIES))
    nodes, edges = graph.query("hospital", direction="in", depth=2)
    assert nodes == {"hospital": 0, "dr_a": 1, "dr_b": 1, "supplier": 1, "p1": 2}
    assert edges == edges_named(A_WORKS, B_WORKS, SUPPLIES, REFERRED)
    # hop 3 walks dr_a -> p1 back into a node already seen: the edge is new, the node is not
    nodes, edges = graph.query("hospital", direction="in", depth=3)
    assert nodes == {"hospital": 0, "dr_a": 1, "dr_b": 1, "supplier": 1, "p1": 2}
    assert edges == edges_named(A_WORKS, B_WORKS, SUPPLIES, REFERRED, TREATS_P1)


def test_type_filter_takes_one_type_or_a_comma_list(graph: Graph) -> None:
    nodes, edges = graph.query("p1", type="treats", depth=2)
    assert nodes == {"p1": 0, "dr_a": 1, "p2": 2}
    assert edges == edges_named(TREATS_P1, TREATS_P2)
    nodes, edges = graph.query("p1", type="treats,referred", depth=3)
    assert nodes == {"p1": 0, "dr_a": 1, "dr_b": 1, "p2": 2, "p3": 2}
    assert edges == edges_named(TREATS_P1, REFERRED, TREATS_P2, TREATS_P3)
    assert graph.query("p1", type="pays", depth=3) == ({"p1": 0}, set())


def test_min_weight_drops_light_edges_and_what_only_they_reach(graph: Graph) -> None:
    nodes, edges = graph.query("dr_a", direction="out", min_weight=0.5)
    assert nodes == {"dr_a": 0, "p1": 1, "hospital": 1}
    assert edges == edges_named(TREATS_P1, A_WORKS)
    nodes, _ = graph.query("dr_a", direction="out", min_weight=0.4)  # the bound is inclusive
    assert nodes == {"dr_a": 0, "p1": 1, "p2": 1, "hospital": 1}
    nodes, edges = graph.query("p1", depth=3, min_weight=0.65)
    assert nodes == {"p1": 0, "dr_a": 1, "dr_b": 1, "hospital": 2}
    assert edges == edges_named(TREATS_P1, REFERRED, A_WORKS, B_WORKS)
    assert graph.query("p1", min_weight=5) == ({"p1": 0}, set())


def test_nodes_carry_the_entity_and_come_nearest_first(graph: Graph) -> None:
    response = graph.client.get(f"{API}/query_master", params={"entity_id": graph.ids["p1"], "depth": 2})
    nodes = response.json()["nodes"]
    assert [n["depth"] for n in nodes] == sorted(n["depth"] for n in nodes)
    doctor = next(n for n in nodes if n["id"] == graph.ids["dr_a"])
    assert doctor["kind"] == "doctor" and doctor["name"] == "dr_a"
    edge = next(e for e in response.json()["edges"] if e["type"] == "referred")
    relation = graph.client.get(f"{API}/relations/{edge['id']}").json()
    assert (relation["source_id"], relation["target_id"], relation["weight"]) == (
        edge["source_id"],
        edge["target_id"],
        edge["weight"],
    )


@pytest.mark.parametrize("direction", ["out", "in", "both"])
def test_cycles_and_self_loops_neither_loop_nor_duplicate(client: TestClient, direction: str) -> None:
    a, b, c = (entity(client, name, "node") for name in "abc")
    for source, target in ((a, b), (b, c), (c, a), (a, a)):
        relate(client, source, target, "next")
    relate(client, b, a, "next")
    names = {a: "a", b: "b", c: "c"}
    body = client.get(f"{API}/query_master", params={"entity_id": a, "direction": direction, "depth": 3}).json()
    assert sorted(names[n["id"]] for n in body["nodes"]) == ["a", "b", "c"]
    assert len({e["id"] for e in body["edges"]}) == len(body["edges"]) == 5
    depths = {"out": {"a": 0, "b": 1, "c": 2}, "in": {"a": 0, "b": 1, "c": 1}, "both": {"a": 0, "b": 1, "c": 1}}
    assert {names[n["id"]]: n["depth"] for n in body["nodes"]} == depths[direction]


def test_isolated_entity_is_alone(client: TestClient) -> None:
    loner = entity(client, "loner", "patient")
    body = client.get(f"{API}/query_master", params={"entity_id": loner, "depth": 3}).json()
    assert [(n["id"], n["depth"]) for n in body["nodes"]] == [(loner, 0)]
    assert body["edges"] == []


@ONE_BACKEND
@pytest.mark.parametrize(
    "params",
    [
        {"depth": 0},
        {"depth": 4},
        {"depth": "two"},
        {"direction": "sideways"},
        {"min_weight": "heavy"},
        {"min_weight": "nan"},
        {"at": "last tuesday"},
        {"at": "9999-12-31T23:00:00-05:00"},
        {"type": "Treats"},
        {"type": "treats,\x00"},
        {"entity_id": "not-a-uuid"},
        {"entity_id": None},  # left out
    ],
    ids=repr,
)
def test_bad_queries_are_4xx_problems(client: TestClient, params: dict[str, Any]) -> None:
    asked = {k: v for k, v in {"entity_id": entity(client, "p1", "patient"), **params}.items() if v is not None}
    response = client.get(f"{API}/query_master", params=asked)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_an_unknown_entity_is_a_404_naming_it(client: TestClient) -> None:
    missing = str(uuid.uuid4())
    response = client.get(f"{API}/query_master", params={"entity_id": missing})
    assert response.status_code == 404
    assert missing in response.json()["detail"]


def test_at_respects_validity(client: TestClient) -> None:
    doctor, patient = entity(client, "dr", "doctor"), entity(client, "pat", "patient")
    relate(client, doctor, patient, "treats", 0.8, valid_from="2024-01-01T00:00:00Z", valid_to="2025-01-01T00:00:00Z")

    def reached(at: str) -> list[str]:
        body = client.get(f"{API}/query_master", params={"entity_id": doctor, "at": at}).json()
        return [e["target_id"] for e in body["edges"]]

    assert reached("2023-12-31T23:59:59Z") == []
    assert reached("2024-01-01T00:00:00Z") == [patient]  # valid_from is inclusive
    assert reached("2024-06-01T12:00:00+05:00") == [patient]
    assert reached("2024-12-31T23:59:59Z") == [patient]
    assert reached("2025-01-01T00:00:00Z") == []  # valid_to is exclusive
    assert reached("2025-01-01T01:00:00+02:00") == [patient]  # that is 23:00 UTC the day before


def test_without_at_only_relations_valid_now_count(client: TestClient) -> None:
    """No `at` means now: an ended relation and one not yet begun are left out; a null valid_from is always valid
    (from the start of time), as is a null valid_to (for good)."""
    doctor = entity(client, "dr", "doctor")
    names = ("ended", "future", "open_start", "open_end", "always")
    ids = {name: entity(client, name, "patient") for name in names}
    now = datetime.now().astimezone()
    past, soon = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    relate(client, doctor, ids["ended"], "treats", valid_to=past)
    relate(client, doctor, ids["future"], "treats", valid_from=soon)
    relate(client, doctor, ids["open_start"], "treats", valid_from=None, valid_to=soon)
    relate(client, doctor, ids["open_end"], "treats", valid_from=past, valid_to=None)
    relate(client, doctor, ids["always"], "treats")

    def reached(**params: str) -> set[str]:
        body = client.get(f"{API}/query_master", params={"entity_id": doctor, **params}).json()
        return {e["target_id"] for e in body["edges"]}

    assert reached() == {ids["open_start"], ids["open_end"], ids["always"]}
    assert reached(at=now.isoformat()) == reached()
    assert reached(at="0001-01-02T00:00:00Z") == {ids["open_start"], ids["ended"], ids["always"]}
    tensor = client.get(f"{API}/query_master/tensor").json()
    assert set(tensor["entity_ids"]) == {doctor, ids["open_start"], ids["open_end"], ids["always"]}


def test_the_defaults_are_documented_with_the_parameters(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()["paths"]
    said = {p["name"]: p.get("description", "") for p in spec["/api/v1/query_master"]["get"]["parameters"]}
    assert "both (the default)" in said["direction"]
    assert "default 1" in said["depth"]
    assert "Default now: relations not valid now are left out" in said["at"]
    assert "a null bound being open" in said["at"]
    relation = client.get("/openapi.json").json()["components"]["schemas"]["RelationCreate"]["properties"]
    assert "null: valid since always" in relation["valid_from"]["description"]


def test_at_gives_the_weight_the_relation_had_then(client: TestClient) -> None:
    doctor, patient = entity(client, "dr", "doctor"), entity(client, "pat", "patient")
    made = relate(client, doctor, patient, "treats", 1.0)
    client.patch(f"{API}/relations/{made['id']}", json={"weight": 3.0})
    history = client.patch(f"{API}/relations/{made['id']}", json={"weight": 0.5}).json()["history"]
    # the moments asked about come from the stored change times, not from the wall clock around sleeps
    created, first_change, second_change = (datetime.fromisoformat(h["changed_at"]) for h in history)
    assert created == datetime.fromisoformat(made["created_at"]) and created < first_change < second_change

    def weight_at(at: datetime | None) -> list[float]:
        params = {"entity_id": doctor, **({"at": at.isoformat()} if at else {})}
        edges = client.get(f"{API}/query_master", params=params).json()["edges"]
        tensor = client.get(f"{API}/query_master/tensor", params={"at": at.isoformat()} if at else {}).json()
        assert tensor["values"] == [e["weight"] for e in edges]
        return [e["weight"] for e in edges]

    assert weight_at(created + (first_change - created) / 2) == [1.0]
    assert weight_at(first_change) == [3.0]
    assert weight_at(first_change + (second_change - first_change) / 2) == [3.0]
    assert weight_at(second_change) == [0.5]
    assert weight_at(None) == [0.5]
    assert weight_at(second_change + timedelta(days=1)) == [0.5]
    # valid without a start, so before it was recorded it counts with its first weight
    assert weight_at(created - timedelta(days=365)) == [1.0]
    # min_weight applies to the weight as of `at` (3.0), not today's (0.5)
    params = {"entity_id": doctor, "at": first_change.isoformat()}
    assert client.get(f"{API}/query_master", params={**params, "min_weight": 4}).json()["edges"] == []
    assert len(client.get(f"{API}/query_master", params={**params, "min_weight": 2}).json()["edges"]) == 1
    assert client.get(f"{API}/query_master", params={"entity_id": doctor, "min_weight": 2}).json()["edges"] == []


def coo(tensor: dict) -> set[tuple[str, str, str, float]]:
    """(type, source, target, weight) for each stored entry of a COO master tensor."""
    types, ids, (t, s, d), values = tensor["types"], tensor["entity_ids"], tensor["indices"], tensor["values"]
    assert len(t) == len(s) == len(d) == len(values)
    return {(types[i], ids[j], ids[k], v) for i, j, k, v in zip(t, s, d, values, strict=True)}


def master_tensor(client: TestClient, **params: str) -> dict[str, Any]:
    response = client.get(f"{API}/query_master/tensor", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@ONE_BACKEND  # engine: test_relations.py::test_master_tensor_matches_a_dense_array_of_the_relations
def test_master_tensor_round_trips_every_relation(graph: Graph) -> None:
    tensor = master_tensor(graph.client)
    assert tensor["types"] == sorted({"supplies", "works_at", "treats", "referred"})
    assert sorted(tensor["entity_ids"]) == sorted(graph.ids.values())
    assert len(set(tensor["entity_ids"])) == len(tensor["entity_ids"])
    assert tensor["shape"] == [4, 7, 7]
    expected = {(t, graph.ids[s], graph.ids[d], w) for s, t, d, w in Graph.EDGES}
    assert coo(tensor) == expected and len(tensor["values"]) == len(expected)
    for dim, size in zip(tensor["indices"], tensor["shape"], strict=True):
        assert all(0 <= i < size for i in dim)


@ONE_BACKEND  # engine: test_relations.py::test_master_tensor_matches_a_dense_array_of_the_relations
def test_master_tensor_type_filter(graph: Graph) -> None:
    tensor = master_tensor(graph.client, type="treats,referred")
    assert tensor["types"] == ["referred", "treats"]
    wanted = [(s, t, d, w) for s, t, d, w in Graph.EDGES if t in ("treats", "referred")]
    assert coo(tensor) == {(t, graph.ids[s], graph.ids[d], w) for s, t, d, w in wanted}
    assert sorted(tensor["entity_ids"]) == sorted({graph.ids[n] for s, _, d, _ in wanted for n in (s, d)})
    assert tensor["shape"] == [2, 5, 5]
    none = master_tensor(graph.client, type="pays")
    assert none == {"types": [], "entity_ids": [], "indices": [[], [], []], "values": [], "shape": [0, 0, 0]}


def test_master_tensor_as_of_a_time(client: TestClient) -> None:
    a, b, c = (entity(client, name, "node") for name in "abc")
    relate(client, a, b, "old", 2.0, valid_to="2020-01-01T00:00:00Z")
    relate(client, b, c, "new", 3.0, valid_from="2030-01-01T00:00:00Z")
    relate(client, a, c, "always", 4.0)

    def at(when: str) -> set[tuple[str, str, str, float]]:
        response = client.get(f"{API}/query_master/tensor", params={"at": when})
        assert response.status_code == 200, response.text
        return coo(response.json())

    assert at("2019-06-01T00:00:00Z") == {("old", a, b, 2.0), ("always", a, c, 4.0)}
    assert at("2025-06-01T00:00:00Z") == {("always", a, c, 4.0)}
    assert at("2030-01-01T00:00:00Z") == {("always", a, c, 4.0), ("new", b, c, 3.0)}
    tensor = client.get(f"{API}/query_master/tensor", params={"at": "2025-06-01T00:00:00Z"}).json()
    assert tensor["shape"] == [1, 2, 2] and sorted(tensor["entity_ids"]) == sorted([a, c])


@ONE_BACKEND
@pytest.mark.parametrize(
    "params", [{"at": "soon"}, {"at": "0001-01-01T00:00:00+01:00"}, {"type": "\x00"}, {"type": "new old"}], ids=repr
)
def test_bad_master_tensor_queries_are_422_problems(client: TestClient, params: dict[str, str]) -> None:
    response = client.get(f"{API}/query_master/tensor", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_master_tensor_of_an_empty_graph(client: TestClient) -> None:
    entity(client, "unrelated", "patient")
    tensor = client.get(f"{API}/query_master/tensor")
    assert tensor.status_code == 200
    assert tensor.json() == {"types": [], "entity_ids": [], "indices": [[], [], []], "values": [], "shape": [0, 0, 0]}


def test_master_tensor_follows_changes(graph: Graph) -> None:
    edge = graph.client.get(f"{API}/relations", params={"type": "supplies"}).json()["items"][0]
    graph.client.patch(f"{API}/relations/{edge['id']}", json={"weight": 0.05})
    tensor = graph.client.get(f"{API}/query_master/tensor", params={"type": "supplies"}).json()
    assert tensor["values"] == [0.05]
    assert graph.client.delete(f"{API}/relations/{edge['id']}").status_code == 204
    assert graph.client.get(f"{API}/query_master/tensor", params={"type": "supplies"}).json()["values"] == []
    assert "supplies" not in graph.client.get(f"{API}/query_master/tensor").json()["types"]


BIG = 70_000  # entities: one IN list of them all would pass PostgreSQL's 65,535 parameters


def _nth(number: Any, dialect: str) -> Any:
    """The UUID whose integer is ``number``, as SQL: ids made by the database, 70,000 at a time."""
    if dialect == "postgresql":
        return cast(func.lpad(func.to_hex(number), 32, "0"), Uuid)
    return func.printf("%032x", number)  # how SQLite stores a Uuid


def _build_pairs(app: FastAPI, doctor: uuid.UUID) -> None:
    """Entities e0..e69999 and a relation e(2k) -pair-> e(2k+1) each: 35,000 relations, 70,000 ends; made in SQL,
    in a second or so (through the API it would take minutes, and even a Core executemany ~10 s)."""
    with app.state.engine.begin() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            n = select(func.generate_series(0, BIG - 1).label("i")).subquery()
        else:
            top = select(literal(0).label("i")).cte("n", recursive=True)
            n = top.union_all(select(top.c.i + 1).where(top.c.i < BIG - 1)).alias()
        now = bindparam("now", utcnow(), type_=Entity.created_at.type)
        columns = ["id", "kind", "name", "attributes", "created_at", "updated_at"]
        made = select(
            _nth(n.c.i, dialect),
            literal("patient"),
            literal("e") + cast(n.c.i, String),
            literal({}, Entity.attributes.type),
            now,
            now,
        )
        conn.execute(insert(Entity).from_select(columns, made))
        pairs = select(
            _nth(n.c.i + BIG, dialect),
            _nth(n.c.i, dialect),
            _nth(n.c.i + 1, dialect),
            literal("pair"),
            literal(1.0),
            literal({}, Entity.attributes.type),
            now,
            now,
        ).where(n.c.i % 2 == 0)
        columns = ["id", "source_id", "target_id", "type", "weight", "attributes", "created_at", "updated_at"]
        conn.execute(insert(Relation).from_select(columns, pairs))
        conn.execute(insert(Entity), [{"id": doctor, "kind": "doctor", "name": "doctor"}])
        treats = [
            {"source_id": doctor, "target_id": uuid.UUID(int=n), "type": "treats", "weight": 1.0} for n in range(3)
        ]
        conn.execute(insert(Relation), treats)


def test_a_clinician_queries_a_graph_of_more_entities_than_a_statement_takes_parameters(
    app: FastAPI, login_as: Callable[..., TestClient]
) -> None:
    """70,000 entities in 35,000 pairs (e0 -pair-> e1, e2 -pair-> e3, …), of which the clinician treats e0, e1 and
    e2: the master tensor and a neighbourhood show only those, filtered in SQL (not by an IN list of every
    endpoint), quickly."""
    doctor = uuid.uuid4()
    _build_pairs(app, doctor)
    clinician = login_as("clinician", entity_id=doctor)
    started = time.monotonic()
    tensor = clinician.get(f"{API}/query_master/tensor")
    assert tensor.status_code == 200, tensor.text
    seen = {str(doctor), *(str(uuid.UUID(int=n)) for n in range(3))}
    assert set(tensor.json()["entity_ids"]) == seen
    assert sorted(tensor.json()["types"]) == ["pair", "treats"] and len(tensor.json()["values"]) == 4
    around = clinician.get(f"{API}/query_master", params={"entity_id": str(uuid.UUID(int=1)), "depth": 3})
    assert around.status_code == 200, around.text
    assert {n["id"] for n in around.json()["nodes"]} == seen
    assert clinician.get(f"{API}/query_master", params={"entity_id": str(uuid.UUID(int=3))}).status_code == 404
    assert time.monotonic() - started < 5
