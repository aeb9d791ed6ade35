"""Access control, generated from the OpenAPI document: a new route is covered the day it appears.

The world: hospital H; doctors A and B work there; A treats patient PA, B treats patient PB. Clinician
"alice" is doctor A, so she reaches A, PA and H (over treats and works_at) — never B or PB.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.security import GRANTS, Permission, Role
from tests.api.conftest import API, VITALS, World, make

PUBLIC = {("post", "/api/v1/auth/token"), ("post", "/api/v1/auth/refresh")}
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/api/v1/healthz", "/api/v1/readyz")


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in app.openapi()["paths"].items() for m, op in ops.items()]


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def url(path: str, op: dict[str, Any], ids: dict[str, str]) -> str:
    """The path with its parameters filled from ``ids``, plus every required query parameter."""
    filled = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), str(uuid.uuid4())), path)
    required = [p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")]
    query = "&".join(f"{name}={ids.get(name, uuid.uuid4())}" for name in required)
    return filled + (f"?{query}" if query else "")


def call(client: TestClient, method: str, target: str, body: Any = None) -> int:
    if method in ("post", "put", "patch"):
        return client.request(method.upper(), target, json={} if body is None else body).status_code
    return client.request(method.upper(), target).status_code


def test_every_route_declares_a_permission(app: FastAPI) -> None:
    undeclared = [
        f"{m.upper()} {p}" for m, p, op in operations(app) if not is_public(m, p) and "x-permission" not in op
    ]
    assert not undeclared, f"routes without allow(...): {undeclared}"


def test_without_a_token_every_route_is_401(app: FastAPI, anon_client: TestClient) -> None:
    for method, path, op in operations(app):
        if is_public(method, path):
            continue
        response = anon_client.request(method.upper(), url(path, op, {}))
        assert response.status_code == 401, f"{method.upper()} {path} answered {response.status_code}"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_gets_exactly_its_permissions(
    role: str, app: FastAPI, world: World, login_as: Callable[..., TestClient]
) -> None:
    signed_in = login_as(role, entity_id=world["A"])
    # Function-level permissions only: the granting relation rule (object level) has tests of its own below.
    ids = {
        "entity_id": world["PA"],
        "tensor_id": world["TPA"],
        "relation_id": world["A-consults"],
        "name": "vitals",
        "kind": "patient",
    }
    wrong = []
    # deletes, then signing out, last: each would spoil the calls after it
    for method, path, op in sorted(operations(app), key=lambda o: (o[1].endswith("/logout"), o[0] == "delete")):
        if is_public(method, path):
            continue
        allowed = Permission(op["x-permission"]) in GRANTS[Role(role)]
        status = call(signed_in, method, url(path, op, ids))
        if status == 401 or (status == 403) == allowed:
            wrong.append(f"{method.upper()} {path}: {status} (allowed={allowed})")
    assert not wrong, f"{role}: {wrong}"


ID_PARAMS = {"entity_id", "tensor_id", "relation_id"}
VALID_BODIES = {
    ("patch", "/api/v1/entities/{entity_id}"): {"name": "renamed"},
    ("patch", "/api/v1/patients/{entity_id}"): {"name": "renamed"},
    ("patch", "/api/v1/relations/{relation_id}"): {"weight": 0.1},
    ("patch", "/api/v1/tensors/{tensor_id}"): {"schema_version": 1},
    ("post", "/api/v1/tensors/{tensor_id}/values"): {"values": [{"time": 1, "metric": "heart_rate", "value": 1}]},
}


@pytest.mark.parametrize("role", ["clinician", "member", "viewer"])
def test_another_clinicians_patient_is_404_everywhere(
    role: str, app: FastAPI, world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    signed_in = login_as(role, entity_id=world["A"])
    theirs = {"entity_id": world["PB"], "tensor_id": world["TPB"], "relation_id": world["B-treats"]}
    before = client.get(f"{API}/tensor/{world['TPB']}").json()["values"]
    checked, wrong = 0, []
    for method, path, op in operations(app):
        names = set(re.findall(r"\{(\w+)\}", path)) | {
            p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")
        }
        if is_public(method, path) or not names & ID_PARAMS or "x-permission" not in op:
            continue
        if Permission(op["x-permission"]) not in GRANTS[Role(role)]:
            continue
        checked += 1
        status = call(signed_in, method, url(path, op, theirs), VALID_BODIES.get((method, path)))
        if status != 404:
            wrong.append(f"{method.upper()} {path}: {status}")
    assert checked >= 8 and not wrong, wrong
    assert client.get(f"{API}/patients/{world['PB']}").json()["name"] == "Pat B"  # nothing changed
    assert client.get(f"{API}/tensor/{world['TPB']}").json()["values"] == before


def test_lists_search_and_graphs_show_only_what_is_reachable(world: World, login_as: Callable[..., TestClient]) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    mine = {world["A"], world["PA"], world["H"]}
    assert {e["id"] for e in alice.get(f"{API}/entities").json()["items"]} == mine
    for query in ("Pat B", "MRN-B"):
        found = {p["id"] for p in alice.get(f"{API}/patients", params={"q": query}).json()["items"]}
        assert world["PB"] not in found
    relations = alice.get(f"{API}/relations").json()["items"]
    assert {r["id"] for r in relations} == {world["A-treats"], world["A-works"], world["A-consults"]}
    graph = alice.get(f"{API}/query_master", params={"entity_id": world["A"], "depth": 3}).json()
    assert {n["id"] for n in graph["nodes"]} == mine
    coo = alice.get(f"{API}/query_master/tensor").json()
    assert set(coo["entity_ids"]) <= mine and len(coo["values"]) == 3
    assert alice.get(f"{API}/entities/{world['A']}/tensors").status_code == 200


def test_members_see_what_they_create_and_relate_it_by_non_granting_types(
    world: World, login_as: Callable[..., TestClient]
) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    new = make(alice, "/patients", {"name": "Walk-in"})
    assert alice.get(f"{API}/patients/{new}").status_code == 200
    make(alice, "/relations", {"source_id": world["A"], "target_id": new, "type": "consults"})
    refused = alice.post(
        f"{API}/relations", json={"source_id": world["A"], "target_id": world["PB"], "type": "consults"}
    )
    assert refused.status_code == 422 and world["PB"] in refused.json()["detail"]


def test_analysts_get_de_identified_rows(world: World, client: TestClient, login_as: Callable[..., TestClient]) -> None:
    analyst = login_as("analyst")
    seen = analyst.get(f"{API}/patients/{world['PA']}").json()
    assert seen["name"].startswith("patient-") and seen["name"] != "Pat A"
    assert seen["external_id"] is None and "ssn" not in seen["attributes"]
    assert analyst.get(f"{API}/patients/{world['PA']}").json()["name"] == seen["name"]  # stable pseudonym
    listed = analyst.get(f"{API}/patients").json()["items"]
    assert {p["name"] for p in listed}.isdisjoint({"Pat A", "Pat B"})
    assert analyst.get(f"{API}/patients", params={"q": "Pat"}).status_code == 403
    assert analyst.get(f"{API}/patients", params={"attr.ssn": "1"}).status_code == 403
    nodes = analyst.get(f"{API}/query_master", params={"entity_id": world["A"]}).json()["nodes"]
    assert "Pat A" not in {n["name"] for n in nodes}
    assert analyst.get(f"{API}/tensor/{world['TPA']}").status_code == 200
    # a kind policy decides what is sensitive; a sensitive schema is aggregates-only
    client.put(f"{API}/kinds/hospital", json={"public": ["name"]})
    assert analyst.get(f"{API}/entities/{world['H']}").json()["name"] == "General"
    assert client.put(f"{API}/schemas/vitals", json={"axes": VITALS["axes"], "sensitive": True}).status_code == 201
    assert client.patch(f"{API}/tensors/{world['TPA']}", json={"schema_version": 2}).status_code == 200
    assert analyst.get(f"{API}/tensor/{world['TPA']}").status_code == 403
