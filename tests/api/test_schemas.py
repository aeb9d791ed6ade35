"""/schemas over HTTP, on every backend: create, read, versions, delete, and bad definitions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dust.embedded import Dust

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


def test_put_of_the_current_version_is_200_and_makes_no_new_one(client: TestClient) -> None:
    made = create(client)
    same = {key: VITALS[key] for key in ("axes", "time")}
    again = client.put(f"{API}/schemas/vitals", json=same)
    assert again.status_code == 200, again.text
    assert again.json() == made
    assert [s["version"] for s in client.get(f"{API}/schemas").json()] == [1]
    assert_problem(client.get(f"{API}/schemas/vitals", params={"version": 2}), 404)
    changed = client.put(f"{API}/schemas/vitals", json={**same, "description": "Vital signs"})
    assert changed.status_code == 201 and changed.json()["version"] == 2


def test_a_schema_as_read_can_be_sent_back(client: TestClient) -> None:
    create(client)
    read = client.get(f"{API}/schemas/vitals").json()
    assert {"name", "version", "created_at"} <= read.keys()
    unchanged = client.put(f"{API}/schemas/vitals", json=read)
    assert unchanged.status_code == 200 and unchanged.json() == read
    read["axes"][0]["labels"].append("resp_rate")
    grown = client.put(f"{API}/schemas/vitals", json=read)
    assert grown.status_code == 201, grown.text
    assert grown.json()["version"] == 2 and grown.json()["axes"][0]["labels"][-1] == "resp_rate"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("name", "labs", "the path names 'vitals'"),
        ("version", 3, "version 3 of schema 'vitals' does not exist; the current one is 2"),
        ("created_at", "2001-01-01T00:00:00Z", "created_at 2001-01-01T00:00:00Z is not when version 2"),
    ],
)
def test_read_only_fields_unlike_the_current_version_are_422(
    client: TestClient, field: str, value: Any, says: str
) -> None:
    create(client)
    assert client.put(f"{API}/schemas/vitals", json=update_body([*LABELS, "resp_rate"])).status_code == 201
    read = client.get(f"{API}/schemas/vitals").json()
    read["axes"][0]["labels"].append("etco2")
    refused = assert_problem(client.put(f"{API}/schemas/vitals", json={**read, field: value}), 422)
    assert refused["type"] == "https://dust.dev/problems/invalid-input"
    assert says in refused["detail"] and "read-only" in refused["detail"]
    current = client.get(f"{API}/schemas/vitals").json()
    assert current["version"] == 2 and "etco2" not in current["axes"][0]["labels"]


def test_a_schema_sent_back_after_someone_else_published_is_a_409(client: TestClient) -> None:
    """Two editors read version 1; the first publishes version 2; the second's edit must not silently undo it."""
    create(client)
    mine = client.get(f"{API}/schemas/vitals").json()
    assert client.put(f"{API}/schemas/vitals", json=update_body([*LABELS, "resp_rate"])).status_code == 201
    mine["axes"][0]["labels"].append("etco2")
    refused = assert_problem(client.put(f"{API}/schemas/vitals", json=mine), 409)
    assert "version 2 was published since" in refused["detail"] and "Read the schema again" in refused["detail"]
    assert client.get(f"{API}/schemas/vitals").json()["axes"][0]["labels"][-1] == "resp_rate"


def test_ranges_read_as_floats_from_every_route_and_the_embedded_api(client: TestClient, db: Dust) -> None:
    """``[0, 300]`` is sent; ``[0.0, 300.0]`` comes back from POST, PUT, GET (one, a past version, the list),
    and the embedded API."""
    as_read = '"ranges":{"heart_rate":[0.0,300.0],"temperature":[25.0,45.0]}'
    answers = [client.post(f"{API}/schemas", json=VITALS)]
    answers.append(client.put(f"{API}/schemas/vitals", json=update_body(LABELS, ranges=VITALS["axes"][0]["ranges"])))
    answers += [
        client.get(f"{API}/schemas/vitals"),
        client.get(f"{API}/schemas/vitals", params={"version": 1}),
        client.get(f"{API}/schemas"),
    ]
    assert [a.status_code for a in answers] == [201, 201, 200, 200, 200]
    assert all(as_read in a.text.replace(" ", "") for a in answers), [a.text for a in answers]
    embedded = [schema.model_dump_json() for schema in db.schemas()]
    assert len(embedded) == 1 and as_read in embedded[0]
    assert db.schemas()[0].axes[0].ranges["heart_rate"] == (0.0, 300.0)
    assert all(type(bound) is float for bound in db.schemas()[0].axes[0].ranges["heart_rate"])


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
