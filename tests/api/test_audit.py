"""The audit trail: reads and writes of patient data are recorded, searchable by admins, and not editable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ONE_BACKEND

API = "/api/v1"


def entries(client: TestClient, **params: str) -> list[dict]:
    response = client.get(f"{API}/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_reads_and_writes_of_patient_data_are_recorded(client: TestClient, login_as: Callable[..., TestClient]) -> None:
    doctor = client.post(f"{API}/entities", json={"kind": "doctor", "name": "Dr A"}).json()
    alice = login_as("clinician", entity_id=doctor["id"], username="alice")
    patient = alice.post(f"{API}/patients", json={"name": "Jane Doe"}).json()
    read = alice.get(f"{API}/patients/{patient['id']}")
    alice.patch(f"{API}/patients/{patient['id']}", json={"attributes": {"ward": "3"}})
    trail = entries(client, entity_id=patient["id"], user="alice")
    assert [e["action"] for e in trail] == ["update", "read", "create"]  # newest first
    reading = trail[1]
    assert reading["resource"] == "entity" and reading["entity_id"] == patient["id"]
    assert reading["request_id"] == read.headers["x-request-id"]
    assert reading["method"] == "GET" and reading["path"] == f"/api/v1/patients/{patient['id']}"
    assert reading["role"] == "clinician" and reading["client"]


def test_tensor_and_relation_access_is_recorded(client: TestClient) -> None:
    client.post(f"{API}/schemas", json={"name": "vitals", "axes": [{"name": "metric", "labels": ["hr"]}]})
    jane = client.post(f"{API}/patients", json={"name": "Jane"}).json()
    doc = client.post(f"{API}/entities", json={"kind": "doctor", "name": "Dr"}).json()
    tensor = client.post(f"{API}/tensors", json={"entity_id": jane["id"], "schema": "vitals"}).json()
    client.post(f"{API}/tensors/{tensor['id']}/values", json={"values": [{"time": 0, "metric": "hr", "value": 60}]})
    client.get(f"{API}/tensor/{tensor['id']}")
    client.post(f"{API}/relations", json={"source_id": doc["id"], "target_id": jane["id"], "type": "treats"})
    seen = {(e["action"], e["resource"]) for e in entries(client, entity_id=jane["id"])}
    assert {("create", "tensor"), ("update", "tensor"), ("read", "tensor"), ("create", "relation")} <= seen


def test_lists_record_each_entity_returned(client: TestClient) -> None:
    ids = [client.post(f"{API}/patients", json={"name": f"P{i}"}).json()["id"] for i in range(3)]
    client.get(f"{API}/patients")
    for entity_id in ids:
        assert "read" in [e["action"] for e in entries(client, entity_id=entity_id)]


def test_time_filters_and_paging(client: TestClient) -> None:
    jane = client.post(f"{API}/patients", json={"name": "Jane"}).json()
    for _ in range(3):
        client.get(f"{API}/patients/{jane['id']}")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert entries(client, entity_id=jane["id"], **{"from": later}) == []
    first = client.get(f"{API}/audit", params={"entity_id": jane["id"], "limit": 2}).json()
    rest = client.get(f"{API}/audit", params={"entity_id": jane["id"], "cursor": first["next_cursor"]}).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 2 and rest["next_cursor"] is None


def test_only_admins_read_it(login_as: Callable[..., TestClient]) -> None:
    assert login_as("clinician").get(f"{API}/audit").status_code == 403
    assert login_as("analyst").get(f"{API}/audit").status_code == 403


@ONE_BACKEND  # no route takes these methods: refused before any database work
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_nobody_edits_it(client: TestClient, method: str) -> None:
    assert client.request(method, f"{API}/audit").status_code == 405


def test_user_management_is_recorded(client: TestClient) -> None:
    user = client.post(f"{API}/users", json={"username": "bob", "password": "long enough pw", "role": "viewer"}).json()
    client.patch(f"{API}/users/{user['id']}", json={"role": "analyst"})
    mine = [e for e in entries(client, user="admin") if e["resource"] == "user"]
    assert [(e["action"], e["resource_id"]) for e in mine] == [("update", user["id"]), ("create", user["id"])]


def test_idempotent_replays_are_recorded(client: TestClient, login_as: Callable[..., TestClient]) -> None:
    alice = login_as("clinician", username="alice")
    body = {"name": "Retry Rita"}
    created = alice.post(f"{API}/patients", json=body, headers={"Idempotency-Key": "rita-1"})
    again = {"Idempotency-Key": "rita-1", "X-Request-ID": "retry-1"}
    replayed = alice.post(f"{API}/patients", json=body, headers=again)
    assert replayed.headers["idempotent-replayed"] == "true"
    replays = [e for e in entries(client, user="alice") if e["resource"] == "replay"]
    assert len(replays) == 1
    replay = replays[0]
    assert replay["action"] == "read" and replay["resource_id"] == created.json()["id"]
    assert replay["request_id"] == "retry-1" == replayed.headers["x-request-id"]
    assert replay["role"] == "clinician" and replay["user_id"] and replay["client"]
    assert replay["method"] == "POST" and replay["path"] == "/api/v1/patients"
    # found with the patient's trail, by the id of what was replayed
    assert "replay" in {e["resource"] for e in entries(client, entity_id=created.json()["id"])}


@pytest.mark.parametrize("bound", ["from", "to"])
def test_a_time_that_leaves_the_years_in_utc_is_422(client: TestClient, bound: str) -> None:
    """Found by the fuzzer: 0001-01-01T00:00:00+00:01 is before year 1 in UTC (it answered 500)."""
    answer = client.get("/api/v1/audit", params={bound: "0001-01-01T00:00:00+00:01"})
    assert answer.status_code == 422 and "years 1..9999" in answer.json()["detail"]
