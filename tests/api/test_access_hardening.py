"""What an outside review broke in the access policy, kept broken-proof: analysts recovering sensitive fields,
clinicians widening their own reach or removing others', kind policies that dropped the defaults.

The world of ``test_access.py``, plus the review's chain: doctor D works at hospital H3, H3 manages doctor E,
E treats patient PE. Clinician "dee" is D, so she reaches D and H3 — and, through H3, E — but not PE.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from dust.storage.models import Tensor
from dust.storage.repositories.tensors import _advisory_key
from tests.api.conftest import API, World, make


@pytest.fixture
def chain(world: World, client: TestClient) -> World:
    ids = dict(world.ids)
    ids["D"] = make(client, "/entities", {"kind": "doctor", "name": "Dr D"})
    ids["H3"] = make(client, "/entities", {"kind": "hospital", "name": "Third"})
    ids["E"] = make(client, "/entities", {"kind": "doctor", "name": "Dr E"})
    ids["PE"] = make(client, "/patients", {"name": "Pat E", "attributes": {"ssn": "555"}})
    for source, target, type_ in (("D", "H3", "works_at"), ("H3", "E", "manages"), ("E", "PE", "treats")):
        ids[f"{source}-{type_}"] = make(
            client, "/relations", {"source_id": ids[source], "target_id": ids[target], "type": type_}
        )
    return World(ids)


# --- analysts: no way back to a sensitive field ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/entities", "/patients", "/entities?kind=patient", "/entities?kind=hospital"])
@pytest.mark.parametrize("key", ["diagnosis", "birth_year", "ssn"])
def test_analysts_cannot_filter_by_a_field_sensitive_for_any_kind_the_query_may_match(
    path: str, key: str, world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    assert client.put(f"{API}/kinds/patient", json={"sensitive": ["diagnosis", "birth_year"]}).status_code == 200
    analyst = login_as("analyst")
    separator = "&" if "?" in path else "?"
    answer = analyst.get(f"{API}{path}{separator}attr.{key}=1")
    if path.endswith("kind=hospital") and key != "ssn":  # no hospital hides these: a plain (empty) filter
        assert answer.status_code == 200
        return
    assert answer.status_code == 403, answer.text
    assert f"'{key}' is sensitive" in answer.json()["detail"]


def test_a_kind_policy_adds_to_the_default_sensitive_fields(
    world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    assert client.put(f"{API}/kinds/patient", json={"sensitive": ["diagnosis"]}).status_code == 200
    client.patch(f"{API}/patients/{world['PA']}", json={"attributes": {"diagnosis": "HIV", "ward": "3"}})
    seen = login_as("analyst").get(f"{API}/patients/{world['PA']}").json()
    assert seen["attributes"] == {"ward": "3"}  # ssn (a default) and diagnosis (the policy) both hidden
    assert seen["name"] != "Pat A" and seen["external_id"] is None


def test_a_kind_policy_releases_a_default_only_by_naming_it_public(
    world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    analyst = login_as("analyst")
    assert analyst.get(f"{API}/entities/{world['H']}").json()["name"] != "General"
    policy = client.put(f"{API}/kinds/hospital", json={"public": ["name"]})
    assert policy.status_code == 200 and policy.json()["public"] == ["name"]
    assert analyst.get(f"{API}/entities/{world['H']}").json()["name"] == "General"
    both = client.put(f"{API}/kinds/hospital", json={"public": ["name"], "sensitive": ["name"]})
    assert both.status_code == 422 and "both sensitive and public" in both.json()["detail"]


def test_relation_attributes_are_de_identified_for_analysts(
    world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    client.put(f"{API}/kinds/patient", json={"sensitive": ["diagnosis"]})
    client.patch(f"{API}/relations/{world['A-treats']}", json={"attributes": {"diagnosis": "HIV", "since": 2020}})
    analyst = login_as("analyst")
    one = analyst.get(f"{API}/relations/{world['A-treats']}").json()
    listed = {r["id"]: r for r in analyst.get(f"{API}/relations").json()["items"]}
    assert one["attributes"] == listed[world["A-treats"]]["attributes"] == {"since": 2020}
    assert client.get(f"{API}/relations/{world['A-treats']}").json()["attributes"]["diagnosis"] == "HIV"


# --- clinicians: reach is granted, never taken ---------------------------------------------------------------


def test_a_clinician_cannot_widen_their_reach_with_a_granting_relation(
    chain: World, login_as: Callable[..., TestClient]
) -> None:
    dee = login_as("clinician", entity_id=chain["D"])
    assert dee.get(f"{API}/entities/{chain['E']}").status_code == 200  # D works_at H3 manages E
    assert dee.get(f"{API}/patients/{chain['PE']}").status_code == 404
    refused = dee.post(f"{API}/relations", json={"source_id": chain["D"], "target_id": chain["E"], "type": "treats"})
    assert refused.status_code == 403 and "DUST_GRANTING_ROLES" in refused.json()["detail"]
    assert dee.get(f"{API}/patients/{chain['PE']}").status_code == 404  # still out of reach


@pytest.mark.parametrize("type_", ["treats", "works_at", "member_of", "manages"])
def test_a_clinician_cannot_grant_others_access(
    type_: str, world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    before = client.get(f"{API}/relations", params={"type": type_}).json()["items"]
    answer = alice.post(f"{API}/relations", json={"source_id": world["H"], "target_id": world["PA"], "type": type_})
    assert answer.status_code == 403
    assert client.get(f"{API}/relations", params={"type": type_}).json()["items"] == before


@pytest.mark.parametrize(
    ("method", "body"), [("patch", {"weight": 0.5}), ("patch", {"valid_to": "2020-01-01T00:00:00Z"}), ("delete", None)]
)
def test_a_clinician_cannot_change_or_delete_a_granting_relation(
    method: str, body: dict[str, object] | None, world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    target = f"{API}/relations/{world['A-treats']}"
    before = client.get(target).json()
    assert alice.request(method.upper(), target, json=body).status_code == 403
    assert client.get(target).json() == before


def test_a_clinician_may_write_non_granting_relations(world: World, login_as: Callable[..., TestClient]) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    made = alice.post(f"{API}/relations", json={"source_id": world["PA"], "target_id": world["A"], "type": "refers"})
    assert made.status_code == 201
    relation = f"{API}/relations/{made.json()['id']}"
    assert alice.patch(relation, json={"weight": 0.3}).status_code == 200
    assert alice.delete(relation).status_code == 204


def test_admins_may_write_granting_relations(world: World, client: TestClient) -> None:
    body = {"source_id": world["A"], "target_id": world["PB"], "type": "treats"}
    assert client.post(f"{API}/relations", json=body).status_code == 201


@pytest.mark.parametrize(
    ("who", "victim", "why"),
    [
        ("A", "A", "is linked to"),  # her own doctor entity
        ("A", "H", "entities you cannot see"),  # the shared hospital: B works there too
        ("A", "PA", "decide who can see what"),  # her patient: deleting it removes a granting relation
        ("D", "E", "entities you cannot see"),  # a doctor she reaches, who treats a patient she does not
        ("D", "H3", "decide who can see what"),  # her hospital: every relation visible, but granting
    ],
)
def test_a_delete_never_removes_what_the_caller_may_not(
    who: str, victim: str, why: str, chain: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    signed_in = login_as("clinician", entity_id=chain[who])
    before = client.get(f"{API}/relations", params={"entity_id": chain[victim]}).json()["items"]
    answer = signed_in.delete(f"{API}/entities/{chain[victim]}")
    assert answer.status_code == 409 and why in answer.json()["detail"], answer.text
    assert client.get(f"{API}/entities/{chain[victim]}").status_code == 200
    assert client.get(f"{API}/relations", params={"entity_id": chain[victim]}).json()["items"] == before


def test_a_clinician_may_delete_what_only_they_can_reach(world: World, login_as: Callable[..., TestClient]) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    mine = make(alice, "/patients", {"name": "Walk-in"})
    make(alice, "/relations", {"source_id": world["A"], "target_id": mine, "type": "consults"})
    assert alice.delete(f"{API}/patients/{mine}").status_code == 204


def test_an_admin_may_not_delete_an_entity_a_user_is_linked_to(
    world: World, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    login_as("clinician", entity_id=world["B"], username="bob")
    answer = client.delete(f"{API}/entities/{world['B']}")
    assert answer.status_code == 409 and "user 'bob' is linked" in answer.json()["detail"]


# --- the audit trail sees every read of the graph --------------------------------------------------------


@pytest.mark.parametrize("path", ["/relations", "/query_master/tensor"])
def test_graph_reads_are_audited(path: str, world: World, client: TestClient) -> None:
    alice_sees = {world["A"], world["PA"], world["H"]}
    before = len(client.get(f"{API}/audit", params={"limit": 500}).json()["items"])
    assert client.get(f"{API}{path}").status_code == 200
    records = client.get(f"{API}/audit", params={"limit": 500}).json()["items"]
    new = records[: len(records) - before]
    assert new and {r["action"] for r in new} == {"read"}
    assert alice_sees <= {r["entity_id"] for r in new}


# --- locks: taken only on what the caller may see -----------------------------------------------------------


def test_a_write_to_a_tensor_the_caller_cannot_see_is_404_without_waiting_for_its_lock(
    app: FastAPI, database_url: str, world: World, login_as: Callable[..., TestClient]
) -> None:
    """Another transaction holds Pat B's tensor row and its advisory lock (as a write to it does); Dr A's write to
    it answers 404 at once: she can neither be held up by, nor hold, a row she may not see (nor learn from a wait
    that it exists)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite serialises writers instead")
    dr_a = login_as("clinician", entity_id=world["A"])
    body = {"values": [{"time": 1, "metric": "heart_rate", "value": 71}]}
    answers: list[int] = []
    with app.state.engine.connect() as holder, holder.begin():
        holder.execute(select(Tensor.id).where(Tensor.id == uuid.UUID(world["TPB"])).with_for_update())
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_key(uuid.UUID(world["TPB"]))})
        writer = threading.Thread(
            target=lambda: answers.append(dr_a.post(f"{API}/tensors/{world['TPB']}/values", json=body).status_code)
        )
        writer.start()
        writer.join(timeout=10)
        waited = writer.is_alive()
    writer.join()
    assert not waited, "the write waited for a lock on a tensor its caller cannot see"
    assert answers == [404]
    assert dr_a.post(f"{API}/tensors/{world['TPA']}/values", json=body).status_code == 200  # her own: written
