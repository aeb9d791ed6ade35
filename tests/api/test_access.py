"""Access control, generated from the OpenAPI document: a new route is covered the day it appears.

The world: hospital H; doctors A and B work there; A treats patient PA, B treats patient PB. Clinician
"alice" is doctor A, so she reaches A, PA and H (over treats and works_at) — never B or PB.

The permission matrix sends each role one valid request per operation (REQUESTS, keyed by method and path: a
route without an entry fails) and checks the answer against the document: the documented success status and a
body matching its schema where the role has the permission, a documented 403 where it has not.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust import jobs
from dust.core.security import GRANTS, Permission, Role
from dust.engine import webhooks
from dust.models import registry as model_registry
from dust.storage.repositories import alerts as alerts_repo
from tests.api.conftest import API, VITALS, World, make
from tests.conftest import PASSWORD

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
    if method in ("post", "put", "patch") or body is not None:
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


# --- the permission matrix: every operation, every role, with a valid request -----------------------------


@dataclass
class Request:
    """A valid request for an operation: path parameters, query parameters and JSON body; ``expect`` names the
    success status where the document gives more than one."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    expect: int | None = None


@dataclass
class Acting:
    """What a request is made for: the role, its client, an admin's client to set things up, and the world."""

    role: Role
    me: TestClient
    admin: TestClient
    world: World

    @property
    def writes(self) -> bool:
        return Permission.write in GRANTS[self.role]

    def mine(self, kind: str = "patient") -> str:
        """A new entity the role may change and delete: its own if it may write (a scoped role sees what it
        created), else the admin's (the call is then refused before any object is looked at)."""
        path, body = (
            ("/patients", {"name": "Walk-in"}) if kind == "patient" else ("/entities", {"kind": kind, "name": "x"})
        )
        return make(self.me if self.writes else self.admin, path, body)

    def my_tensor(self) -> str:
        return make(self.me if self.writes else self.admin, "/tensors", {"entity_id": self.mine(), "schema": "vitals"})

    def my_relation(self) -> str:
        """A new relation of a type that grants no access, so that a member may delete it."""
        body = {"source_id": self.world["A"], "target_id": self.mine(), "type": "consults"}
        return make(self.me if self.writes else self.admin, "/relations", body)

    def my_key(self) -> str:
        return make(self.me, "/auth/api-keys", {"name": f"spare-{uuid.uuid4().hex[:6]}"})

    def spare_user(self) -> str:
        body = {"username": f"spare-{uuid.uuid4().hex[:8]}", "password": PASSWORD, "role": "viewer"}
        return make(self.admin, "/users", body)

    def spare_schema(self) -> str:
        name = f"spare_{uuid.uuid4().hex[:8]}"
        made = self.admin.post(f"{API}/schemas", json={"name": name, "axes": [{"name": "metric", "labels": ["a"]}]})
        assert made.status_code == 201, made.text
        return name


GRANTING_TYPE = {Role.admin: "treats"}


def _ruled(acting: Acting, label: str) -> str:
    """``label`` of vitals, with an anomaly rule (set by the admin): to scan, or to delete the rule."""
    made = acting.admin.put(f"{API}/anomalies/rules/vitals/{label}", json={"detector": "mad"})
    assert made.status_code == 200, made.text
    return label


def _weighted(acting: Acting) -> str:
    """A relation type with a weight policy (set by the admin): to read, or to delete."""
    name = _fresh("knows")
    made = acting.admin.put(f"{API}/weight-policies/{name}", json={"reinforce": 1, "half_life": "P7D"})
    assert made.status_code == 200, made.text
    return name


def _fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _analysable(acting: Acting) -> str:
    """PA's vitals tensor, given two weeks of heart rates by the admin: enough values to analyse."""
    values = [{"time": t, "metric": "heart_rate", "value": 70 + t % 7} for t in range(1, 15)]
    assert acting.admin.post(f"{API}/tensors/{acting.world['TPA']}/values", json={"values": values}).status_code == 200
    return acting.world["TPA"]


def _alert(acting: Acting) -> str:
    """A new open alert on PA, raised as a rule raises it (through the repository: no route raises one)."""
    row = {"entity_id": uuid.UUID(acting.world["PA"]), "subject_id": uuid.UUID(acting.world["PA"])}
    with acting.admin.app.state.sessions() as session, session.begin():  # type: ignore[attr-defined]
        (alert_id,) = alerts_repo.add(session, [{**row, "severity": "high", "message": "{entity.name}: fever"}])
    return str(alert_id)


def _delivery(acting: Acting) -> str:
    """A pending webhook delivery, as a rule's firing puts it in the outbox."""
    with acting.admin.app.state.sessions() as session, session.begin():  # type: ignore[attr-defined]
        made = webhooks.enqueue(
            session, trigger_id=None, firing_id=None, url="https://example.org/hook", payload={}, secret="s"
        )
    return str(made)


def _trigger(acting: Acting) -> str:
    """A new rule, made by the admin: to read, change or delete."""
    rule = {
        "name": _fresh("rule"),
        "when": {"schema": "vitals", "label": "heart_rate", "op": ">", "value": 200},
        "then": [{"action": "alert"}],
    }
    made = acting.admin.post(f"{API}/triggers", json=rule)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _my_job(acting: Acting) -> str:
    """A queued job submitted by the acting user (no worker runs it here)."""
    me = acting.me.get(f"{API}/auth/me").json()["id"]
    with acting.admin.app.state.sessions() as session, session.begin():  # type: ignore[attr-defined]
        return str(jobs.submit(session, "anomalies.scan", {"scan": {"tensor_id": acting.world["TPA"]}}, created_by=me))


def _model_request(acting: Acting) -> dict[str, Any]:
    """A valid training request: labels of two new patients (the acting role's own, if it may write)."""
    maker = acting.me if acting.writes else acting.admin
    names = [_fresh("MRN") for _ in range(2)]
    for name in names:
        make(maker, "/patients", {"name": "Walk-in", "external_id": name})
    labels = dict(zip(names, ("a", "b"), strict=True))
    return {"task": "entity-classification", "name": _fresh("m"), "kind": "patient", "target": {"labels": labels}}


def _trained(acting: Acting) -> str:
    """A model the admin trained (shared with everyone), trained here in this process: no worker runs here."""
    body = {**_model_request(Acting(Role.admin, acting.admin, acting.admin, acting.world)), "settings": {"epochs": 2}}
    body["target"] = {"labels": {"MRN-A": "a", "MRN-B": "b"}}
    made = acting.admin.post(f"{API}/models", json=body)
    assert made.status_code == 202, made.text
    state = acting.admin.app.state  # type: ignore[attr-defined]
    model_registry.train_here(state.sessions, state.settings, uuid.UUID(made.json()["job_id"]))
    return str(made.json()["id"])


# Keyed by (method, path) as in /openapi.json: a new route fails test_every_operation_has_a_request until it
# has an entry here.
REQUESTS: dict[tuple[str, str], Callable[[Acting], Request]] = {
    ("get", "/api/v1/auth/me"): lambda a: Request(),
    ("post", "/api/v1/auth/logout"): lambda a: Request(),
    ("get", "/api/v1/auth/api-keys"): lambda a: Request(),
    ("post", "/api/v1/auth/api-keys"): lambda a: Request(body={"name": "matrix", "expires_in_days": 1}),
    ("delete", "/api/v1/auth/api-keys/{key_id}"): lambda a: Request({"key_id": a.my_key()}),
    ("get", "/api/v1/users"): lambda a: Request(),
    ("post", "/api/v1/users"): lambda a: Request(
        body={"username": _fresh("new"), "password": PASSWORD, "role": "viewer", "entity_id": a.world["A"]}
    ),
    ("get", "/api/v1/users/{user_id}"): lambda a: Request({"user_id": a.spare_user()}),
    ("patch", "/api/v1/users/{user_id}"): lambda a: Request({"user_id": a.spare_user()}, body={"role": "analyst"}),
    ("get", "/api/v1/audit"): lambda a: Request(query={"entity_id": a.world["PA"], "limit": 5}),
    ("get", "/api/v1/kinds"): lambda a: Request(),
    ("get", "/api/v1/plugins"): lambda a: Request(),
    ("get", "/api/v1/kinds/{kind}"): lambda a: Request({"kind": "device"}),
    ("put", "/api/v1/kinds/{kind}"): lambda a: Request({"kind": "device"}, body={"sensitive": ["serial"]}),
    ("post", "/api/v1/entities"): lambda a: Request(body={"kind": "device", "name": "Pump 7"}),
    ("get", "/api/v1/entities"): lambda a: Request(query={"kind": "patient", "limit": 10}),
    ("get", "/api/v1/entities/{entity_id}"): lambda a: Request({"entity_id": a.world["PA"]}),
    ("patch", "/api/v1/entities/{entity_id}"): lambda a: Request({"entity_id": a.mine("device")}, body={"name": "B"}),
    ("delete", "/api/v1/entities/{entity_id}"): lambda a: Request({"entity_id": a.mine("device")}),
    ("get", "/api/v1/entities/{entity_id}/tensors"): lambda a: Request({"entity_id": a.world["PA"]}),
    ("post", "/api/v1/patients"): lambda a: Request(body={"name": "Pat C", "external_id": _fresh("MRN")}),
    ("get", "/api/v1/patients"): lambda a: Request(query={"limit": 10}),
    ("get", "/api/v1/patients/{entity_id}"): lambda a: Request({"entity_id": a.world["PA"]}),
    ("patch", "/api/v1/patients/{entity_id}"): lambda a: Request({"entity_id": a.mine()}, body={"name": "Pat D"}),
    ("delete", "/api/v1/patients/{entity_id}"): lambda a: Request({"entity_id": a.mine()}),
    ("get", "/api/v1/schemas"): lambda a: Request(),
    ("post", "/api/v1/schemas"): lambda a: Request(body={"name": _fresh("s"), "axes": VITALS["axes"]}),
    ("get", "/api/v1/schemas/{name}"): lambda a: Request({"name": "vitals"}, query={"version": 1}),
    ("put", "/api/v1/schemas/{name}"): lambda a: Request(
        {"name": a.spare_schema()}, body={"axes": [{"name": "metric", "labels": ["a", "b"]}]}, expect=201
    ),
    ("delete", "/api/v1/schemas/{name}"): lambda a: Request({"name": a.spare_schema()}),
    ("post", "/api/v1/tensors"): lambda a: Request(body={"entity_id": a.mine(), "schema": "vitals"}),
    ("get", "/api/v1/tensor/{tensor_id}"): lambda a: Request({"tensor_id": a.world["TPA"]}, query={"from": 0}),
    ("get", "/api/v1/tensors/{tensor_id}"): lambda a: Request({"tensor_id": a.world["TPA"]}, query={"time": 0}),
    ("patch", "/api/v1/tensors/{tensor_id}"): lambda a: Request(
        {"tensor_id": a.world["TPA"]}, body={"schema_version": 1}
    ),
    ("delete", "/api/v1/tensors/{tensor_id}"): lambda a: Request({"tensor_id": a.my_tensor()}),
    ("post", "/api/v1/tensors/{tensor_id}/values"): lambda a: Request(
        {"tensor_id": a.world["TPA"]}, body={"values": [{"time": 1, "metric": "temperature", "value": 37.2}]}
    ),
    ("delete", "/api/v1/tensors/{tensor_id}/values"): lambda a: Request(
        {"tensor_id": a.world["TPA"]}, body={"values": [{"time": 0, "metric": "heart_rate"}]}
    ),
    ("get", "/api/v1/tensors/{tensor_id}/history"): lambda a: Request({"tensor_id": a.world["TPA"]}),
    ("get", "/api/v1/tensors/{tensor_id}/meta"): lambda a: Request({"tensor_id": a.world["TPA"]}),
    ("post", "/api/v1/relations"): lambda a: Request(
        # a granting type for the granting roles (DUST_GRANTING_ROLES: admin here), for the others one granting none
        body={"source_id": a.world["A"], "target_id": a.mine(), "type": GRANTING_TYPE.get(a.role, "consults")}
    ),
    ("get", "/api/v1/relations"): lambda a: Request(query={"entity_id": a.world["A"]}),
    ("get", "/api/v1/relations/{relation_id}"): lambda a: Request({"relation_id": a.world["A-consults"]}),
    ("patch", "/api/v1/relations/{relation_id}"): lambda a: Request(
        {"relation_id": a.world["A-consults"]}, body={"weight": 0.25}
    ),
    ("delete", "/api/v1/relations/{relation_id}"): lambda a: Request({"relation_id": a.my_relation()}),
    ("get", "/api/v1/query_master"): lambda a: Request(query={"entity_id": a.world["A"], "depth": 2}),
    ("get", "/api/v1/query_master/tensor"): lambda a: Request(query={"type": "treats"}),
    ("post", "/api/v1/relations/{relation_id}/interactions"): lambda a: Request(
        {"relation_id": a.world["A-consults"]}, body={"amount": 0.5}
    ),
    ("get", "/api/v1/domains/supply-chain/bottlenecks"): lambda a: Request(query={"limit": 5}),
    ("post", "/api/v1/domains/supply-chain/what-if"): lambda a: Request(body={"remove": [a.world["A"]]}),
    ("post", "/api/v1/ask"): lambda a: Request(body={"question": "how many patients are there?"}, expect=200),
    ("get", "/api/v1/weight-policies"): lambda a: Request(),
    ("get", "/api/v1/weight-policies/{type}"): lambda a: Request({"type": _weighted(a)}),
    ("put", "/api/v1/weight-policies/{type}"): lambda a: Request(
        {"type": "consults"}, body={"reinforce": 0.5, "half_life": "P30D", "cap": 5}
    ),
    ("delete", "/api/v1/weight-policies/{type}"): lambda a: Request({"type": _weighted(a)}),
    ("get", "/api/v1/insights/aggregate"): lambda a: Request(
        query={"schema": "vitals", "label": "heart_rate", "agg": "p95", "bucket": "week"}
    ),
    ("get", "/api/v1/tensors/{tensor_id}/analysis"): lambda a: Request(
        {"tensor_id": _analysable(a)}, query={"label": "heart_rate", "horizon": 3}
    ),
    ("get", "/api/v1/anomalies"): lambda a: Request(query={"entity_id": a.world["PA"], "limit": 5}),
    ("get", "/api/v1/anomalies/rules"): lambda a: Request(),
    ("put", "/api/v1/anomalies/rules/{schema}/{label}"): lambda a: Request(
        {"schema": "vitals", "label": "temperature"}, body={"detector": "mad", "threshold": 0.9}
    ),
    ("delete", "/api/v1/anomalies/rules/{schema}/{label}"): lambda a: Request(
        {"schema": "vitals", "label": _ruled(a, "heart_rate")}
    ),
    ("post", "/api/v1/anomalies/scan"): lambda a: Request(
        body={"tensor_id": a.world["TPA"], "label": _ruled(a, "heart_rate")}, expect=200
    ),
    ("get", "/api/v1/jobs/{job_id}"): lambda a: Request({"job_id": _my_job(a)}),
    ("get", "/api/v1/jobs"): lambda a: Request(query={"state": "queued", "limit": 5}),
    ("get", "/metrics"): lambda a: Request(),
    ("get", "/api/v1/metrics"): lambda a: Request(),
    ("get", "/api/v1/alerts"): lambda a: Request(query={"entity_id": a.world["PA"], "state": "open", "limit": 5}),
    ("get", "/api/v1/alerts/{alert_id}"): lambda a: Request({"alert_id": _alert(a)}),
    ("patch", "/api/v1/alerts/{alert_id}"): lambda a: Request({"alert_id": _alert(a)}, body={"state": "acknowledged"}),
    ("get", "/api/v1/webhooks/deliveries"): lambda a: Request(query={"state": "pending", "limit": 5}),
    ("post", "/api/v1/webhooks/deliveries/{delivery_id}/retry"): lambda a: Request({"delivery_id": _delivery(a)}),
    ("get", "/api/v1/triggers"): lambda a: Request(),
    ("post", "/api/v1/triggers"): lambda a: Request(
        body={
            "name": _fresh("rule"),
            "when": {"schema": "vitals", "label": "heart_rate", "op": ">", "value": 200},
            "then": [{"action": "alert", "follow": {"type": "treats", "direction": "in"}}],
        }
    ),
    ("get", "/api/v1/triggers/{trigger_id}"): lambda a: Request({"trigger_id": _trigger(a)}),
    ("patch", "/api/v1/triggers/{trigger_id}"): lambda a: Request({"trigger_id": _trigger(a)}, body={"enabled": False}),
    ("delete", "/api/v1/triggers/{trigger_id}"): lambda a: Request({"trigger_id": _trigger(a)}),
    ("get", "/api/v1/triggers/{trigger_id}/versions"): lambda a: Request({"trigger_id": _trigger(a)}),
    ("get", "/api/v1/triggers/{trigger_id}/firings"): lambda a: Request(
        {"trigger_id": _trigger(a)}, query={"limit": 5}
    ),
    ("post", "/api/v1/models"): lambda a: Request(body=_model_request(a)),
    ("get", "/api/v1/models"): lambda a: Request(query={"limit": 5}),
    ("get", "/api/v1/models/{model_id}"): lambda a: Request({"model_id": _trained(a)}),
    ("post", "/api/v1/models/{model_id}/predict"): lambda a: Request(
        {"model_id": _trained(a)}, body={"entity_ids": [a.world["PA"]]}
    ),
}


def guarded(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """The operations that need a signed-in user, signing out last and deletes just before (each would spoil
    the calls after it)."""
    found = [(m, p, op) for m, p, op in operations(app) if not is_public(m, p)]
    return sorted(found, key=lambda o: (o[1].endswith("/logout"), o[0] == "delete"))


def test_every_operation_has_a_request(app: FastAPI) -> None:
    documented = {(m, p) for m, p, _ in guarded(app)}
    assert sorted(documented - REQUESTS.keys()) == [], "add a valid request for each new route to REQUESTS"
    assert sorted(REQUESTS.keys() - documented) == [], "routes in REQUESTS that the document no longer has"


def answered(document: dict[str, Any], op: dict[str, Any], response: Any) -> str | None:
    """What is wrong with ``response`` against what ``op`` documents for its status, or None."""
    said = op["responses"].get(str(response.status_code))
    if said is None:
        return f"{response.status_code} is not documented"
    content = said.get("content", {})
    if not content:
        return None if not response.content else f"a body where none is documented: {response.text[:200]}"
    media = response.headers.get("content-type", "").split(";")[0]
    if media not in content:
        return f"content type {media!r}, not one of {sorted(content)}"
    if not media.endswith("json") and "schema" not in content[media]:
        return None  # text documented by its media type alone (GET /metrics: Prometheus's format)
    schema = content[media].get("schema", {})
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"
    validator = jsonschema_rs.validator_for(
        {"components": document["components"], "allOf": [schema]}, validate_formats=True
    )
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    return f"body off its schema: {errors[:3]}" if errors else None


@pytest.mark.parametrize("role", list(Role))
def test_each_role_gets_exactly_its_permissions(
    role: Role, app: FastAPI, world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    """Each allowed call answers its documented success status with a body matching the documented schema; each
    other call is a 403. The clinician, member and viewer are doctor A: the ids are ones they may act on."""
    acting = Acting(role, login_as(role.value, entity_id=world["A"]), client, world)
    client.put(f"{API}/kinds/device", json={"public": ["name"]})
    document = app.openapi()
    wrong = []
    for method, path, op in guarded(app):
        if (method, path) not in REQUESTS:
            wrong.append(f"{method.upper()} {path}: no entry in REQUESTS")
            continue
        request = REQUESTS[(method, path)](acting)
        target = path.format(**request.path)
        response = acting.me.request(method.upper(), target, params=request.query, json=request.body)
        if Permission(op["x-permission"]) in GRANTS[role]:
            successes = sorted(int(s) for s in op["responses"] if s.startswith("2"))
            expected = request.expect or successes[0]
            assert request.expect in (None, *successes) and (request.expect or len(successes) == 1), (method, path)
        else:
            expected = 403
        problem = answered(document, op, response)
        if response.status_code != expected or problem:
            wrong.append(
                f"{method.upper()} {target}: {response.status_code}, not {expected}: {problem or response.text[:200]}"
            )
    assert not wrong, "\n".join([f"as {role.value}:", *wrong])


ID_PARAMS = {"entity_id", "tensor_id", "relation_id"}
VALID_BODIES = {
    ("patch", "/api/v1/entities/{entity_id}"): {"name": "renamed"},
    ("patch", "/api/v1/patients/{entity_id}"): {"name": "renamed"},
    ("patch", "/api/v1/relations/{relation_id}"): {"weight": 0.1},
    ("patch", "/api/v1/tensors/{tensor_id}"): {"schema_version": 1},
    ("post", "/api/v1/tensors/{tensor_id}/values"): {"values": [{"time": 1, "metric": "heart_rate", "value": 1}]},
    ("delete", "/api/v1/tensors/{tensor_id}/values"): {"values": [{"time": 0, "metric": "heart_rate"}]},
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
    relations = alice.get(f"{API}/relations").json()["items"]
    assert {r["id"] for r in relations} == {world["A-treats"], world["A-works"], world["A-consults"]}
    graph = alice.get(f"{API}/query_master", params={"entity_id": world["A"], "depth": 3}).json()
    assert {n["id"] for n in graph["nodes"]} == mine
    coo = alice.get(f"{API}/query_master/tensor").json()
    assert set(coo["entity_ids"]) <= mine and len(coo["values"]) == 3
    assert alice.get(f"{API}/entities/{world['A']}/tensors").status_code == 200


@pytest.mark.parametrize("query", [pytest.param("Pat B", id="name"), pytest.param("MRN-B", id="external id")])
def test_search_finds_no_patient_out_of_reach(world: World, login_as: Callable[..., TestClient], query: str) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    found = {p["id"] for p in alice.get(f"{API}/patients", params={"q": query}).json()["items"]}
    assert world["PB"] not in found


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
    assert analyst.get(f"{API}/tensors/{world['TPA']}/meta").json()["schema_version"] == 2  # metadata, not values
