"""/schemas over HTTP, on every backend: create, read, versions, delete, and bad definitions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

API = "/api/v1"
LABELS = ["heart_rate", "systolic_bp", "diastolic_bp", "temperature", "spo2"]
VITALS: dict[str, Any] = {
    "name": "vitals",
    "axes": [
        {
            "name": "metric",
            "labels": LABELS,
            "units": {"heart_rate": "bpm", "temperature": "Cel"},
            "ranges": {"heart_rate": [0, 300], "temperature": [25, 45]},
        }
    ],
    "time": {"unit": "day", "step": 1},
}


def vitals(**changes: Any) -> dict[str, Any]:
    """A deep copy of VITALS so a test may change it freely."""
    return {**copy.deepcopy(VITALS), **changes}


def create(client: TestClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(f"{API}/schemas", json=body or VITALS)
    assert response.status_code == 201, response.text
    return response.json()


def update_body(labels: list[str], **axis: Any) -> dict[str, Any]:
    """A PUT body: VITALS' metric axis with ``labels`` and any other axis fields."""
    return {"axes": [{"name": "metric", "labels": labels, **axis}], "time": {"unit": "day", "step": 1}}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


def test_create_is_version_1_and_a_second_create_conflicts(client: TestClient) -> None:
    made = create(client)
    assert made["version"] == 1
    assert made["axes"][0]["labels"] == LABELS
    assert made["axes"][0]["ranges"]["heart_rate"] == [0, 300]
    assert made["time"]["unit"] == "day"
    clash = assert_problem(client.post(f"{API}/schemas", json=VITALS), 409)
    assert "vitals" in clash["detail"]
    assert client.get(f"{API}/schemas/vitals").json()["version"] == 1


def test_list_shows_the_latest_version_of_each(client: TestClient) -> None:
    create(client)
    create(client, {"name": "labs", "axes": [{"name": "test", "labels": ["hba1c"]}]})
    client.put(f"{API}/schemas/vitals", json=update_body([*LABELS, "resp_rate"]))
    listed = {s["name"]: s["version"] for s in client.get(f"{API}/schemas").json()}
    assert listed == {"labs": 1, "vitals": 2}


def test_get_by_name_and_version(client: TestClient) -> None:
    create(client)
    client.put(f"{API}/schemas/vitals", json=update_body([*LABELS, "resp_rate"]))
    assert client.get(f"{API}/schemas/vitals").json()["axes"][0]["labels"][-1] == "resp_rate"
    first = client.get(f"{API}/schemas/vitals", params={"version": 1}).json()
    assert first["version"] == 1 and first["axes"][0]["labels"] == LABELS
    missing = assert_problem(client.get(f"{API}/schemas/vitals", params={"version": 3}), 404)
    assert "version 3" in missing["detail"]
    assert_problem(client.get(f"{API}/schemas/vitals", params={"version": 0}), 422)
    assert_problem(client.get(f"{API}/schemas/vitals", params={"version": 10**30}), 422)


def test_unknown_schema_is_404_with_a_suggestion(client: TestClient) -> None:
    create(client)
    missing = assert_problem(client.get(f"{API}/schemas/vitlas"), 404)
    assert "did you mean 'vitals'?" in missing["detail"]
    assert_problem(client.put(f"{API}/schemas/nothing", json=update_body(["a"])), 404)


def test_put_appends_labels_and_changes_units_and_ranges(client: TestClient) -> None:
    create(client)
    body = update_body([*LABELS, "resp_rate"], units={"temperature": "degF"}, ranges={"temperature": [77, 113]})
    response = client.put(f"{API}/schemas/vitals", json=body)
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["version"] == 2
    assert published["axes"][0]["units"] == {"temperature": "degF"}
    assert published["axes"][0]["ranges"] == {"temperature": [77, 113]}
    # The old version stays readable as it was.
    old = client.get(f"{API}/schemas/vitals", params={"version": 1}).json()
    assert old["axes"][0]["units"]["temperature"] == "Cel"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (update_body(LABELS[:-1]), "append"),  # a label removed
        (update_body([LABELS[1], LABELS[0], *LABELS[2:]]), "append"),  # labels reordered
        ({"axes": [{"name": "measure", "labels": LABELS}]}, "axes"),  # axis renamed
        ({"axes": [{"name": "metric", "labels": LABELS}, {"name": "position", "labels": ["sitting"]}]}, "axes"),
        ({**update_body(LABELS), "time": {"unit": "hour", "step": 1}}, "time"),  # time unit changed
        ({**update_body(LABELS), "time": {"unit": "day", "step": 7}}, "time"),  # time step changed
    ],
)
def test_put_refuses_incompatible_versions(client: TestClient, body: dict[str, Any], why: str) -> None:
    create(client)
    refused = assert_problem(client.put(f"{API}/schemas/vitals", json=body), 409)
    assert why in refused["detail"]
    assert client.get(f"{API}/schemas/vitals").json()["version"] == 1


@pytest.mark.parametrize(
    "axes",
    [
        [{"name": "metric", "labels": LABELS}, {"name": "metric", "labels": ["x"]}],  # duplicate axis
        # 10000 × 11 cells: over the limit per time step
        [
            {"name": "metric", "labels": [*LABELS, *(f"m{i}" for i in range(9995))]},
            {"name": "x", "labels": list("abcdefghijk")},
        ],
        [{"name": "metric", "labels": [*LABELS, "spo2"]}],  # duplicate label
    ],
)
def test_put_with_an_invalid_definition_is_422(client: TestClient, axes: list[dict[str, Any]]) -> None:
    create(client)
    assert_problem(client.put(f"{API}/schemas/vitals", json={"axes": axes}), 422)
    assert client.get(f"{API}/schemas/vitals").json()["version"] == 1


def test_delete_answers_204_then_404(client: TestClient) -> None:
    create(client)
    client.put(f"{API}/schemas/vitals", json=update_body([*LABELS, "resp_rate"]))
    assert client.delete(f"{API}/schemas/vitals").status_code == 204
    assert_problem(client.get(f"{API}/schemas/vitals"), 404)
    assert_problem(client.get(f"{API}/schemas/vitals", params={"version": 1}), 404)
    assert_problem(client.delete(f"{API}/schemas/vitals"), 404)
    # The name is free again, and starts over at version 1.
    assert create(client)["version"] == 1


def test_delete_is_refused_while_a_tensor_uses_the_schema(client: TestClient) -> None:
    create(client)
    jane = client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane Doe"}).json()
    tensor = client.post(f"{API}/tensors", json={"entity_id": jane["id"], "schema": "vitals"}).json()
    refused = assert_problem(client.delete(f"{API}/schemas/vitals"), 409)
    assert "1 tensor" in refused["detail"]
    assert client.get(f"{API}/schemas/vitals").status_code == 200
    assert client.delete(f"{API}/tensors/{tensor['id']}").status_code == 204
    assert client.delete(f"{API}/schemas/vitals").status_code == 204


def _axis(**fields: Any) -> dict[str, Any]:
    return vitals(axes=[{"name": "metric", "labels": LABELS, **fields}])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_axis(labels=["a", "b", "a"]), "unique"),
        (vitals(axes=[{"name": "time", "labels": ["a"]}]), "reserved"),
        (_axis(ranges={"heart_rate": [300, 0]}), "min <= max"),
        (_axis(units={"weight": "kg"}), "weight"),
        (_axis(ranges={"weight": [0, 1]}), "weight"),
        (_axis(ranges={"heart_rate": [0]}), ""),
        (
            vitals(
                axes=[
                    {"name": "a", "labels": [f"a{i}" for i in range(400)]},
                    {"name": "b", "labels": [f"b{i}" for i in range(400)]},
                ]
            ),
            "100000 cells",
        ),
        (vitals(axes=[{"name": "m", "labels": ["a"]}, {"name": "m", "labels": ["b"]}]), "unique"),
        (vitals(axes=[]), ""),
        (_axis(labels=[]), ""),
        (_axis(labels=["with,comma"]), "comma"),
        (vitals(name="bad name!"), ""),
        (vitals(time={"unit": "fortnight"}), ""),
        (vitals(time={"unit": "day", "step": 0}), ""),
        (vitals(surprise=1), ""),
    ],
)
def test_bad_definitions_are_422_and_create_nothing(client: TestClient, body: dict[str, Any], says: str) -> None:
    problem = assert_problem(client.post(f"{API}/schemas", json=body), 422)
    assert says in problem["detail"]
    assert problem["errors"][0]["loc"][0] == "body"
    assert client.get(f"{API}/schemas").json() == []


@pytest.mark.parametrize("bounds", ["[0, Infinity]", "[-Infinity, 0]", "[NaN, 1]"])
def test_non_finite_range_bounds_are_422(client: TestClient, bounds: str) -> None:
    # Python's json reads these words; a stored infinity would not survive the round trip through JSON.
    text = (
        '{"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"],'
        f' "ranges": {{"heart_rate": {bounds}}}}}]}}'
    )
    response = client.post(f"{API}/schemas", content=text, headers={"content-type": "application/json"})
    assert_problem(response, 422)
    assert client.get(f"{API}/schemas").json() == []
