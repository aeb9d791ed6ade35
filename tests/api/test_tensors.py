"""/tensors over HTTP, on every backend: create, batch writes (all or nothing), reads, history, versions.

Tests marked ONE_BACKEND re-check semantics that the engine test named beside each (tests/engine/test_tensors.py)
checks on both backends; on one backend they check how HTTP carries them (status codes, problems, bodies).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.config import Settings
from tests.api.conftest import ONE_BACKEND

API = "/api/v1"
ORIGIN = "2026-01-01T00:00:00Z"
METRICS = ["heart_rate", "systolic_bp", "diastolic_bp", "temperature", "spo2"]
VITALS = {
    "name": "vitals",
    "axes": [
        {
            "name": "metric",
            "labels": METRICS,
            "units": {"heart_rate": "bpm", "temperature": "Cel"},
            "ranges": {"heart_rate": [0, 300], "temperature": [25, 45]},
        }
    ],
    "time": {"unit": "day", "step": 1},
}
POSTURE = {
    "name": "posture",
    "axes": [
        {"name": "metric", "labels": ["systolic_bp", "diastolic_bp"], "ranges": {"systolic_bp": [40, 300]}},
        {"name": "position", "labels": ["sitting", "standing", "lying"]},
    ],
}


def post(client: TestClient, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post(f"{API}{path}", json=body)
    assert response.status_code == status, response.text
    return response.json()


def new_tensor(client: TestClient, schema: dict[str, Any] = VITALS, **body: Any) -> dict[str, Any]:
    """A patient with a tensor under ``schema`` (created if missing), origin 2026-01-01 unless given."""
    if client.get(f"{API}/schemas/{schema['name']}").status_code == 404:
        post(client, "/schemas", schema)
    entity = post(client, "/entities", {"kind": "patient", "name": "Jane Doe"})
    return post(client, "/tensors", {"entity_id": entity["id"], "schema": schema["name"], "origin": ORIGIN, **body})


def write(client: TestClient, tensor_id: str, *values: dict[str, Any]) -> Any:
    return client.post(f"{API}/tensors/{tensor_id}/values", json={"values": list(values)})


def written(client: TestClient, tensor_id: str, *values: dict[str, Any]) -> int:
    response = write(client, tensor_id, *values)
    assert response.status_code == 200, response.text
    return response.json()["written"]


def read(client: TestClient, tensor_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/tensors/{tensor_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def cell(time: int | str, metric: str, value: Any) -> dict[str, Any]:
    return {"time": time, "metric": metric, "value": value}


def nothing_recorded(client: TestClient, tensor_id: str) -> bool:
    body = read(client, tensor_id)
    return body["shape"][-1] == 0 and all(row == [] for row in body["values"])


@pytest.fixture
def jane(client: TestClient) -> str:
    """Jane's vitals tensor, origin 2026-01-01, daily."""
    return new_tensor(client)["id"]


# --- create ---------------------------------------------------------------------------------------------------


def test_create_answers_the_tensor_shape(client: TestClient) -> None:
    made = new_tensor(client)
    assert {"id", "entity_id", "schema", "shape", "axes", "time"} <= made.keys()
    assert made["schema"] == "vitals"
    assert made["shape"] == [5, 0]  # five metrics, nothing recorded yet
    assert made["axes"][0]["name"] == "metric" and made["axes"][0]["labels"] == METRICS
    assert made["axes"][0]["units"]["temperature"] == "Cel"
    assert made["time"]["unit"] == "day" and made["time"]["step"] == 1
    assert datetime.fromisoformat(made["time"]["origin"]) == datetime(2026, 1, 1, tzinfo=UTC)
    assert client.get(f"{API}/tensors/{made['id']}").json()["id"] == made["id"]


def test_origin_defaults_to_now_floored_to_the_time_unit(client: TestClient) -> None:
    post(client, "/schemas", VITALS)
    entity = post(client, "/entities", {"kind": "patient", "name": "Jane Doe"})
    made = post(client, "/tensors", {"entity_id": entity["id"], "schema": "vitals"})
    origin = datetime.fromisoformat(made["time"]["origin"])
    assert (origin.hour, origin.minute, origin.second) == (0, 0, 0)
    assert datetime.now(UTC) - origin < timedelta(days=1)


def test_unknown_entity_or_schema_is_a_clear_4xx(client: TestClient) -> None:
    post(client, "/schemas", VITALS)
    entity = post(client, "/entities", {"kind": "patient", "name": "Jane Doe"})
    ghost = str(uuid.uuid4())
    no_entity = problem(client.post(f"{API}/tensors", json={"entity_id": ghost, "schema": "vitals"}), 404)
    assert ghost in no_entity["detail"]
    typo = problem(client.post(f"{API}/tensors", json={"entity_id": entity["id"], "schema": "vitls"}), 404)
    assert "did you mean 'vitals'?" in typo["detail"]
    assert problem(client.post(f"{API}/tensors", json={"entity_id": "nope", "schema": "vitals"}), 422)
    assert client.get(f"{API}/entities/{entity['id']}/tensors").json() == []


def test_one_tensor_per_entity_and_schema(client: TestClient) -> None:
    made = new_tensor(client)
    body = {"entity_id": made["entity_id"], "schema": "vitals"}
    clash = problem(client.post(f"{API}/tensors", json=body), 409)
    assert "vitals" in clash["detail"]
    post(client, "/schemas", POSTURE)
    post(client, "/tensors", {"entity_id": made["entity_id"], "schema": "posture"})
    listed = client.get(f"{API}/entities/{made['entity_id']}/tensors").json()
    assert sorted(t["schema"] for t in listed) == ["posture", "vitals"]


# --- writes ---------------------------------------------------------------------------------------------------


def test_batch_write_reads_back_and_timestamps_floor_onto_the_grid(client: TestClient, jane: str) -> None:
    count = written(client, jane, cell(3, "systolic_bp", 128), cell("2026-01-05T08:00:00Z", "temperature", 37.2))
    assert count == 2
    body = read(client, jane)
    assert body["shape"] == [5, 2]
    assert body["coords"]["time"] == [3, 4]
    assert body["values"][METRICS.index("systolic_bp")] == [128, None]
    assert body["values"][METRICS.index("temperature")] == [None, 37.2]
    assert body["timestamps"] == ["2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z"]


def test_single_cell_write_is_a_batch_of_one(client: TestClient, jane: str) -> None:
    assert written(client, jane, cell(0, "heart_rate", 72)) == 1
    assert read(client, jane, time=0, metric="heart_rate")["values"] == 72


def test_one_bad_value_rejects_the_whole_batch(client: TestClient, jane: str) -> None:
    values = [cell(i, "heart_rate", 60 + i) for i in range(50)]
    values[37] = cell(37, "heart_rate", 999)
    rejected = problem(write(client, jane, *values), 422)
    assert [e["loc"] for e in rejected["errors"]] == [["values", 37]]
    assert "999" in rejected["errors"][0]["msg"] and "0..300" in rejected["errors"][0]["msg"]
    assert "values[37]" in rejected["detail"]
    assert nothing_recorded(client, jane)


BAD_VALUES = {
    "above range": (cell(1, "temperature", 47), "25..45"),
    "below range": (cell(1, "heart_rate", -1), "0..300"),
    "unknown label": (cell(1, "pulse", 60), "pulse"),
    "missing axis": ({"time": 1, "value": 60}, "metric"),
    "extra field": ({**cell(1, "heart_rate", 60), "unit": "bpm"}, "unit"),
    "below the least index": (cell(-100_000_001, "heart_rate", 60), "-100,000,000"),
    "before year 1": (cell("-3000000", "heart_rate", 60), "before 0001-01-01"),
    "compact date": (cell("20260105", "heart_rate", 60), "could be time index 20,260,105 or the date 2026-01-05"),
    "fractional time": (cell(1.5, "heart_rate", 60), "time"),
    "garbage time": (cell("yesterday", "heart_rate", 60), "ISO 8601"),
    "double minus": (cell("--3", "heart_rate", 60), "time"),
    "superscript digit": (cell("²", "heart_rate", 60), "time"),
    "time past year 9999": (cell(5_000_000, "heart_rate", 60), "time"),
    "timestamp past year 9999": (cell("9999-12-31T23:00:00-05:00", "heart_rate", 60), "time"),
    "no time": ({"metric": "heart_rate", "value": 60}, "time"),
    "string value": (cell(1, "heart_rate", "60"), "number"),
    "boolean value": (cell(1, "heart_rate", True), "number"),
    "null value": (cell(1, "heart_rate", None), "number"),
    "missing value": ({"time": 1, "metric": "heart_rate"}, "number"),
    "huge integer": (cell(1, "spo2", 10**400), "number"),
    "label not a string": (cell(1, ["heart_rate"], 60), "metric"),
}


@pytest.mark.parametrize("case", BAD_VALUES.keys())
def test_a_bad_value_is_422_and_writes_nothing(client: TestClient, jane: str, case: str) -> None:
    bad, says = BAD_VALUES[case]
    rejected = problem(write(client, jane, cell(0, "heart_rate", 70), bad), 422)
    assert rejected["errors"][0]["loc"] == ["values", 1]
    assert says in rejected["errors"][0]["msg"]
    assert nothing_recorded(client, jane)


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(client: TestClient, jane: str, word: str) -> None:
    # Python's json reads these words, so they reach the engine; JSON itself has no such numbers.
    text = (
        '{"values": [{"time": 0, "metric": "spo2", "value": 97},'
        f' {{"time": 1, "metric": "spo2", "value": {word}}}]}}'
    )
    response = client.post(f"{API}/tensors/{jane}/values", content=text, headers={"content-type": "application/json"})
    assert "finite" in problem(response, 422)["errors"][0]["msg"]
    assert nothing_recorded(client, jane)


def test_a_misspelt_label_gets_a_suggestion(client: TestClient, jane: str) -> None:
    rejected = problem(write(client, jane, cell(1, "temprature", 37.0)), 422)
    assert "did you mean 'temperature'?" in rejected["detail"]


def test_every_bad_value_is_listed(client: TestClient, jane: str) -> None:
    rejected = problem(write(client, jane, cell(0, "pulse", 1), cell(1, "spo2", 97), cell(2, "spo2", "x")), 422)
    assert [e["loc"][1] for e in rejected["errors"]] == [0, 2]
    assert rejected["detail"].startswith("2 of 3 values were rejected, so nothing was written")


def test_each_bad_value_names_the_type_of_its_problem(client: TestClient, jane: str) -> None:
    """As pydantic's field errors do: the types docs/api.md#errors lists."""
    bad = [
        ({**cell(0, "spo2", 97), "unit": "%"}, "unknown_field"),
        ({"metric": "spo2", "value": 97}, "missing"),
        ({"time": 0, "value": 97}, "missing"),
        (cell("yesterday", "spo2", 97), "not_a_time"),
        (cell(-100_000_001, "spo2", 97), "time_out_of_range"),
        (cell(-3_000_000, "spo2", 97), "time_out_of_range"),  # three million days before 2026: before year 1
        (cell("20260105", "spo2", 97), "ambiguous_time"),
        ({"time": 0, "metric": 5, "value": 97}, "not_a_label"),
        (cell(0, "pulse", 97), "unknown_label"),
        (cell(0, "spo2", "97"), "not_a_number"),
        (cell(0, "spo2", 10**400), "not_finite"),
        (cell(0, "heart_rate", 999), "out_of_range"),
    ]
    rejected = problem(write(client, jane, cell(0, "spo2", 97), *(value for value, _ in bad)), 422)
    assert [(e["loc"], e["type"]) for e in rejected["errors"]] == [
        (["values", i + 1], kind) for i, (_, kind) in enumerate(bad)
    ]
    listed = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert [kind for _, kind in bad if f"| `{kind}` |" not in listed] == []
    assert nothing_recorded(client, jane)


def test_an_empty_or_malformed_batch_is_422(client: TestClient, jane: str) -> None:
    assert "at least one" in problem(write(client, jane), 422)["detail"]
    assert problem(client.post(f"{API}/tensors/{jane}/values", json={}), 422)
    assert problem(client.post(f"{API}/tensors/{jane}/values", json={"values": [1, 2]}), 422)
    assert problem(client.post(f"{API}/tensors/{jane}/values", json={"values": [], "x": 1}), 422)


def columns(tensor_id: str, client: TestClient, **columns: Any) -> Any:
    return client.post(f"{API}/tensors/{tensor_id}/values", json={"columns": columns})


def test_columns_write_what_the_same_cells_as_values_write(client: TestClient, jane: str) -> None:
    cells = [cell(3, "systolic_bp", 128), cell("2026-01-05T08:00:00Z", "temperature", 37.2), cell(4, "spo2", 97)]
    twin = new_tensor(client)["id"]
    assert written(client, twin, *cells) == 3
    by_column = columns(jane, client, **{k: [c[k] for c in cells] for k in ("time", "metric", "value")})
    assert by_column.status_code == 200 and by_column.json() == {"written": 3}
    assert read(client, jane)["values"] == read(client, twin)["values"]
    assert client.get(f"{API}/tensors/{jane}/history").json() == client.get(f"{API}/tensors/{twin}/history").json()


BAD_COLUMNS = {
    "a missing column": ({"time": [1], "value": [60]}, "missing metric"),
    "a field the schema lacks": ({"time": [1], "metric": ["spo2"], "value": [9], "unit": ["%"]}, "unit"),
    "columns of two lengths": ({"time": [1, 2], "metric": ["spo2"], "value": [9, 9]}, "one length"),
    "a bad value": ({"time": [1, 2], "metric": ["spo2", "pulse"], "value": [97, 60]}, "columns[1]"),
    "out of its range": ({"time": [1, 2], "metric": ["temperature"] * 2, "value": [37, 47]}, "25..45"),
    "no value": ({"time": [], "metric": [], "value": []}, "at least one"),
}


@pytest.mark.parametrize("case", BAD_COLUMNS.keys())
def test_bad_columns_are_422_and_write_nothing(client: TestClient, jane: str, case: str) -> None:
    bad, says = BAD_COLUMNS[case]
    refused = problem(columns(jane, client, **bad), 422)
    assert says in refused["detail"], refused
    assert nothing_recorded(client, jane)


def test_values_or_columns_exactly_one_of_them(client: TestClient, jane: str) -> None:
    both = {"values": [cell(1, "spo2", 97)], "columns": {"time": [1], "metric": ["spo2"], "value": [97]}}
    for body in ({}, both, {"columns": {"time": 1, "metric": "spo2", "value": 97}}, {"columns": [[1, "spo2", 97]]}):
        assert problem(client.post(f"{API}/tensors/{jane}/values", json=body), 422)
    assert nothing_recorded(client, jane)


def test_writing_to_an_unknown_tensor_is_404(client: TestClient) -> None:
    ghost = uuid.uuid4()
    assert str(ghost) in problem(write(client, str(ghost), cell(0, "spo2", 97)), 404)["detail"]


@pytest.fixture
def small_client(app: FastAPI, settings: Settings, login_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    """An admin on an app with small limits (10 values and 3 blocks a write, 20 cells a read), cheap to reach.

    The routes read these limits from ``app.state.settings`` on each request, so the test app's settings are
    swapped rather than a second app built (which would need its own users and tokens).
    """
    app.state.settings = settings.model_copy(
        update={"max_batch_values": 10, "max_batch_blocks": 3, "max_read_cells": 20}
    )
    with login_as("admin") as admin:
        yield admin


def test_an_oversized_batch_is_413_and_writes_nothing(small_client: TestClient) -> None:
    tensor_id = new_tensor(small_client)["id"]
    values = [cell(i, "spo2", 97) for i in range(11)]
    refused = problem(write(small_client, tensor_id, *values), 413)
    assert "10" in refused["detail"] and "11" in refused["detail"]
    assert nothing_recorded(small_client, tensor_id)
    assert written(small_client, tensor_id, *values[:10]) == 10
    spo2 = {"time": list(range(11)), "metric": ["spo2"] * 11, "value": [97] * 11}
    assert "11" in problem(columns(tensor_id, small_client, **spo2), 413)["detail"]


def test_a_write_is_bounded_by_the_blocks_it_touches(small_client: TestClient) -> None:
    """Each touched block is rewritten whole: few values far apart must not cost a block each without bound."""
    tensor_id = new_tensor(small_client)["id"]
    spread = [cell(1024 * k, "spo2", 97) for k in range(4)]  # 4 values, 4 blocks (a block is at most 1,024 steps)
    refused = problem(write(small_client, tensor_id, *spread), 413)
    assert "touches 4 blocks" in refused["detail"] and "at most 3" in refused["detail"]
    assert nothing_recorded(small_client, tensor_id)
    assert written(small_client, tensor_id, *spread[:3]) == 3


def test_a_read_over_the_cell_limit_is_422_until_narrowed(small_client: TestClient) -> None:
    tensor_id = new_tensor(small_client)["id"]
    written(small_client, tensor_id, *(cell(t, "spo2", 97) for t in range(5)))
    too_big = problem(small_client.get(f"{API}/tensors/{tensor_id}"), 422)  # 5 labels × 5 steps
    assert "25 cells" in too_big["detail"] and "20" in too_big["detail"]
    assert read(small_client, tensor_id, metric="spo2")["values"] == [97] * 5


def test_history_filters_by_time(client: TestClient, jane: str) -> None:
    written(client, jane, cell(1, "spo2", 95), cell(8, "spo2", 96))
    written(client, jane, cell(1, "spo2", 97), cell(8, "spo2", 98))
    assert [h["time"] for h in client.get(f"{API}/tensors/{jane}/history").json()["items"]] == [1, 8]
    late = client.get(f"{API}/tensors/{jane}/history", params={"from": "2026-01-05"}).json()["items"]
    assert [(h["time"], h["value"], h["new_value"]) for h in late] == [(8, 96, 98)]
    assert client.get(f"{API}/tensors/{jane}/history", params={"to": 0}).json() == {"items": [], "next_cursor": None}


def test_overwrites_keep_the_replaced_value_in_history(client: TestClient, jane: str) -> None:
    written(client, jane, cell(3, "systolic_bp", 120))
    written(client, jane, cell(3, "systolic_bp", 128))
    assert read(client, jane, time=3, metric="systolic_bp")["values"] == 128
    (entry,) = client.get(f"{API}/tensors/{jane}/history").json()["items"]
    assert entry["time"] == 3 and entry["labels"] == {"metric": "systolic_bp"}
    assert entry["value"] == 120 and entry["new_value"] == 128
    assert datetime.fromisoformat(entry["written_at"]) <= datetime.fromisoformat(entry["replaced_at"])


# --- reads ----------------------------------------------------------------------------------------------------


@pytest.fixture
def week(client: TestClient, jane: str) -> str:
    """Jane's tensor with systolic_bp 125 + day on days 0..6 and heart_rate on days 0 and 5."""
    written(client, jane, *(cell(day, "systolic_bp", 125 + day) for day in range(7)))
    written(client, jane, cell(0, "heart_rate", 70), cell(5, "heart_rate", 75))
    return jane


@pytest.mark.parametrize("route", ["tensor", "tensors"])
def test_blood_pressure_on_day_3_is_a_scalar(client: TestClient, week: str, route: str) -> None:
    body = client.get(f"{API}/{route}/{week}", params={"time": 3, "metric": "systolic_bp"}).json()
    assert body["values"] == 128 and body["dims"] == []
    assert body["selection"] == {"metric": "systolic_bp", "time": 3}


def test_one_time_step_keeps_the_label_axis(client: TestClient, week: str) -> None:
    body = read(client, week, time=3)
    assert body["dims"] == ["metric"]
    assert body["values"] == [None, 128, None, None, None]


def test_a_timestamp_selects_the_step_containing_it(client: TestClient, week: str) -> None:
    assert read(client, week, time="2026-01-04T23:59:59Z", metric="systolic_bp")["values"] == 128


@ONE_BACKEND  # engine: test_start_and_end_are_both_inclusive
def test_from_and_to_are_inclusive(client: TestClient, week: str) -> None:
    body = read(client, week, metric="systolic_bp", **{"from": 2, "to": 4})
    assert body["coords"]["time"] == [2, 3, 4] and body["values"] == [127, 128, 129]
    assert body["selection"] == {"metric": "systolic_bp", "from": 2, "to": 4, "requested": {"from": 2, "to": 4}}
    by_date = read(client, week, metric="systolic_bp", **{"from": "2026-01-03", "to": "2026-01-05T12:00:00Z"})
    assert by_date["values"] == [127, 128, 129]


@ONE_BACKEND  # engine: test_a_range_partly_outside_the_record_is_clipped_and_says_so, ..._entirely_...is_out_of_range
def test_a_range_partly_outside_the_record_is_clipped_and_says_so(client: TestClient, week: str) -> None:
    body = read(client, week, metric="systolic_bp", **{"from": 2, "to": 40})
    assert body["coords"]["time"] == [2, 3, 4, 5, 6] and body["values"] == [127, 128, 129, 130, 131]
    assert body["selection"] == {"metric": "systolic_bp", "from": 2, "to": 6, "requested": {"from": 2, "to": 40}}
    by_date = read(client, week, metric="systolic_bp", **{"from": "2026-01-06"})
    assert by_date["selection"] == {"metric": "systolic_bp", "from": 5, "to": 6, "requested": {"from": 5, "to": None}}
    outside = problem(client.get(f"{API}/tensor/{week}", params={"from": 10, "to": 12}), 422)
    assert outside["detail"] == f"time range 10..12 is outside 0..6 recorded for tensor {week}"


@ONE_BACKEND  # engine: test_every_read_mode_fills_selection_and_timestamps
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"time": 3},
        {"time": "2026-01-04T08:00:00Z", "metric": "systolic_bp"},
        {"from": 1, "to": 2},
        {"metric": "heart_rate,spo2"},
        {"time": "latest"},
        {"time": "latest", "metric": "heart_rate"},
        {"as_of": "2030-01-01T00:00:00Z", "to": 1},
    ],
)
def test_every_read_fills_selection_and_timestamps_in_utc_z(
    client: TestClient, week: str, params: dict[str, Any]
) -> None:
    body = read(client, week, **params)
    assert body["selection"], body
    assert "timestamps" in body and body["timestamps"] is not None
    stamps = body["timestamps"] if isinstance(body["timestamps"], list) else [body["timestamps"]]
    assert stamps and all(s is None or (s.endswith("T00:00:00Z") and "+" not in s) for s in stamps)
    assert ("times" in body) == (params.get("time") == "latest")
    if "as_of" in params:
        assert body["selection"]["as_of"] == "2030-01-01T00:00:00Z"


def test_a_label_list_keeps_the_axis(client: TestClient, week: str) -> None:
    body = read(client, week, metric="heart_rate,systolic_bp", time=5)
    assert body["dims"] == ["metric"] and body["coords"]["metric"] == ["heart_rate", "systolic_bp"]
    assert body["values"] == [75, 130]


@ONE_BACKEND  # engine: test_latest_times_are_masked_where_nothing_was_recorded
def test_latest_gives_each_cells_last_value_and_its_time(client: TestClient, week: str) -> None:
    body = read(client, week, time="latest")
    assert body["dims"] == ["metric"]
    assert body["values"] == [75, 131, None, None, None]
    assert body["times"] == [5, 6, None, None, None]
    assert body["timestamps"] == ["2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", None, None, None]
    assert body["selection"] == {"from": 0, "to": 6, "requested": {"from": None, "to": None}, "latest": True}
    one = read(client, week, time="latest", metric="heart_rate")
    assert (one["values"], one["times"], one["timestamps"]) == (75, 5, "2026-01-06T00:00:00Z")
    within = read(client, week, time="latest", metric="heart_rate", to=4)
    assert (within["values"], within["times"], within["selection"]["to"]) == (70, 0, 4)


def test_as_of_returns_the_value_before_a_later_write(client: TestClient, jane: str) -> None:
    written(client, jane, cell(3, "systolic_bp", 120))
    written(client, jane, cell(3, "systolic_bp", 128), cell(4, "systolic_bp", 130))
    (entry,) = client.get(f"{API}/tensors/{jane}/history").json()["items"]
    # a moment between the writes from their stored stamps, not from the wall clock around sleeps
    between = (datetime.fromisoformat(entry["replaced_at"]) - timedelta(microseconds=1)).isoformat()
    then = read(client, jane, metric="systolic_bp", as_of=between)
    assert then["values"] == [120, None]
    assert read(client, jane, metric="systolic_bp")["values"] == [128, 130]
    before_all = read(client, jane, metric="systolic_bp", as_of="2020-01-01T00:00:00Z")
    assert before_all["values"] == [None, None]


@ONE_BACKEND  # engine: test_as_of_a_written_at_time_is_exact_to_the_microsecond
def test_as_of_the_replaced_writes_own_time_sees_it(client: TestClient, jane: str) -> None:
    written(client, jane, cell(3, "systolic_bp", 120))
    written(client, jane, cell(3, "systolic_bp", 128))
    (entry,) = client.get(f"{API}/tensors/{jane}/history").json()["items"]
    assert read(client, jane, time=3, metric="systolic_bp", as_of=entry["written_at"])["values"] == 120


def test_a_time_outside_the_record_names_the_recorded_range(client: TestClient, week: str) -> None:
    outside = problem(client.get(f"{API}/tensor/{week}", params={"time": 9}), 422)
    assert outside["detail"] == f"time index 9 is outside 0..6 recorded for tensor {week}"
    assert problem(client.get(f"{API}/tensor/{week}", params={"from": 10, "to": 12}), 422)
    before = problem(client.get(f"{API}/tensor/{week}", params={"time": "2025-06-01"}), 422)["detail"]
    assert before.startswith("time index -") and "is outside 0..6 recorded" in before  # before the origin


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"metrc": "heart_rate"}, "did you mean 'metric'?"),
        ({"metric": "hart_rate"}, "did you mean 'heart_rate'?"),
        ({"metric": "heart_rate,spo"}, "did you mean 'spo2'?"),
        ({"time": 3, "from": 1}, "either"),
        ({"from": 4, "to": 2}, "after"),
        ({"time": "soon"}, "ISO 8601"),
        ({"time": "--3"}, "time"),
        ({"as_of": "not a time"}, "as_of"),
        ({"time": 3, "metric": "heart_rate", "as_of": "0001-01-01T00:00:00+01:00"}, "as_of"),
    ],
)
def test_bad_read_parameters_are_422(client: TestClient, week: str, params: dict[str, Any], says: str) -> None:
    assert says in problem(client.get(f"{API}/tensor/{week}", params=params), 422)["detail"]


def test_an_axis_given_twice_is_422(client: TestClient, week: str) -> None:
    response = client.get(f"{API}/tensor/{week}?metric=spo2&metric=heart_rate")
    assert "comma" in problem(response, 422)["detail"]


@ONE_BACKEND  # engine: test_a_tensor_with_nothing_recorded
def test_reading_a_tensor_with_no_values(client: TestClient, jane: str) -> None:
    body = read(client, jane)
    assert body["shape"] == [5, 0] and body["dims"] == ["metric", "time"]
    assert body["values"] == [[], [], [], [], []] and body["timestamps"] == []
    latest = read(client, jane, time="latest")
    assert latest["values"] == [None] * 5 and latest["times"] == [None] * 5
    assert latest["timestamps"] == [None] * 5
    assert latest["selection"] == {"from": None, "to": None, "requested": {"from": None, "to": None}, "latest": True}
    empty = problem(client.get(f"{API}/tensor/{jane}", params={"time": 0}), 422)
    assert empty["detail"] == f"tensor {jane} has no values recorded yet; nothing to read at time index 0"
    ranged = read(client, jane, **{"from": 1, "to": 3})
    assert ranged["timestamps"] == [] and ranged["selection"]["requested"] == {"from": 1, "to": 3}


def test_meta_is_what_a_read_says_of_the_tensor_without_its_values(client: TestClient) -> None:
    made = new_tensor(client)
    assert client.get(f"{API}/tensors/{made['id']}/meta").json() == made  # nothing recorded: start, end null
    assert written(client, made["id"], cell(2, "heart_rate", 70), cell(5, "temperature", 37.0)) == 2
    meta = client.get(f"{API}/tensors/{made['id']}/meta").json()
    body = read(client, made["id"])
    assert "values" not in meta and {k: body[k] for k in meta} == meta
    assert meta["shape"] == [5, 4] and (meta["time"]["start"], meta["time"]["end"]) == (2, 5)


def test_unknown_and_malformed_tensor_ids(client: TestClient) -> None:
    ghost = uuid.uuid4()
    assert str(ghost) in problem(client.get(f"{API}/tensor/{ghost}"), 404)["detail"]
    assert problem(client.get(f"{API}/tensor/not-a-uuid"), 422)
    assert problem(client.delete(f"{API}/tensors/{ghost}"), 404)
    assert problem(client.get(f"{API}/tensors/{ghost}/history"), 404)
    assert str(ghost) in problem(client.get(f"{API}/tensors/{ghost}/meta"), 404)["detail"]
    assert problem(client.get(f"{API}/tensors/not-a-uuid/meta"), 422)


# --- three axes: metric × position × time ---------------------------------------------------------------------


def test_a_3d_tensor_writes_and_slices_by_either_axis(client: TestClient) -> None:
    made = new_tensor(client, POSTURE)
    assert made["shape"] == [2, 3, 0]
    values = [
        {"time": 1, "metric": "systolic_bp", "position": "standing", "value": 118},
        {"time": 1, "metric": "diastolic_bp", "position": "lying", "value": 70},
    ]
    written(client, made["id"], *values)
    whole = read(client, made["id"])
    assert whole["dims"] == ["metric", "position", "time"] and whole["shape"] == [2, 3, 1]
    assert whole["values"] == [[[None], [118], [None]], [[None], [None], [70]]]
    standing = read(client, made["id"], position="standing", time=1)
    assert standing["dims"] == ["metric"] and standing["values"] == [118, None]
    assert read(client, made["id"], metric="diastolic_bp", position="lying", time=1)["values"] == 70


def test_a_3d_tensor_needs_every_axis_and_checks_ranges(client: TestClient) -> None:
    made = new_tensor(client, POSTURE)
    missing = problem(write(client, made["id"], {"time": 1, "metric": "systolic_bp", "value": 118}), 422)
    assert "position" in missing["detail"]
    low = {"time": 1, "metric": "systolic_bp", "position": "sitting", "value": 10}
    assert "40..300" in problem(write(client, made["id"], low), 422)["detail"]
    assert nothing_recorded_3d(client, made["id"])


def nothing_recorded_3d(client: TestClient, tensor_id: str) -> bool:
    return read(client, tensor_id)["shape"] == [2, 3, 0]


# --- delete ---------------------------------------------------------------------------------------------------


def test_delete_answers_204_then_404(client: TestClient, week: str) -> None:
    assert client.delete(f"{API}/tensors/{week}").status_code == 204
    assert problem(client.get(f"{API}/tensor/{week}"), 404)
    assert problem(write(client, week, cell(0, "spo2", 97)), 404)
    assert problem(client.delete(f"{API}/tensors/{week}"), 404)


def test_deleting_the_entity_deletes_its_tensors(client: TestClient) -> None:
    made = new_tensor(client)
    written(client, made["id"], cell(0, "spo2", 97))
    assert client.get(f"{API}/entities/{made['entity_id']}/tensors").json()[0]["id"] == made["id"]
    assert client.delete(f"{API}/entities/{made['entity_id']}").status_code == 204
    assert problem(client.get(f"{API}/tensors/{made['id']}"), 404)
    assert problem(client.get(f"{API}/entities/{made['entity_id']}/tensors"), 404)
    # The schema is no longer in use, so it can go too.
    assert client.delete(f"{API}/schemas/vitals").status_code == 204


# --- schema versions ------------------------------------------------------------------------------------------


def publish_resp_rate(client: TestClient) -> None:
    body = {"axes": [{"name": "metric", "labels": [*METRICS, "resp_rate"], "ranges": {"resp_rate": [0, 80]}}]}
    response = client.put(f"{API}/schemas/vitals", json=body)
    assert response.status_code == 201, response.text


def test_a_tensor_moves_forward_to_a_new_schema_version(client: TestClient, week: str) -> None:
    publish_resp_rate(client)
    # Still on version 1: reads as before, and the new label is not writable yet.
    assert read(client, week, time=3)["values"] == [None, 128, None, None, None]
    assert "resp_rate" in problem(write(client, week, cell(3, "resp_rate", 16)), 422)["detail"]
    moved = client.patch(f"{API}/tensors/{week}", json={"schema_version": 2})
    assert moved.status_code == 200, moved.text
    assert moved.json()["schema_version"] == 2 and moved.json()["shape"] == [6, 7]
    # Blocks written under version 1 read with the new label unrecorded.
    assert read(client, week, time=3)["values"] == [None, 128, None, None, None, None]
    written(client, week, cell(3, "resp_rate", 16))
    assert read(client, week, time=3)["values"] == [None, 128, None, None, None, 16]
    assert "81" in problem(write(client, week, cell(4, "resp_rate", 81)), 422)["detail"]


def test_schema_versions_only_move_forward(client: TestClient, jane: str) -> None:
    publish_resp_rate(client)
    client.patch(f"{API}/tensors/{jane}", json={"schema_version": 2})
    assert (
        "only to a later version"
        in problem(client.patch(f"{API}/tensors/{jane}", json={"schema_version": 1}), 409)["detail"]
    )
    assert problem(client.patch(f"{API}/tensors/{jane}", json={"schema_version": 3}), 404)
    assert problem(client.patch(f"{API}/tensors/{jane}", json={"schema_version": 0}), 422)
    assert problem(client.patch(f"{API}/tensors/{jane}", json={"schema_version": 10**30}), 422)
    assert client.get(f"{API}/tensors/{jane}").json()["schema_version"] == 2


# --- erasing values and paging the history ------------------------------------------------------------------


def erase(client: TestClient, tensor_id: str, *cells: dict[str, Any]) -> Any:
    return client.request("DELETE", f"{API}/tensors/{tensor_id}/values", json={"values": list(cells)})


def test_erased_values_read_null_and_stay_in_the_history(client: TestClient, jane: str) -> None:
    written(client, jane, cell(0, "spo2", 97), cell(1, "spo2", 98))
    answer = erase(client, jane, {"time": 0, "metric": "spo2"}, {"time": 0, "metric": "heart_rate"})
    assert answer.status_code == 200 and answer.json() == {"erased": 1}  # heart_rate held nothing
    assert read(client, jane, metric="spo2")["values"] == [None, 98]
    (entry,) = client.get(f"{API}/tensors/{jane}/history").json()["items"]
    assert (entry["time"], entry["value"], entry["new_value"]) == (0, 97, None)
    # a moment before the erase from its stored stamp, not from the wall clock around a sleep
    erased_at = datetime.fromisoformat(entry["replaced_at"])
    assert datetime.fromisoformat(entry["written_at"]) < erased_at
    before = (erased_at - timedelta(microseconds=1)).isoformat()
    assert read(client, jane, metric="spo2", as_of=before)["values"] == [97, 98]
    assert read(client, jane, metric="spo2", as_of=entry["replaced_at"])["values"] == [None, 98]


def test_an_erase_with_an_unknown_cell_is_422_and_erases_nothing(client: TestClient, jane: str) -> None:
    written(client, jane, cell(0, "spo2", 97))
    refused = problem(erase(client, jane, {"time": 0, "metric": "spo2"}, {"time": 0, "metric": "sp02"}), 422)
    assert [e["loc"] for e in refused["errors"]] == [["values", 1]]
    assert problem(erase(client, jane, {"time": 0, "metric": "spo2", "value": 1}), 422)
    assert problem(erase(client, jane), 422)
    assert read(client, jane, metric="spo2")["values"] == [97]


def test_erasing_takes_the_permission_to_write(client: TestClient, jane: str, login_as: Callable[..., Any]) -> None:
    written(client, jane, cell(0, "spo2", 97))
    with login_as("viewer") as viewer:
        assert erase(viewer, jane, {"time": 0, "metric": "spo2"}).status_code == 403
    assert problem(erase(client, str(uuid.uuid4()), {"time": 0, "metric": "spo2"}), 404)
    assert read(client, jane, metric="spo2")["values"] == [97]


@ONE_BACKEND  # engine: test_history_comes_a_page_at_a_time
def test_history_pages_with_limit_and_cursor(client: TestClient, jane: str) -> None:
    for value in (90, 91, 92):
        written(client, jane, *(cell(t, "spo2", value) for t in range(3)))
    history = f"{API}/tensors/{jane}/history"

    def page(**params: Any) -> dict[str, Any]:
        response = client.get(history, params=params)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    first = page(limit=4)
    second = page(limit=4, cursor=first["next_cursor"])
    assert len(first["items"]) == 4 and len(second["items"]) == 2 and second["next_cursor"] is None
    whole = page()
    assert first["items"] + second["items"] == whole["items"] and whole["next_cursor"] is None
    assert problem(client.get(history, params={"limit": 10_001}), 422)
    assert problem(client.get(history, params={"cursor": "bm9wZQ"}), 422)


@ONE_BACKEND  # engine: test_negative_zero_is_zero_whether_or_not_another_cell_of_its_block_changes
def test_negative_zero_over_json_is_zero(client: TestClient, jane: str) -> None:
    """-0.0 is 0.0 on every write path (tests/engine/test_tensors.py): over 0.0 it changes nothing, alone or with
    another cell, and it reads back as 0.0."""
    assert written(client, jane, cell(0, "spo2", 0.0)) == 1
    body = (
        '{"values": [{"time": 0, "metric": "spo2", "value": -0.0}, {"time": 0, "metric": "diastolic_bp", "value": 80}]}'
    )
    response = client.post(f"{API}/tensors/{jane}/values", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    read = client.get(f"{API}/tensors/{jane}", params={"time": 0, "metric": "spo2"})
    assert read.status_code == 200, read.text
    assert read.json()["values"] == 0.0 and b"-0.0" not in read.content
    history = client.get(f"{API}/tensors/{jane}/history")
    assert history.status_code == 200 and history.json()["items"] == []
