"""/entities and /patients over HTTP, on every backend."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ONE_BACKEND

API = "/api/v1"


def create(client: TestClient, **body: object) -> dict:
    response = client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane Doe", **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_create_gives_a_uuid_and_same_names_stay_distinct(client: TestClient) -> None:
    first, second = create(client), create(client)
    assert uuid.UUID(first["id"]) != uuid.UUID(second["id"])
    assert first["name"] == second["name"] == "Jane Doe"
    assert client.get(f"{API}/entities/{first['id']}").json()["id"] == first["id"]


def test_external_id_is_unique_per_kind(client: TestClient) -> None:
    create(client, external_id="MRN-1")
    clash = client.post(f"{API}/entities", json={"kind": "patient", "name": "Other", "external_id": "MRN-1"})
    assert clash.status_code == 409
    assert clash.headers["content-type"] == "application/problem+json"
    assert "MRN-1" in clash.json()["detail"]
    other_kind = client.post(f"{API}/entities", json={"kind": "doctor", "name": "Dr X", "external_id": "MRN-1"})
    assert other_kind.status_code == 201


def test_patch_merges_attributes_and_checks_external_id(client: TestClient) -> None:
    jane = create(client, attributes={"gender": "F", "city": "Oslo"})
    create(client, external_id="MRN-2")
    patched = client.patch(f"{API}/entities/{jane['id']}", json={"attributes": {"city": None, "blood": "A+"}})
    assert patched.status_code == 200
    assert patched.json()["attributes"] == {"gender": "F", "blood": "A+"}
    clash = client.patch(f"{API}/entities/{jane['id']}", json={"external_id": "MRN-2"})
    assert clash.status_code == 409
    assert client.get(f"{API}/entities/{jane['id']}").json()["external_id"] is None


def test_delete_answers_204_then_404(client: TestClient) -> None:
    jane = create(client)
    assert client.delete(f"{API}/entities/{jane['id']}").status_code == 204
    gone = client.get(f"{API}/entities/{jane['id']}")
    assert gone.status_code == 404
    assert jane["id"] in gone.json()["detail"]
    assert client.delete(f"{API}/entities/{jane['id']}").status_code == 404


def test_cursor_pagination_walks_every_entity_once(client: TestClient) -> None:
    made = {create(client, name=f"Patient {i}")["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/entities", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(made) and set(seen) == made


def test_search_tolerates_a_typo_and_matches_external_ids(client: TestClient) -> None:
    jane = create(client, name="Jane Doe", external_id="MRN-77")
    create(client, name="Robert Smith")
    create(client, name="Marcus Aurelius")
    found = client.get(f"{API}/entities", params={"q": "jnae doe"}).json()["items"]
    assert [e["id"] for e in found] == [jane["id"]]
    by_mrn = client.get(f"{API}/entities", params={"q": "mrn-77"}).json()["items"]
    assert by_mrn[0]["id"] == jane["id"]
    assert client.get(f"{API}/entities", params={"q": "zzzzqqq"}).json()["items"] == []


def test_kind_and_attribute_filters(client: TestClient) -> None:
    create(client, attributes={"gender": "F", "age": 40})
    create(client, attributes={"gender": "M", "age": 51})
    client.post(f"{API}/entities", json={"kind": "doctor", "name": "Dr Who", "attributes": {"gender": "F"}})
    women = client.get(f"{API}/entities", params={"attr.gender": "F"}).json()["items"]
    assert len(women) == 2
    patients = client.get(f"{API}/entities", params={"attr.gender": "F", "kind": "patient"}).json()["items"]
    assert len(patients) == 1
    assert len(client.get(f"{API}/entities", params={"attr.age": "51"}).json()["items"]) == 1


def test_idempotency_key_returns_the_first_result(client: TestClient) -> None:
    body = {"kind": "patient", "name": "Retry Rita"}
    headers = {"Idempotency-Key": "create-rita-1"}
    first = client.post(f"{API}/entities", json=body, headers=headers)
    again = client.post(f"{API}/entities", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(client.get(f"{API}/entities", params={"q": "Retry Rita"}).json()["items"]) == 1
    other = client.post(f"{API}/entities", json={**body, "name": "Someone else"}, headers=headers)
    assert other.status_code == 422


def test_failed_request_does_not_burn_the_idempotency_key(client: TestClient) -> None:
    headers = {"Idempotency-Key": "k-2"}
    bad = client.post(f"{API}/entities", json={"kind": "Not A Kind", "name": "x"}, headers=headers)
    assert bad.status_code == 422
    good = client.post(f"{API}/entities", json={"kind": "not-a-kind", "name": "x"}, headers={"Idempotency-Key": "k-2"})
    assert good.status_code == 201


def test_patients_route_is_kind_patient(client: TestClient) -> None:
    patient = client.post(f"{API}/patients", json={"name": "Jane Doe"}).json()
    assert patient["kind"] == "patient"
    doctor = client.post(f"{API}/entities", json={"kind": "doctor", "name": "Dr No"}).json()
    assert client.get(f"{API}/patients/{doctor['id']}").status_code == 404
    assert [p["id"] for p in client.get(f"{API}/patients").json()["items"]] == [patient["id"]]
    assert client.post(f"{API}/patients", json={"name": "X", "kind": "doctor"}).status_code == 422
    assert client.patch(f"{API}/patients/{patient['id']}", json={"name": "Jane D."}).json()["name"] == "Jane D."
    assert client.delete(f"{API}/patients/{patient['id']}").status_code == 204


@ONE_BACKEND
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"kind": "patient"}, id="no name"),
        pytest.param({"kind": "Patient!", "name": "x"}, id="kind pattern"),
        pytest.param({"kind": "patient", "name": ""}, id="blank"),
        pytest.param({"kind": "patient", "name": "x\u0007y"}, id="control character"),
        pytest.param({"kind": "patient", "name": "x" * 513}, id="too long"),
        pytest.param({"kind": "patient", "name": "x", "surprise": 1}, id="unknown field"),
        pytest.param({"kind": "patient", "name": 5}, id="wrong type"),
    ],
)
def test_bad_input_is_a_clear_422_and_writes_nothing(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(f"{API}/entities", json=body)
    assert response.status_code == 422, body
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["errors"][0]["loc"][0] == "body"
    assert client.get(f"{API}/entities").json()["items"] == []


@ONE_BACKEND
def test_a_nul_in_a_name_is_a_422_that_says_so(client: TestClient) -> None:
    nul = client.post(f"{API}/entities", json={"kind": "patient", "name": "x\u0000y"})
    assert nul.status_code == 422 and "NUL" in nul.json()["detail"]
    assert client.get(f"{API}/entities").json()["items"] == []


def test_malformed_ids_and_cursors_are_4xx(client: TestClient) -> None:
    assert client.get(f"{API}/entities/not-a-uuid").status_code == 422
    assert client.get(f"{API}/entities/{uuid.uuid4()}").status_code == 404
    bad_cursor = client.get(f"{API}/entities", params={"cursor": "garbage"})
    assert bad_cursor.status_code == 422
    assert "cursor" in bad_cursor.json()["detail"]
    assert client.get(f"{API}/entities", params={"limit": 0}).status_code == 422


def test_idempotency_keys_are_per_user(client: TestClient, login_as) -> None:  # type: ignore[no-untyped-def]
    body = {"kind": "patient", "name": "Same Body"}
    headers = {"Idempotency-Key": "shared-key"}
    mine = client.post(f"{API}/entities", json=body, headers=headers).json()
    other = login_as("member").post(f"{API}/entities", json=body, headers=headers)
    assert other.status_code == 201 and other.json()["id"] != mine["id"]
    assert "idempotent-replayed" not in other.headers
