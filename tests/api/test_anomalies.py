"""/anomalies: rules, values flagged as they are written, scans, and who sees what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.plugins import registry
from tests.anomalies.test_multivariate import vitals
from tests.api.conftest import API, ONE_BACKEND, VITALS, World, make
from tests.detectors import Spike, flags, series

RULE = {"detector": "spike", "settings": {"warmup": 5, "flag_at": 4.0}}


@pytest.fixture(autouse=True)
def spike_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "detectors", lambda: {"spike": Spike})


@pytest.fixture
def rule(client: TestClient, world: World) -> dict[str, Any]:
    """heart_rate of vitals scored by the spike detector."""
    response = client.put(f"{API}/anomalies/rules/vitals/heart_rate", json=RULE)
    assert response.status_code == 200, response.text
    return response.json()


def write(client: TestClient, tensor_id: str, values: list[float], start: int = 0) -> None:
    cells = [{"time": start + i, "metric": "heart_rate", "value": v} for i, v in enumerate(values)]
    response = client.post(f"{API}/tensors/{tensor_id}/values", json={"values": cells})
    assert response.status_code == 200, response.text


def listed(client: TestClient, **query: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/anomalies", params=query)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_rule_reads_back_as_it_was_put(client: TestClient, rule: dict[str, Any]) -> None:
    assert {k: rule[k] for k in ("schema", "label", "detector", "settings", "threshold")} == {
        "schema": "vitals",
        "label": "heart_rate",
        **RULE,
        "threshold": 0.5,
    }
    assert client.get(f"{API}/anomalies/rules").json()["items"] == [rule]


def test_a_spike_written_batch_by_batch_is_flagged_with_its_reason(
    client: TestClient, world: World, rule: dict[str, Any]
) -> None:
    values = series(40, {25: 150.0})
    for at in range(1, 40, 4):  # time 0 holds the world's value
        write(client, world["TPA"], values[at : at + 4], at)
    (anomaly,) = listed(client, entity_id=world["PA"])
    assert {k: anomaly[k] for k in ("entity_id", "tensor_id", "label", "value", "detector", "time_index")} == {
        "entity_id": world["PA"],
        "tensor_id": world["TPA"],
        "label": "heart_rate",
        "value": 150.0,
        "detector": "spike",
        "time_index": 25,
    }
    assert anomaly["time"].endswith("Z") and anomaly["score"] >= 0.5
    assert anomaly["reason"].startswith("heart_rate 150 is ") and anomaly["reason"].endswith("sd from Pat A's mean")


def test_a_clinician_lists_only_their_own_patients_anomalies(
    client: TestClient, world: World, rule: dict[str, Any], login_as: Callable[..., TestClient]
) -> None:
    for tensor in ("TPA", "TPB"):
        write(client, world[tensor], series(40, {25: 150.0})[1:], 1)
    assert {a["entity_id"] for a in listed(client)} == {world["PA"], world["PB"]}
    alice = login_as("clinician", entity_id=world["A"])
    assert [a["entity_id"] for a in listed(alice)] == [world["PA"]]
    assert alice.get(f"{API}/anomalies", params={"entity_id": world["PB"]}).status_code == 404
    assert alice.get(f"{API}/anomalies", params={"tensor_id": world["TPB"]}).status_code == 404


@pytest.mark.parametrize(("sensitive", "status"), [(True, 403), (False, 200)])
def test_an_analyst_gets_no_rows_of_a_sensitive_schema(
    client: TestClient,
    world: World,
    rule: dict[str, Any],
    login_as: Callable[..., TestClient],
    sensitive: bool,
    status: int,
) -> None:
    write(client, world["TPA"], series(40, {25: 150.0})[1:], 1)
    schema = client.get(f"{API}/schemas/vitals").json()
    client.put(f"{API}/schemas/vitals", json={"axes": schema["axes"], "sensitive": sensitive})
    analyst = login_as("analyst")
    assert analyst.get(f"{API}/anomalies", params={"schema": "vitals"}).status_code == status
    shown = analyst.get(f"{API}/anomalies").json()["items"]
    assert len(shown) == (0 if sensitive else 1)
    assert all("Pat A" not in a["reason"] for a in shown)  # the name is a sensitive field: a pseudonym stands in


def test_a_scan_scores_a_backfill_the_stream_left_alone(client: TestClient, world: World, rule: dict[str, Any]) -> None:
    values = series(40, {5: 150.0})
    write(client, world["TPA"], values[10:], 10)
    write(client, world["TPA"], values[1:10], 1)
    assert listed(client) == []
    scanned = client.post(f"{API}/anomalies/scan", json={"tensor_id": world["TPA"], "label": "heart_rate"})
    assert scanned.status_code == 200, scanned.text
    assert scanned.json() == {"scored": 40, "flagged": 1}  # time 0 is the world's 70
    assert [a["time_index"] for a in listed(client)] == flags([70.0, *values[1:]]) == [5]


def test_deleting_a_rule_stops_scoring(client: TestClient, world: World, rule: dict[str, Any]) -> None:
    assert client.delete(f"{API}/anomalies/rules/vitals/heart_rate").status_code == 204
    assert client.delete(f"{API}/anomalies/rules/vitals/heart_rate").status_code == 404
    write(client, world["TPA"], series(40, {25: 150.0})[1:], 1)
    assert listed(client) == []
    assert client.get(f"{API}/anomalies/rules").json() == {"items": []}


@ONE_BACKEND
@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("vitals/heart_rate", {"detector": "spik"}, "detector 'spik' does not exist; did you mean 'spike'?"),
        ("vitals/heart_rate", {**RULE, "settings": {"windw": 3}}, "are not accepted by detector 'spike'"),
        ("vitals/heart_rate", {**RULE, "threshold": 0}, "body.threshold: Input should be greater than 0"),
        ("vitals/heart_rate", {**RULE, "threshold": 1.01}, "body.threshold: Input should be less than or equal to 1"),
        ("vitals/heart_rat", RULE, "label 'heart_rat' is not in schema 'vitals'; did you mean 'heart_rate'?"),
        ("vitals/heart_rate", {"settings": {}}, "body.detector: Field required"),
    ],
)
def test_a_bad_rule_is_a_422_saying_what_is_wrong(
    client: TestClient, world: World, path: str, body: dict[str, Any], detail: str
) -> None:
    response = client.put(f"{API}/anomalies/rules/{path}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"label": "heart_rate"}, 422, "give either tensor_id or schema"),
        ({"label": "temperature", "schema": "vitals"}, 422, "has no anomaly rule"),
        ({"label": "heart_rate", "schema": "vital"}, 404, "did you mean 'vitals'?"),
    ],
)
def test_a_bad_scan_says_what_is_wrong(
    client: TestClient, world: World, rule: dict[str, Any], body: dict[str, Any], status: int, detail: str
) -> None:
    response = client.post(f"{API}/anomalies/scan", json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_only_admins_change_rules(
    client: TestClient, world: World, rule: dict[str, Any], login_as: Callable[..., TestClient]
) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    assert alice.put(f"{API}/anomalies/rules/vitals/temperature", json=RULE).status_code == 403
    assert alice.delete(f"{API}/anomalies/rules/vitals/heart_rate").status_code == 403
    assert alice.get(f"{API}/anomalies/rules").status_code == 200


def test_a_rule_put_through_one_worker_scores_writes_through_another(
    client: TestClient, world: World, new_app: FastAPI
) -> None:
    """Each app keeps the rules it read while the rules epoch stays: a rule put elsewhere raises it."""
    values = series(40, {25: 150.0})
    write(client, world["TPA"], values[1:10], 1)  # this app reads the rules: none
    with TestClient(new_app, headers=client.headers) as other:
        assert other.put(f"{API}/anomalies/rules/vitals/heart_rate", json=RULE).status_code == 200
    write(client, world["TPA"], values[10:], 10)
    assert [a["time_index"] for a in listed(client)] == [25]


def test_a_restarted_app_carries_on_from_the_stored_state(
    client: TestClient, world: World, rule: dict[str, Any], new_app: FastAPI
) -> None:
    """The spike is the first value the new app writes: it flags it only by carrying on from the stored state
    (a fresh detector would be warming up), exactly as an uninterrupted run."""
    values = [70.0, *series(40, {20: 150.0})[1:]]  # time 0 holds the world's 70
    write(client, world["TPA"], values[1:20], 1)
    with TestClient(new_app, headers=client.headers) as restarted:
        write(restarted, world["TPA"], values[20:], 20)
        assert [a["time_index"] for a in listed(restarted)] == flags(values) == [20]


# --- scans with the multivariate and relational detectors -------------------------------------------------

WARD = {"name": "ward", "axes": VITALS["axes"], "time": {"unit": "day", "step": 1}}
DAY = "2026-01-03T00:00:00Z"
RELATIONAL = {"detector": "relational", "schema": "ward", "label": "temperature", "relation": "treats", "via": True}


def scan(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/anomalies/scan", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_multivariate_scan_flags_a_joint_anomaly_listed_with_the_others(client: TestClient, world: World) -> None:
    values = vitals()
    cells = [
        {"time": t, "metric": label, "value": float(values[t, k])}
        for t in range(len(values))
        for k, label in enumerate(("heart_rate", "temperature"))
    ]
    assert client.post(f"{API}/tensors/{world['TPA']}/values", json={"values": cells}).status_code == 200
    assert scan(client, {"detector": "multivariate", "tensor_id": world["TPA"]}) == {"scored": 80, "flagged": 1}
    (anomaly,) = listed(client, entity_id=world["PA"])
    assert {k: anomaly[k] for k in ("tensor_id", "detector", "time_index")} == {
        "tensor_id": world["TPA"],
        "detector": "multivariate",
        "time_index": 60,
    }
    assert anomaly["label"] in anomaly["reason"] and "together are unusual for Pat A" in anomaly["reason"]


def test_a_multivariate_rule_on_star_flags_a_joint_anomaly_as_it_is_written(client: TestClient, world: World) -> None:
    refused = client.put(f"{API}/anomalies/rules/vitals/heart_rate", json={"detector": "multivariate"})
    assert refused.status_code == 422 and "put it on label '*'" in refused.json()["detail"]
    put = client.put(f"{API}/anomalies/rules/vitals/*", json={"detector": "multivariate"})
    assert put.status_code == 200 and put.json()["label"] == "*"
    values = vitals()
    for t in range(len(values)):
        cells = [
            {"time": t, "metric": m, "value": float(values[t, k])} for k, m in enumerate(("heart_rate", "temperature"))
        ]
        assert client.post(f"{API}/tensors/{world['TPA']}/values", json={"values": cells}).status_code == 200
    (anomaly,) = listed(client, entity_id=world["PA"])
    assert (anomaly["detector"], anomaly["time_index"]) == ("multivariate", 60)
    assert "together are unusual for Pat A" in anomaly["reason"]


@pytest.fixture
def wards(client: TestClient, world: World) -> dict[str, str]:
    """Dr A treats Pat A and three calm patients; Dr B, beyond Dr A's reach, treats Pat A too and three patients
    as warm as Pat A. Each patient's ward tensor holds a temperature on 3 January."""
    assert client.post(f"{API}/schemas", json=WARD).status_code == 201
    temperatures = {"PA": 39.8, "PA2": 37.0, "PA3": 37.2, "PA4": 36.9, "PB": 39.8, "PB2": 39.9, "PB3": 39.7}
    ids = {key: world[key] for key in ("PA", "PB")}
    for name, temperature in temperatures.items():
        if name not in ids:
            ids[name] = make(client, "/patients", {"name": f"Pat {name[1:]}"})
            doctor = world["A"] if name.startswith("PA") else world["B"]
            make(client, "/relations", {"source_id": doctor, "target_id": ids[name], "type": "treats"})
        tensor = make(client, "/tensors", {"entity_id": ids[name], "schema": "ward", "origin": "2026-01-01T00:00:00Z"})
        cell = {"time": 2, "metric": "temperature", "value": temperature}
        assert client.post(f"{API}/tensors/{tensor}/values", json={"values": [cell]}).status_code == 200
    make(client, "/relations", {"source_id": world["B"], "target_id": ids["PA"], "type": "treats"})
    return ids


def test_a_clinicians_relational_scan_compares_only_with_patients_they_may_see(
    client: TestClient, world: World, wards: dict[str, str], login_as: Callable[..., TestClient]
) -> None:
    """Among everyone, Pat A is as warm as Dr B's patients; among Dr A's, the only warm one."""
    alice = login_as("clinician", entity_id=world["A"])
    assert scan(alice, {**RELATIONAL, "from": DAY}) == {"scored": 4, "flagged": 1}
    (anomaly,) = listed(alice)
    assert (anomaly["entity_id"], anomaly["detector"], anomaly["value"]) == (world["PA"], "relational", 39.8)
    assert anomaly["reason"].startswith("temperature 39.8 is ")
    assert anomaly["reason"].endswith("MADs above the 3 other patients related by treats to the same entities as Pat A")
    assert scan(client, {**RELATIONAL, "from": DAY}) == {"scored": 7, "flagged": 0}  # and replaces Dr A's flag
    assert listed(client) == []


@ONE_BACKEND
@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"detector": "relational", "schema": "vitals", "label": "heart_rate"}, 422, "(missing: relation, from)"),
        ({**RELATIONAL, "from": 2}, 422, "from and to as timestamps"),
        ({**RELATIONAL, "from": DAY, "relation": "Treats!"}, 422, "body.relation: String should match pattern"),
        ({**RELATIONAL, "from": DAY, "direction": "sideways"}, 422, "body.direction: Input should be 'out', 'in'"),
        ({**RELATIONAL, "from": DAY, "schema": "vitls"}, 404, "did you mean 'vitals'?"),
        ({**RELATIONAL, "from": DAY, "schema": "vitals", "label": "temp"}, 422, "label 'temp' is not in schema"),
        ({**RELATIONAL, "from": DAY, "schema": "vitals", "settings": {"min_neighbours": 1}}, 422, "min_neighbours ≥ 3"),
        ({"detector": "multivariate", "schema": "vitals", "label": "heart_rate"}, 422, "label are not for the"),
        ({"detector": "multivariate", "tensor_id": "00000000-0000-0000-0000-000000000000"}, 404, "does not exist"),
        ({"detector": "multivariate", "schema": "vitals", "settings": {"warmup": 1}}, 422, "needs 2 ≤ warmup"),
        ({"detector": "isolation", "schema": "vitals"}, 422, "body.detector: Input should be 'multivariate' or"),
    ],
)
def test_a_bad_joint_scan_says_what_is_wrong(
    client: TestClient, world: World, body: dict[str, Any], status: int, detail: str
) -> None:
    response = client.post(f"{API}/anomalies/scan", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
