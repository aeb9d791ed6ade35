"""Time at the edges over REST: a schema's time zone, values before the origin, digits that could be a date.

On one backend: tests/engine/test_time_edges.py checks these edges on both; these check how HTTP carries them
(status codes, problems, bodies).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ONE_BACKEND

API = "/api/v1"
AXES = [{"name": "metric", "labels": ["steps"]}]
SAYS = "could be time index 20,260,105 or the date 2026-01-05"


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def problem(response: Any, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def tensor_of(client: TestClient, time: dict[str, Any], origin: str) -> str:
    ok(client.post(f"{API}/schemas", json={"name": "daily", "axes": AXES, "time": time}))
    jane = ok(client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane"}))
    return ok(client.post(f"{API}/tensors", json={"entity_id": jane["id"], "schema": "daily", "origin": origin}))["id"]


def write(client: TestClient, tensor: str, *cells: tuple[Any, float]) -> Any:
    values = [{"time": when, "metric": "steps", "value": value} for when, value in cells]
    return client.post(f"{API}/tensors/{tensor}/values", json={"values": values})


@ONE_BACKEND
def test_a_schema_names_its_zone_and_keeps_it(client: TestClient) -> None:
    made = ok(client.post(f"{API}/schemas", json={"name": "daily", "axes": AXES, "time": {"zone": "Europe/Berlin"}}))
    assert made["time"]["zone"] == "Europe/Berlin"
    plain = ok(client.post(f"{API}/schemas", json={"name": "plain", "axes": AXES}))
    assert plain["time"]["zone"] == "UTC"
    moved = problem(client.put(f"{API}/schemas/daily", json={**made, "time": {**made["time"], "zone": "UTC"}}), 409)
    assert "must keep the time zone 'Europe/Berlin'" in moved["detail"]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("time", "says"),
    [
        ({"zone": "Europe/Berln"}, "'Europe/Berln' is not an IANA time zone"),
        ({"zone": "Europe"}, "'Europe' is not an IANA time zone"),
        ({"zone": "localtime"}, "'localtime' is not an IANA time zone"),
        ({"unit": "hour", "zone": "Europe/Berlin"}, "zone 'Europe/Berlin' needs a unit of day or week"),
    ],
)
def test_a_bad_zone_is_422_naming_it(client: TestClient, time: dict[str, Any], says: str) -> None:
    refused = problem(client.post(f"{API}/schemas", json={"name": "daily", "axes": AXES, "time": time}), 422)
    assert says in refused["detail"]


@ONE_BACKEND
def test_timestamps_are_the_utc_instants_of_local_days(client: TestClient) -> None:
    t = tensor_of(client, {"zone": "Europe/Berlin"}, "2025-03-28T00:00:00+01:00")
    ok(write(client, t, ("2025-03-30T00:30:00+01:00", 1.0), ("2025-03-31T00:30:00+02:00", 2.0)))
    body = ok(client.get(f"{API}/tensors/{t}"))
    assert body["time"]["zone"] == "Europe/Berlin"
    assert body["coords"]["time"] == [2, 3]
    assert body["timestamps"] == ["2025-03-29T23:00:00Z", "2025-03-30T22:00:00Z"]
    assert ok(client.get(f"{API}/tensors/{t}", params={"time": "2025-03-30T22:30:00Z"}))["selection"]["time"] == 3


@ONE_BACKEND
def test_values_before_the_origin_over_rest(client: TestClient) -> None:
    t = tensor_of(client, {"unit": "day"}, "2026-01-01T00:00:00Z")
    assert ok(write(client, t, (-1, 1.0), ("-70", 2.0), ("2025-12-30T12:00:00Z", 3.0), (0, 4.0)))["written"] == 4
    body = ok(client.get(f"{API}/tensors/{t}", params={"from": -2, "to": "0"}))
    assert body["time"]["start"] == -70 and body["time"]["end"] == 0
    assert body["coords"]["time"] == [-2, -1, 0] and body["values"] == [[3.0, 1.0, 4.0]]
    assert body["timestamps"][0] == "2025-12-30T00:00:00Z"
    assert ok(client.get(f"{API}/tensors/{t}", params={"time": -70}))["values"] == [2.0]
    refused = problem(write(client, t, (-100_000_001, 1.0)), 422)
    assert "run from -100,000,000 to 100,000,000" in refused["errors"][0]["msg"]


@ONE_BACKEND
def test_eight_digits_that_name_a_day_are_422_naming_both_readings(client: TestClient) -> None:
    t = tensor_of(client, {"unit": "day"}, "2026-01-01T00:00:00Z")
    refused = problem(write(client, t, ("20260105", 1.0)), 422)
    assert refused["errors"][0]["type"] == "ambiguous_time" and SAYS in refused["errors"][0]["msg"]
    ok(write(client, t, ("2026-01-05", 1.0)))
    assert SAYS in problem(client.get(f"{API}/tensors/{t}/history", params={"from": "20260105"}), 422)["detail"]
    assert ok(client.get(f"{API}/tensors/{t}", params={"time": "4"}))["values"] == [1.0]


@ONE_BACKEND
@pytest.mark.parametrize("bound", ["time", "from", "to"])
def test_eight_digits_that_name_a_day_are_422_as_a_read_parameter(client: TestClient, bound: str) -> None:
    t = tensor_of(client, {"unit": "day"}, "2026-01-01T00:00:00Z")
    ok(write(client, t, ("2026-01-05", 1.0)))
    assert SAYS in problem(client.get(f"{API}/tensors/{t}", params={bound: "20260105"}), 422)["detail"]
