"""/weight-policies and /relations/{id}/interactions over HTTP, on every backend, and every reader of weights
showing the decayed weight at the time asked."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from dust.storage.models import Relation, RelationWeight
from tests.api.conftest import API, ONE_BACKEND, World, make

PROBLEM = "application/problem+json"
DAY = timedelta(days=1)
POLICY = {"reinforce": 1.0, "half_life": "P1D", "cap": 5.0, "floor": 0.25}


def formula(w0: float, t0: datetime, t: datetime, half_life: timedelta = DAY, floor: float = 0.0) -> float:
    return max(floor, w0 * 0.5 ** (max((t - t0).total_seconds(), 0) / half_life.total_seconds()))


def put_policy(client: TestClient, type_: str, **body: Any) -> dict[str, Any]:
    response = client.put(f"{API}/weight-policies/{type_}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return response.json()["detail"]


def relate(client: TestClient, source: str, target: str, type_: str, weight: float) -> str:
    return make(client, "/relations", {"source_id": source, "target_id": target, "type": type_, "weight": weight})


def backdate(app: FastAPI, relation_id: str, by: timedelta) -> datetime:
    """Move the relation's recorded history ``by`` into the past (as if made then); its last change then."""
    with app.state.sessions() as session, session.begin():
        query = select(RelationWeight).where(RelationWeight.relation_id == uuid.UUID(relation_id))
        rows = list(session.scalars(query))
        for row in rows:
            row.changed_at -= by
        relation = session.get(Relation, uuid.UUID(relation_id))
        assert relation is not None
        relation.created_at -= by
        return max(row.changed_at for row in rows)


def read(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(f"{API}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def coo(tensor: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    kinds, sources, targets = tensor["indices"]
    ids, types = tensor["entity_ids"], tensor["types"]
    return {(types[k], ids[s], ids[t]): v for k, s, t, v in zip(kinds, sources, targets, tensor["values"], strict=True)}


# --- policies -------------------------------------------------------------------------------------------------


def test_a_policy_is_put_read_listed_and_deleted(client: TestClient) -> None:
    made = put_policy(client, "treats", **POLICY)
    assert {k: made[k] for k in ("type", "reinforce", "half_life", "half_life_seconds", "cap", "floor")} == {
        "type": "treats",
        **POLICY,
        "half_life_seconds": 86_400.0,
    }
    assert read(client, "/weight-policies/treats") == made
    replaced = put_policy(client, "treats", half_life="PT36H")  # PUT replaces: the rest take their defaults
    assert (replaced["half_life"], replaced["reinforce"], replaced["cap"], replaced["floor"]) == ("P1DT12H", 0, None, 0)
    put_policy(client, "knows")
    assert [p["type"] for p in read(client, "/weight-policies")] == ["knows", "treats"]
    assert client.delete(f"{API}/weight-policies/treats").status_code == 204
    assert "no weight policy" in problem(client.get(f"{API}/weight-policies/treats"), 404)
    problem(client.delete(f"{API}/weight-policies/treats"), 404)


def test_policy_changes_are_audited(client: TestClient) -> None:
    put_policy(client, "treats", **POLICY)
    put_policy(client, "treats", half_life="P2D")
    client.delete(f"{API}/weight-policies/treats")
    trail = read(client, "/audit", user="admin")["items"]
    changes = [(e["action"], e["resource_id"]) for e in trail if e["resource"] == "weight_policy"]
    assert changes == [("delete", "treats"), ("update", "treats"), ("create", "treats")]  # newest first


@ONE_BACKEND
@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"half_life": "-P1D"}, "half_life must be longer than zero"),
        ({"half_life": -86400}, "ISO 8601 duration"),
        ({"half_life": "P1M"}, "in days"),
        ({"half_life": "soon"}, "ISO 8601 duration"),
        ({"cap": 1, "floor": 2}, "cap 1.0 is below floor 2.0"),
        ({"half_life": "P1D", "decay": "fast"}, "decay"),
        ({"reinforce": "1"}, "reinforce: must be a number"),
        ({"cap": None, "floor": None}, "floor"),
    ],
    ids=repr,
)
def test_bad_policies_are_422_saying_what_is_allowed(client: TestClient, body: dict[str, Any], says: str) -> None:
    assert says in problem(client.put(f"{API}/weight-policies/knows", json=body), 422)
    assert read(client, "/weight-policies") == []


@ONE_BACKEND
def test_a_bad_type_name_is_422(client: TestClient) -> None:
    problem(client.put(f"{API}/weight-policies/Knows", json={}), 422)


@pytest.mark.parametrize("role", ["clinician", "member", "analyst", "viewer"])
def test_only_admins_change_policies_and_everyone_reads_them(
    client: TestClient, login_as: Callable[..., TestClient], role: str
) -> None:
    put_policy(client, "treats", **POLICY)
    other = login_as(role)
    problem(other.put(f"{API}/weight-policies/treats", json={"reinforce": 9}), 403)
    problem(other.put(f"{API}/weight-policies/knows", json={}), 403)
    problem(other.delete(f"{API}/weight-policies/treats"), 403)
    assert read(other, "/weight-policies/treats")["reinforce"] == 1.0
    assert [p["type"] for p in read(other, "/weight-policies")] == ["treats"]


# --- interactions ---------------------------------------------------------------------------------------------


def test_an_interaction_reinforces_the_decayed_weight_up_to_the_cap(app: FastAPI, client: TestClient) -> None:
    a, b = (make(client, "/entities", {"kind": "person", "name": n}) for n in "ab")
    put_policy(client, "visits", **POLICY)
    rid = relate(client, a, b, "visits", 4.0)
    t0 = backdate(app, rid, 2 * DAY)
    at = t0 + DAY  # 2.0 then
    response = client.post(f"{API}/relations/{rid}/interactions", json={"at": at.isoformat()})
    assert response.status_code == 200, response.text
    after = response.json()
    last = after["history"][-1]
    assert last["weight"] == 3.0 and datetime.fromisoformat(last["changed_at"]) == at
    assert after["weight"] == pytest.approx(1.5, rel=1e-4)  # shown now: a day after the interaction
    now = client.post(f"{API}/relations/{rid}/interactions")  # no body: now, by reinforce
    assert now.status_code == 200, now.text
    assert now.json()["weight"] == pytest.approx(2.5, rel=1e-4) == now.json()["history"][-1]["weight"]
    capped = client.post(f"{API}/relations/{rid}/interactions", json={"amount": 10})
    assert capped.json()["weight"] == 5.0
    assert [h["weight"] for h in capped.json()["history"]] == pytest.approx([4.0, 3.0, 2.5, 5.0], rel=1e-4)


def test_interactions_refuse_what_cannot_be_recorded(app: FastAPI, client: TestClient) -> None:
    a, b = (make(client, "/entities", {"kind": "person", "name": n}) for n in "ab")
    rid = relate(client, a, b, "knows", 1.0)
    path = f"{API}/relations/{rid}/interactions"
    assert "PUT /weight-policies/knows" in problem(client.post(path, json={}), 422)
    put_policy(client, "knows", reinforce=1.0)
    future = (datetime.now(UTC) + DAY).isoformat()
    assert "future" in problem(client.post(path, json={"at": future}), 422)
    past = (datetime.now(UTC) - DAY).isoformat()
    assert "time order" in problem(client.post(path, json={"at": past}), 409)
    problem(client.post(path, json={"times": 2}), 422)
    problem(client.post(path, json={"amount": "1"}), 422)
    problem(client.post(f"{API}/relations/{uuid.uuid4()}/interactions", json={}), 404)
    assert [h["weight"] for h in read(client, f"/relations/{rid}")["history"]] == [1.0]


def test_interactions_follow_the_access_rules_of_patch(
    client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    put_policy(client, "consults", reinforce=0.5)
    put_policy(client, "treats", reinforce=0.5)
    alice = login_as("clinician", entity_id=world["A"])
    assert alice.post(f"{API}/relations/{world['A-consults']}/interactions").json()["weight"] == 1.5
    problem(alice.post(f"{API}/relations/{world['B-consults']}/interactions"), 404)  # not hers to see
    assert "DUST_GRANTING_ROLES" in problem(alice.post(f"{API}/relations/{world['A-treats']}/interactions"), 403)
    problem(login_as("viewer").post(f"{API}/relations/{world['A-consults']}/interactions"), 403)
    assert client.post(f"{API}/relations/{world['A-treats']}/interactions").json()["weight"] == 1.5  # admins may


# --- readers --------------------------------------------------------------------------------------------------


def test_every_reader_shows_the_weight_decayed_to_the_time_asked(app: FastAPI, client: TestClient) -> None:
    a, b, c = (make(client, "/entities", {"kind": "person", "name": n}) for n in "abc")
    put_policy(client, "knows", half_life="P1D")
    old = relate(client, a, b, "knows", 8.0)
    plain = relate(client, a, c, "likes", 8.0)
    t0 = backdate(app, old, 3 * DAY)
    backdate(app, plain, 3 * DAY)
    before = datetime.now(UTC)
    got = read(client, f"/relations/{old}")
    listed = {r["id"]: r["weight"] for r in read(client, "/relations", entity_id=a)["items"]}
    edges = {e["id"]: e["weight"] for e in read(client, "/query_master", entity_id=a)["edges"]}
    tensor = coo(read(client, "/query_master/tensor"))
    after = datetime.now(UTC)
    low, high = formula(8.0, t0, after), formula(8.0, t0, before)
    for weight in (got["weight"], listed[old], edges[old], tensor[("knows", a, b)]):
        assert low <= weight <= high and weight == pytest.approx(1.0, rel=1e-4)
    assert [h["weight"] for h in got["history"]] == [8.0]  # as recorded
    assert listed[plain] == edges[plain] == tensor[("likes", a, c)] == 8.0  # no policy: as recorded
    then = (t0 + DAY).isoformat()
    assert read(client, "/query_master", entity_id=a, at=then, type="knows")["edges"][0]["weight"] == 4.0
    assert coo(read(client, "/query_master/tensor", at=then))[("knows", a, b)] == 4.0


def test_min_weight_filters_on_the_decayed_weight(app: FastAPI, client: TestClient) -> None:
    a, b, c = (make(client, "/entities", {"kind": "person", "name": n}) for n in "abc")
    put_policy(client, "knows", half_life="P1D")
    backdate(app, relate(client, a, b, "knows", 4.0), 2 * DAY)  # 1.0 now
    relate(client, a, c, "knows", 0.8)  # 0.8 now

    def reached(**params: Any) -> set[str]:
        return {n["id"] for n in read(client, "/query_master", entity_id=a, **params)["nodes"]}

    assert reached(min_weight=0.9) == {a, b}
    assert reached(min_weight=1.1) == {a}  # 4.0 as recorded
    assert reached(min_weight=0.5) == {a, b, c}
