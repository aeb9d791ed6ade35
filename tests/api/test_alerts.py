"""/alerts: what trigger rules raised, listed, filtered and handled under the access policy.

The world of the access tests (tests/api/conftest.py): doctor A treats PA, doctor B treats PB. Alerts are raised
through the repository, as the firing code raises them inside a write."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.security import pseudonym
from dust.storage.repositories import alerts as repo
from tests.api.conftest import API, ONE_BACKEND, World

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MESSAGE = "{entity.name}: temperature 39.5 (to {target.name})"  # as stored: the names filled per reader


def raise_(app: FastAPI, world: World, on: str, subject: str, **fields: Any) -> int:
    row = {
        "entity_id": uuid.UUID(world[on]),
        "subject_id": uuid.UUID(world[subject]),
        "trigger_id": None,
        "firing_id": None,
        "severity": "high",
        "message": MESSAGE,
        "schema_name": "vitals",
        "label": "temperature",
        "value": 39.5,
        "time_index": 3,
        "at": T0,
        **fields,
    }
    with app.state.sessions() as session, session.begin():
        return repo.add(session, [row])[0]


def listed(client: TestClient, **query: Any) -> list[int]:
    response = client.get(f"{API}/alerts", params=query)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


def patch(client: TestClient, alert_id: int, body: dict[str, Any]) -> Any:
    return client.patch(f"{API}/alerts/{alert_id}", json=body)


def test_an_alert_reads_back_in_its_public_shape(app: FastAPI, client: TestClient, world: World) -> None:
    alert_id = raise_(app, world, "A", "PA")
    (item,) = client.get(f"{API}/alerts").json()["items"]
    assert item == client.get(f"{API}/alerts/{alert_id}").json()
    assert {k: v for k, v in item.items() if k not in ("created_at", "updated_at")} == {
        "id": alert_id,
        "entity": {"id": world["A"], "kind": "doctor", "name": "Dr A"},
        "subject": {"id": world["PA"], "kind": "patient", "name": "Pat A"},
        "trigger_id": None,
        "firing_id": None,
        "severity": "high",
        "message": "Pat A: temperature 39.5 (to Dr A)",
        "state": "open",
        "note": None,
        "schema": "vitals",
        "label": "temperature",
        "value": 39.5,
        "time_index": 3,
        "time": "2026-03-01T00:00:00Z",
        "updated_by": None,
    }
    assert item["created_at"].endswith("Z")


def test_each_filter_narrows_the_list(app: FastAPI, client: TestClient, world: World) -> None:
    first = raise_(app, world, "PA", "PA", severity="low", created_at=T0)
    on_a = raise_(app, world, "A", "PA", severity="critical", created_at=T0 + timedelta(days=1))
    on_pb = raise_(app, world, "PB", "PB", severity="medium", created_at=T0 + timedelta(days=2))
    assert patch(client, first, {"state": "acknowledged"}).status_code == 200
    assert listed(client) == [on_pb, on_a, first]
    assert listed(client, entity_id=world["PA"]) == [first]
    assert listed(client, subject_id=world["PA"]) == [on_a, first]
    assert listed(client, trigger_id=str(uuid.uuid4())) == []
    assert listed(client, severity="critical") == [on_a]
    assert listed(client, severity="low,medium") == [on_pb, first]
    assert listed(client, min_severity="medium") == [on_pb, on_a]
    assert listed(client, state="open") == [on_pb, on_a]
    assert listed(client, state="acknowledged") == [first]
    assert listed(client, **{"from": "2026-03-01T12:00:00Z"}) == [on_pb, on_a]
    assert listed(client, to="2026-03-02T00:00:00Z") == [on_a, first]
    assert listed(client, **{"from": "2026-03-02T00:00:00+00:00", "to": "2026-03-02T00:00:00Z"}) == [on_a]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"severity": "urgent"}, "severity 'urgent' is not one of info, low, medium, high, critical"),
        ({"state": "closed"}, "state 'closed' is not one of open, acknowledged, resolved"),
        ({"min_severity": "severe"}, "min_severity: Input should be 'info', 'low', 'medium', 'high' or 'critical'"),
        ({"from": "yesterday"}, "from"),
        ({"limit": 0}, "limit"),
        ({"cursor": "nonsense"}, "cursor is not one this list returned"),
    ],
)
def test_a_bad_filter_is_a_422_saying_what_is_allowed(
    client: TestClient, world: World, query: dict[str, Any], said: str
) -> None:
    response = client.get(f"{API}/alerts", params=query)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert said in response.json()["detail"]


def test_pages_run_newest_first_across_pages(app: FastAPI, client: TestClient, world: World) -> None:
    raised = [raise_(app, world, "PA", "PA", message=f"#{i}") for i in range(5)]
    seen, cursor = [], None
    for _ in range(3):
        page = client.get(f"{API}/alerts", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
    assert seen == sorted(raised, reverse=True) and cursor is None


def test_a_clinician_sees_and_handles_only_alerts_on_their_own_patients_and_entity(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    on_patient, on_me = raise_(app, world, "PA", "PA"), raise_(app, world, "A", "PA")
    on_theirs, on_them = raise_(app, world, "PB", "PB"), raise_(app, world, "B", "PB")
    alice = login_as("clinician", entity_id=world["A"])
    assert listed(alice) == [on_me, on_patient]
    assert alice.get(f"{API}/alerts/{on_me}").json()["message"] == "Pat A: temperature 39.5 (to Dr A)"
    assert patch(alice, on_patient, {"state": "acknowledged"}).status_code == 200
    never = on_them + 1000
    missing = alice.get(f"{API}/alerts/{never}").json()
    for alert_id in (on_theirs, on_them):
        for response in (alice.get(f"{API}/alerts/{alert_id}"), patch(alice, alert_id, {"state": "resolved"})):
            assert response.status_code == 404
            assert response.json() == {**missing, "detail": missing["detail"].replace(str(never), str(alert_id))}
    for other in ("PB", "B"):
        assert alice.get(f"{API}/alerts", params={"entity_id": world[other]}).status_code == 404
    assert alice.get(f"{API}/alerts", params={"subject_id": world["PB"]}).status_code == 404
    assert listed(client, state="open") == [on_them, on_theirs, on_me]  # nothing of B's changed


def test_an_analyst_reads_pseudonyms_and_cannot_change_an_alert(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    alert_id = raise_(app, world, "A", "PA", schema_name=None)
    analyst = login_as("analyst")
    shown = analyst.get(f"{API}/alerts/{alert_id}").json()
    secret = app.state.settings.secret_key.get_secret_value()
    patient, doctor = (
        pseudonym(secret, "patient", uuid.UUID(world["PA"])),
        pseudonym(secret, "doctor", uuid.UUID(world["A"])),
    )
    assert shown["message"] == f"{patient}: temperature 39.5 (to {doctor})"
    assert "Pat A" not in str(shown) and "Dr A" not in str(shown)
    assert patch(analyst, alert_id, {"state": "acknowledged"}).status_code == 403


@pytest.mark.parametrize(
    ("steps", "status", "state"),
    [
        (["acknowledged", "resolved"], [200, 200], "resolved"),
        (["resolved"], [200], "resolved"),
        (["acknowledged", "acknowledged"], [200, 200], "acknowledged"),
        (["resolved", "open"], [200, 409], "resolved"),
        (["resolved", "acknowledged"], [200, 409], "resolved"),
        (["acknowledged", "open"], [200, 409], "acknowledged"),
    ],
)
def test_states_move_forward_only(
    app: FastAPI,
    world: World,
    login_as: Callable[..., TestClient],
    steps: list[str],
    status: list[int],
    state: str,
) -> None:
    alert_id = raise_(app, world, "PA", "PA")
    alice = login_as("clinician", entity_id=world["A"], username="alice")
    answers = [patch(alice, alert_id, {"state": s}) for s in steps]
    assert [a.status_code for a in answers] == status
    final = alice.get(f"{API}/alerts/{alert_id}").json()
    assert (final["state"], final["updated_by"]) == (state, "alice")
    if 409 in status:
        problem = answers[-1].json()
        assert problem["title"] == "Conflict" and f"alert {alert_id} is " in problem["detail"]
        assert "final" in problem["detail"] or "may become: resolved" in problem["detail"]


def test_the_same_state_again_is_a_200_that_changes_nothing(app: FastAPI, client: TestClient, world: World) -> None:
    alert_id = raise_(app, world, "PA", "PA")
    first = patch(client, alert_id, {"state": "resolved", "note": "false alarm: probe off"})
    again = patch(client, alert_id, {"state": "resolved"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.json()["note"] == "false alarm: probe off"


@ONE_BACKEND
@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"state": "closed"}, "state: Input should be 'open', 'acknowledged' or 'resolved'"),
        ({}, "state"),
        ({"state": "resolved", "by": "me"}, "by"),
        ({"state": "resolved", "note": "x" * 1001}, "note"),
        ({"state": "resolved", "note": "   "}, "note"),
    ],
)
def test_a_bad_change_is_a_422_and_changes_nothing(
    app: FastAPI, client: TestClient, world: World, body: dict[str, Any], said: str
) -> None:
    alert_id = raise_(app, world, "PA", "PA")
    response = patch(client, alert_id, body)
    assert response.status_code == 422, response.text
    assert said in response.json()["detail"]
    assert client.get(f"{API}/alerts/{alert_id}").json()["state"] == "open"


@ONE_BACKEND
def test_an_id_that_cannot_exist_is_a_422(client: TestClient) -> None:
    for bad in ("0", "-1", str(2**31), "abc"):
        assert client.get(f"{API}/alerts/{bad}").status_code == 422


def test_each_change_is_in_the_audit_trail(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    alert_id = raise_(app, world, "A", "PA")
    alice = login_as("clinician", entity_id=world["A"], username="alice")
    assert patch(alice, alert_id, {"state": "acknowledged", "note": "on my way"}).status_code == 200
    assert patch(alice, alert_id, {"state": "resolved"}).status_code == 200
    for entity in ("A", "PA"):
        entries = client.get(f"{API}/audit", params={"entity_id": world[entity], "user": "alice"}).json()["items"]
        changes = [(e["action"], e["resource"], e["resource_id"]) for e in entries if e["method"] == "PATCH"]
        assert changes == [("update", "alert", str(alert_id))] * 2


def test_a_rule_that_fires_on_a_write_raises_alerts_each_reader_sees_as_theirs(
    client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    """End to end, with the rule of the contract: on the patient, and on each doctor who treats them."""
    rule = {
        "name": "fever",
        "when": {"kind": "patient", "schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
        "then": [
            {"action": "alert", "severity": "high", "message": "{entity.name}: temperature {value}"},
            {"action": "alert", "follow": {"type": "treats", "direction": "in"}, "severity": "critical",
             "message": "{entity.name} of {target.name}: temperature {value}"},
        ],
    }  # fmt: skip
    assert client.post(f"{API}/triggers", json=rule).status_code == 201
    for tensor in ("TPA", "TPB"):
        fever = {"values": [{"time": 2, "metric": "temperature", "value": 39.6}]}
        assert client.post(f"{API}/tensors/{world[tensor]}/values", json=fever).status_code == 200
    alice = login_as("clinician", entity_id=world["A"])
    shown = alice.get(f"{API}/alerts").json()["items"]
    assert [(a["entity"]["name"], a["severity"], a["message"]) for a in shown] == [
        ("Dr A", "critical", "Pat A of Dr A: temperature 39.6"),
        ("Pat A", "high", "Pat A: temperature 39.6"),
    ]
    assert len(listed(client)) == 4
