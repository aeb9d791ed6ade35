"""/relations over HTTP, on every backend: create, list, read with history, patch, delete."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.api.conftest import ONE_BACKEND

API = "/api/v1"
PROBLEM = "application/problem+json"


def entity(client: TestClient, name: str, kind: str = "patient") -> str:
    response = client.post(f"{API}/entities", json={"kind": kind, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def relate(client: TestClient, source: str, target: str, type_: str = "treats", **body: object) -> dict:
    response = client.post(f"{API}/relations", json={"source_id": source, "target_id": target, "type": type_, **body})
    assert response.status_code == 201, response.text
    return response.json()


def all_relations(client: TestClient, **params: object) -> list[dict]:
    response = client.get(f"{API}/relations", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_problem(response: Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == status
    return problem


@pytest.fixture
def pair(client: TestClient) -> tuple[str, str]:
    return entity(client, "Dr House", "doctor"), entity(client, "Jane Doe")


def test_create_defaults_and_read_back_with_history(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient)
    assert uuid.UUID(made["id"])
    assert (made["source_id"], made["target_id"], made["type"]) == (doctor, patient, "treats")
    assert made["weight"] == 1.0
    assert made["attributes"] == {}
    assert made["valid_from"] is None and made["valid_to"] is None
    read = client.get(f"{API}/relations/{made['id']}")
    assert read.status_code == 200
    body = read.json()
    assert {k: body[k] for k in made} == made
    assert body["history"] == [{"weight": 1.0, "changed_at": made["created_at"]}]


def test_create_keeps_weight_attributes_and_validity_in_utc(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(
        client,
        doctor,
        patient,
        weight=0.25,
        attributes={"since": "2024", "ward": {"floor": 3}},
        valid_from="2024-01-01T02:00:00+02:00",
        valid_to="2025-01-01T00:00:00",
    )
    assert made["weight"] == 0.25
    assert made["attributes"] == {"since": "2024", "ward": {"floor": 3}}
    read = client.get(f"{API}/relations/{made['id']}").json()
    for body in (made, read):
        assert body["valid_from"].endswith("Z") and body["valid_to"].endswith("Z")
        assert when(body["valid_from"]) == datetime(2024, 1, 1, tzinfo=UTC)
        assert when(body["valid_to"]) == datetime(2025, 1, 1, tzinfo=UTC)


def test_same_edge_twice_is_409_but_other_type_or_direction_is_new(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    first = relate(client, doctor, patient, weight=0.5)
    again = client.post(
        f"{API}/relations", json={"source_id": doctor, "target_id": patient, "type": "treats", "weight": 0.9}
    )
    problem = assert_problem(again, 409)
    assert "PATCH" in problem["detail"] and "treats" in problem["detail"]
    assert client.get(f"{API}/relations/{first['id']}").json()["weight"] == 0.5
    relate(client, doctor, patient, "visits")
    relate(client, patient, doctor, "treats")
    assert len(all_relations(client)) == 3


@pytest.mark.parametrize("end", ["source_id", "target_id"])
def test_unknown_entity_is_refused_naming_it(client: TestClient, pair: tuple[str, str], end: str) -> None:
    doctor, patient = pair
    ghost = str(uuid.uuid4())
    body = {"source_id": doctor, "target_id": patient, "type": "treats", end: ghost}
    problem = assert_problem(client.post(f"{API}/relations", json=body), 422)
    assert ghost in problem["detail"]
    assert all_relations(client) == []


@ONE_BACKEND
@pytest.mark.parametrize(
    "change",
    [
        {"type": "Treats"},
        {"type": "1treats"},
        {"type": "treats now"},
        {"type": "treats\n"},
        {"type": ""},
        {"type": "t" * 65},
        {"weight": "heavy"},
        {"weight": True},
        {"valid_from": "2025-01-01T00:00:00Z", "valid_to": "2025-01-01T00:00:00Z"},
        {"valid_from": "2025-06-01T00:00:00Z", "valid_to": "2025-01-01T00:00:00Z"},
        {"valid_from": "2025-01-01T01:00:00+02:00", "valid_to": "2024-12-31T22:30:00Z"},
        {"valid_from": "9999-12-31T23:00:00-05:00"},
        {"valid_to": "0001-01-01T00:30:00+01:00"},
        {"valid_from": "yesterday"},
        {"attributes": ["not", "an", "object"]},
        {"source_id": "not-a-uuid"},
        {"surprise": 1},
        {"target_id": ...},  # left out
    ],
    ids=repr,
)
def test_bad_input_is_a_clear_422_and_creates_nothing(
    client: TestClient, pair: tuple[str, str], change: dict[str, Any]
) -> None:
    doctor, patient = pair
    body = {"source_id": doctor, "target_id": patient, "type": "treats", **change}
    body = {k: v for k, v in body.items() if v is not ...}
    problem = assert_problem(client.post(f"{API}/relations", json=body), 422)
    assert problem["errors"][0]["loc"][0] == "body", body
    assert all_relations(client) == []


@pytest.mark.parametrize(
    "raw", ['"weight": NaN', '"weight": Infinity', '"weight": -Infinity', '"weight": 1e400', '"attributes": {"x": NaN}']
)
def test_non_finite_numbers_in_raw_json_are_422(client: TestClient, pair: tuple[str, str], raw: str) -> None:
    doctor, patient = pair
    text = f'{{"source_id": "{doctor}", "target_id": "{patient}", "type": "treats", {raw}}}'
    response = client.post(f"{API}/relations", content=text, headers={"content-type": "application/json"})
    problem = assert_problem(response, 422)
    assert "finite" in problem["detail"] or "JSON" in problem["detail"]
    assert all_relations(client) == []


def test_list_filters_by_entity_and_types(client: TestClient) -> None:
    doctor, jane, john = entity(client, "Dr A", "doctor"), entity(client, "Jane"), entity(client, "John")
    hospital = entity(client, "St Mary", "hospital")
    treats_jane = relate(client, doctor, jane)
    treats_john = relate(client, doctor, john)
    works = relate(client, doctor, hospital, "works_at")
    refers = relate(client, jane, john, "referred")

    def ids(**params: object) -> list[str]:
        return [r["id"] for r in all_relations(client, **params)]

    assert ids() == [treats_jane["id"], treats_john["id"], works["id"], refers["id"]]
    assert ids(entity_id=doctor) == [treats_jane["id"], treats_john["id"], works["id"]]
    assert ids(entity_id=john) == [treats_john["id"], refers["id"]]
    assert ids(type="treats") == [treats_jane["id"], treats_john["id"]]
    assert ids(type="works_at, referred") == [works["id"], refers["id"]]
    assert ids(entity_id=jane, type="referred,treats") == [treats_jane["id"], refers["id"]]
    assert ids(entity_id=hospital, type="treats") == []
    assert ids(entity_id=str(uuid.uuid4())) == []


def test_cursor_pagination_walks_every_relation_once(client: TestClient) -> None:
    doctor = entity(client, "Dr A", "doctor")
    made = {relate(client, doctor, entity(client, f"Patient {i}"))["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/relations", params=params).json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(made) and set(seen) == made


def test_malformed_ids_cursors_and_limits_are_4xx(client: TestClient) -> None:
    assert_problem(client.get(f"{API}/relations/not-a-uuid"), 422)
    missing = str(uuid.uuid4())
    assert missing in assert_problem(client.get(f"{API}/relations/{missing}"), 404)["detail"]
    assert "cursor" in assert_problem(client.get(f"{API}/relations", params={"cursor": "garbage"}), 422)["detail"]
    assert_problem(client.get(f"{API}/relations", params={"limit": 0}), 422)
    assert_problem(client.get(f"{API}/relations", params={"entity_id": "nope"}), 422)


@ONE_BACKEND
@pytest.mark.parametrize(
    "bad_type",
    [
        pytest.param("Treats", id="capital"),
        pytest.param("treats,works at", id="space in a listed type"),
        pytest.param("t" * 65, id="65 characters"),
    ],
)
def test_a_malformed_type_filter_is_422(client: TestClient, bad_type: str) -> None:
    problem = assert_problem(client.get(f"{API}/relations", params={"type": bad_type}), 422)
    assert "type" in problem["detail"]


def test_forged_cursor_with_an_unrepresentable_time_is_422(client: TestClient) -> None:
    payload = json.dumps(["k", ["9999-12-31T23:59:59-05:00", str(uuid.uuid4())]]).encode()
    cursor = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert_problem(client.get(f"{API}/relations", params={"cursor": cursor}), 422)


def test_patch_weight_appends_to_history_oldest_first(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient, weight=1.0)
    first = client.patch(f"{API}/relations/{made['id']}", json={"weight": 2.5})
    assert first.status_code == 200, first.text
    assert first.json()["weight"] == 2.5
    assert when(first.json()["updated_at"]) > when(made["updated_at"])
    unchanged = client.patch(f"{API}/relations/{made['id']}", json={"weight": 2.5}).json()
    assert len(unchanged["history"]) == 2
    second = client.patch(f"{API}/relations/{made['id']}", json={"weight": 0.5}).json()
    history = second["history"]
    assert [h["weight"] for h in history] == [1.0, 2.5, 0.5]
    stamps = [when(h["changed_at"]) for h in history]
    assert stamps == sorted(stamps) and stamps[0] == when(made["created_at"])
    read = client.get(f"{API}/relations/{made['id']}").json()
    assert read["weight"] == 0.5 and read["history"] == history


def test_patch_merges_attributes_and_null_removes_a_key(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient, attributes={"role": "gp", "since": 2020, "notes": "x"})
    patched = client.patch(f"{API}/relations/{made['id']}", json={"attributes": {"since": None, "ward": "B"}})
    assert patched.status_code == 200
    assert patched.json()["attributes"] == {"role": "gp", "notes": "x", "ward": "B"}
    assert patched.json()["weight"] == 1.0 and len(patched.json()["history"]) == 1
    assert client.get(f"{API}/relations/{made['id']}").json()["attributes"] == {"role": "gp", "notes": "x", "ward": "B"}


VALIDITY = {"valid_from": "2024-01-01T00:00:00Z", "valid_to": "2025-01-01T00:00:00Z"}


def test_patch_sets_validity_and_null_opens_it(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient)
    url = f"{API}/relations/{made['id']}"
    body = client.patch(url, json=VALIDITY).json()
    assert when(body["valid_from"]) == datetime(2024, 1, 1, tzinfo=UTC)
    assert when(body["valid_to"]) == datetime(2025, 1, 1, tzinfo=UTC)
    opened = client.patch(url, json={"valid_to": None}).json()
    assert opened["valid_to"] is None and opened["valid_from"] is not None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"valid_to": "2023-06-01T00:00:00Z"}, id="valid_to before the stored valid_from"),
        pytest.param({"valid_from": "2025-01-01T00:00:00Z"}, id="valid_from at the stored valid_to"),
        pytest.param(
            {"valid_from": "2026-01-01T00:00:00Z", "valid_to": "2025-01-01T00:00:00Z", "weight": 9.0},
            id="both inverted, with a weight",
        ),
        pytest.param(
            {"valid_from": "2030-01-01T00:00:00Z", "attributes": {"x": 1}},
            id="valid_from after the stored valid_to, with attributes",
        ),
    ],
)
def test_patch_refuses_an_inverted_interval_and_changes_nothing(
    client: TestClient, pair: tuple[str, str], change: dict[str, Any]
) -> None:
    """Checked against the stored validity, so on every backend."""
    doctor, patient = pair
    made = relate(client, doctor, patient)
    url = f"{API}/relations/{made['id']}"
    assert client.patch(url, json=VALIDITY).status_code == 200
    before = client.get(url).json()
    problem = assert_problem(client.patch(url, json=change), 422)
    assert "valid_from" in problem["detail"]
    assert client.get(url).json() == before


SOURCE = "<the relation's source_id>"  # filled in by the test


def assert_patch_is_422_and_changes_nothing(client: TestClient, pair: tuple[str, str], **request: Any) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient, weight=0.5, attributes={"a": 1})
    url = f"{API}/relations/{made['id']}"
    before = client.get(url).json()
    assert_problem(client.patch(url, **request), 422)
    assert client.get(url).json() == before


@ONE_BACKEND
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"weight": "a lot"}, id="weight text"),
        pytest.param({"weight": False}, id="weight false"),
        pytest.param({"type": "visits"}, id="type"),
        pytest.param({"target_id": SOURCE}, id="target_id"),
        pytest.param({"valid_from": "9999-12-31T23:00:00-05:00"}, id="valid_from past year 9999 in UTC"),
    ],
)
def test_patch_bad_input_is_422_and_changes_nothing(
    client: TestClient, pair: tuple[str, str], change: dict[str, Any]
) -> None:
    change = {k: pair[0] if v == SOURCE else v for k, v in change.items()}
    assert_patch_is_422_and_changes_nothing(client, pair, json=change)


@ONE_BACKEND
@pytest.mark.parametrize("raw", ['{"weight": NaN}', '{"weight": Infinity}', '{"attributes": {"a": NaN}}'])
def test_patch_non_finite_numbers_in_raw_json_are_422_and_change_nothing(
    client: TestClient, pair: tuple[str, str], raw: str
) -> None:
    assert_patch_is_422_and_changes_nothing(client, pair, content=raw, headers={"content-type": "application/json"})


def test_patch_a_null_weight_is_422_and_changes_nothing(client: TestClient, pair: tuple[str, str]) -> None:
    """Refused by the engine once it has read the relation, so on every backend."""
    assert_patch_is_422_and_changes_nothing(client, pair, json={"weight": None})


def test_patch_an_unknown_relation_is_404(client: TestClient) -> None:
    assert_problem(client.patch(f"{API}/relations/{uuid.uuid4()}", json={"weight": 2.0}), 404)


def test_delete_answers_204_then_404(client: TestClient, pair: tuple[str, str]) -> None:
    doctor, patient = pair
    made = relate(client, doctor, patient)
    kept = relate(client, doctor, patient, "visits")
    assert client.delete(f"{API}/relations/{made['id']}").status_code == 204
    assert made["id"] in assert_problem(client.get(f"{API}/relations/{made['id']}"), 404)["detail"]
    assert_problem(client.delete(f"{API}/relations/{made['id']}"), 404)
    assert [r["id"] for r in all_relations(client)] == [kept["id"]]
    again = relate(client, doctor, patient)
    assert again["id"] != made["id"] and len(client.get(f"{API}/relations/{again['id']}").json()["history"]) == 1


def test_deleting_an_entity_deletes_its_relations(client: TestClient) -> None:
    doctor, jane, john = entity(client, "Dr A", "doctor"), entity(client, "Jane"), entity(client, "John")
    to_jane = relate(client, doctor, jane)
    from_jane = relate(client, jane, john, "referred")
    client.patch(f"{API}/relations/{to_jane['id']}", json={"weight": 3.0})
    survivor = relate(client, doctor, john)
    assert client.delete(f"{API}/entities/{jane}").status_code == 204
    for gone in (to_jane, from_jane):
        assert_problem(client.get(f"{API}/relations/{gone['id']}"), 404)
    assert [r["id"] for r in all_relations(client)] == [survivor["id"]]
    assert all_relations(client, entity_id=jane) == []
    tensor = client.get(f"{API}/query_master/tensor").json()
    assert jane not in tensor["entity_ids"] and tensor["values"] == [1.0]
