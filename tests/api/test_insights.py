"""/insights/aggregate and /tensors/{id}/analysis over HTTP: statuses, problem+json and shapes (what the numbers
are is tests/engine/test_insights.py's and test_analysis.py's business)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import API, ONE_BACKEND, VITALS, World

PROBLEM = "application/problem+json"


def aggregate(client: TestClient, **params: Any) -> Any:
    """GET /insights/aggregate of vitals' heart_rate, unless ``params`` say otherwise (None: leave it out)."""
    sent = {"schema": "vitals", "label": "heart_rate", **params}
    return client.get(f"{API}/insights/aggregate", params={k: v for k, v in sent.items() if v is not None})


def write(client: TestClient, tensor: str, values: list[tuple[int, float]], label: str = "heart_rate") -> None:
    body = {"values": [{"time": t, "metric": label, "value": v} for t, v in values]}
    assert client.post(f"{API}/tensors/{tensor}/values", json=body).status_code == 200


def test_a_series_oldest_first_with_gaps_as_null(client: TestClient, world: World) -> None:
    write(client, world["TPA"], [(2, 90.0)])
    response = aggregate(client, agg="max")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    series = response.json()["series"]
    assert [(p["value"], p["count"]) for p in series] == [(70.0, 2), (None, 0), (90.0, 1)]
    assert all(p["time"].endswith("Z") for p in series)
    assert series[0]["time"] < series[1]["time"] < series[2]["time"]


def test_buckets_windows_and_cohorts_are_query_parameters(client: TestClient, world: World) -> None:
    write(client, world["TPA"], [(1, 80.0), (9, 100.0)])
    start = aggregate(client).json()["series"][0]["time"]
    weeks = aggregate(client, agg="p50", bucket="week").json()["series"]
    assert sum(p["count"] for p in weeks) == 4
    assert [p["count"] for p in aggregate(client, **{"from": start, "to": start}).json()["series"]] == [2]
    assert client.patch(f"{API}/patients/{world['PA']}", json={"attributes": {"ward": "A"}}).status_code == 200
    theirs = {"related_to": world["A"], "relation": "treats", "attr.ward": "A"}
    assert [p["count"] for p in aggregate(client, agg="count", **theirs).json()["series"]] == [
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
    ]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("params", "detail"),
    [
        pytest.param(
            {"agg": "median"}, "agg 'median' is not supported; one of mean, min, max, sum, count, p50, p95", id="agg"
        ),
        pytest.param({"agg": "p59"}, "did you mean 'p95'?", id="agg-typo"),
        pytest.param(
            {"bucket": "hour"}, "allowed for schema vitals (steps of 1 day): day, week, month, year", id="finer"
        ),
        pytest.param({"bucket": "fortnight"}, "is not a bucket", id="bucket"),
        pytest.param({"label": "heartrate"}, "did you mean 'heart_rate'?", id="label"),
        pytest.param({"from": "3"}, "must be an ISO 8601 timestamp", id="an-index"),
        pytest.param({"from": "2026-02-01", "to": "2026-01-01"}, "is after to", id="from-after-to"),
        pytest.param({"relation": "treats"}, "relation needs related_to", id="relation-alone"),
        pytest.param({f"attr.k{i}": "1" for i in range(17)}, "at most 16 attr.<key> filters", id="filters"),
        pytest.param({"attr.a b": "1"}, "key must be letters, digits", id="filter-key"),
        pytest.param({"label": None}, "label: Field required", id="no-label"),
    ],
)
def test_bad_input_is_422_saying_what_is_allowed(
    client: TestClient, world: World, params: dict[str, Any], detail: str
) -> None:
    response = aggregate(client, **params)
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("params", "detail"),
    [
        pytest.param({"schema": "vitalz"}, "schema 'vitalz' does not exist; did you mean 'vitals'?", id="schema"),
        pytest.param({"related_to": "00000000-0000-4000-8000-000000000000"}, "does not exist", id="related-to"),
    ],
)
def test_unknown_schemas_and_entities_are_404(
    client: TestClient, world: World, params: dict[str, Any], detail: str
) -> None:
    response = aggregate(client, **params)
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]


def test_a_clinician_aggregates_only_their_patients(
    world: World, login_as: Callable[..., TestClient], client: TestClient
) -> None:
    write(client, world["TPB"], [(0, 50.0)])
    alice = login_as("clinician", entity_id=world["A"])
    assert [(p["value"], p["count"]) for p in aggregate(alice, agg="sum").json()["series"]] == [(70.0, 1)]
    assert aggregate(alice, related_to=world["PB"]).status_code == 404
    assert aggregate(client, agg="sum").json()["series"][0]["value"] == 120.0


def test_an_analyst_gets_a_sensitive_schemas_aggregate_but_not_its_tensors(
    world: World, login_as: Callable[..., TestClient], client: TestClient
) -> None:
    assert client.put(f"{API}/schemas/vitals", json={"axes": VITALS["axes"], "sensitive": True}).status_code == 201
    for tensor in (world["TPA"], world["TPB"]):
        assert client.patch(f"{API}/tensors/{tensor}", json={"schema_version": 2}).status_code == 200
    analyst = login_as("analyst")
    # two patients, fewer than DUST_MIN_COHORT (5): the point is there, its value withheld
    assert [(p["value"], p["count"], p["suppressed"]) for p in aggregate(analyst).json()["series"]] == [(None, 2, True)]
    refused = [
        analyst.get(f"{API}/tensors/{world['TPA']}"),
        analyst.get(f"{API}/tensors/{world['TPA']}/analysis", params={"label": "heart_rate"}),
        aggregate(analyst, **{"attr.ssn": "1"}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert all(r.headers["content-type"] == PROBLEM for r in refused)


def test_a_label_appended_by_a_new_version_counts_for_the_tensors_moved_to_it(client: TestClient, world: World) -> None:
    axes = [{**VITALS["axes"][0], "labels": ["heart_rate", "temperature", "spo2"]}]
    assert client.put(f"{API}/schemas/vitals", json={"axes": axes}).status_code == 201
    assert client.patch(f"{API}/tensors/{world['TPA']}", json={"schema_version": 2}).status_code == 200
    write(client, world["TPA"], [(0, 97.0), (1, 95.0)], label="spo2")
    spo2 = aggregate(client, label="spo2").json()["series"]
    assert [(p["value"], p["count"]) for p in spo2] == [(97.0, 1), (95.0, 1)]
    assert [p["count"] for p in aggregate(client).json()["series"]] == [2]  # both versions hold heart_rate


# --- analysis ------------------------------------------------------------------------------------------------


def analyse(client: TestClient, tensor: str, **params: Any) -> Any:
    return client.get(f"{API}/tensors/{tensor}/analysis", params={"label": "heart_rate", **params})


def test_an_analysis_has_a_trend_a_seasonality_and_a_forecast(client: TestClient, world: World) -> None:
    write(client, world["TPA"], [(t, 60.0 + t + (t % 3)) for t in range(1, 20)])
    response = analyse(client, world["TPA"], horizon=3)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "tensor_id",
        "label",
        "selection",
        "values",
        "start",
        "end",
        "trend",
        "seasonality",
        "forecast",
        "more",
    }
    assert body["more"] == {}  # no plugin adds an analysis here
    assert body["selection"] == {"metric": "heart_rate"} and body["values"] == 20
    assert set(body["trend"]) == {"slope", "low", "high", "p_value", "per"} and body["trend"]["per"] == "day"
    assert body["seasonality"] is None or set(body["seasonality"]) == {"period", "strength", "autocorrelation"}
    points = body["forecast"]["points"]
    assert [p["index"] for p in points] == [20, 21, 22]
    assert all(p["time"].endswith("Z") and set(p) == {"time", "index", "value", "low", "high"} for p in points)
    assert body["start"].endswith("Z") and body["end"] < points[0]["time"]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        pytest.param({}, 422, "an analysis needs at least 8 recorded values; heart_rate of tensor", id="short"),
        pytest.param({"horizon": 0}, 422, "horizon: Input should be greater than or equal to 1", id="horizon-0"),
        pytest.param({"horizon": 366}, 422, "horizon: Input should be less than or equal to 365", id="horizon-long"),
        pytest.param({"label": "heartrate"}, 422, "did you mean 'heart_rate'?", id="label"),
        pytest.param({"posture": "sit"}, 422, "'posture' is not an axis of schema vitals", id="axis"),
        pytest.param({"tensor": str(uuid.UUID(int=1))}, 404, "does not exist", id="no-tensor"),
    ],
)
def test_analysis_problems(client: TestClient, world: World, params: dict[str, Any], status: int, detail: str) -> None:
    tensor = params.pop("tensor", world["TPA"])
    response = analyse(client, tensor, **params)
    assert response.status_code == status and response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]


def test_a_sum_beyond_float64_is_null(client: TestClient, world: World) -> None:
    write(client, world["TPA"], [(0, 1.5e308)])
    write(client, world["TPB"], [(0, 1.5e308)])
    response = aggregate(client, agg="sum")
    assert response.status_code == 200
    (point,) = response.json()["series"]
    assert point == {"time": point["time"], "value": None, "count": 2, "suppressed": False}
    assert aggregate(client).json()["series"][0]["value"] == 1.5e308
