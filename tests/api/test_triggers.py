"""/triggers over HTTP: admins keep the rules; a write by anyone fires them; the mapping of refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import API, ONE_BACKEND, World

FEVER = {
    "name": "fever",
    "description": "Temperature above 39 °C: the patient and the doctors who treat them.",
    "when": {"kind": "patient", "schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
    "then": [
        {"action": "alert", "severity": "high", "message": "{entity.name}: temperature {value}"},
        {"action": "alert", "follow": {"type": "treats", "direction": "in"}, "severity": "high"},
    ],
}


def create(client: TestClient, rule: dict[str, Any] = FEVER) -> dict[str, Any]:
    response = client.post(f"{API}/triggers", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def fever(client: TestClient, tensor_id: str, value: float = 39.6, time: int = 1) -> None:
    cells = [{"time": time, "metric": "temperature", "value": value}]
    response = client.post(f"{API}/tensors/{tensor_id}/values", json={"values": cells})
    assert response.status_code == 200, response.text


def test_the_life_of_a_rule(client: TestClient, world: World) -> None:
    made = create(client)
    assert made["version"] == 1 and made["enabled"] is True and len(made["secret"]) >= 32
    assert made["for"] is None and made["when"]["schema"] == "vitals"
    shown = client.get(f"{API}/triggers/{made['id']}").json()
    assert "secret" not in shown and shown["then"] == made["then"]
    assert [t["name"] for t in client.get(f"{API}/triggers").json()["items"]] == ["fever"]

    changed = client.patch(f"{API}/triggers/{made['id']}", json={"enabled": False})
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.json()["enabled"] is False
    versions = client.get(f"{API}/triggers/{made['id']}/versions").json()
    assert [(v["version"], v["enabled"]) for v in versions] == [(1, True), (2, False)]

    assert client.delete(f"{API}/triggers/{made['id']}").status_code == 204
    assert client.get(f"{API}/triggers/{made['id']}").status_code == 404


def test_a_clinicians_write_fires_the_rule_and_firings_are_listed(
    client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    rule = create(client)
    alice = login_as("clinician", entity_id=world["A"])  # Dr A treats Pat A
    fever(alice, world["TPA"])
    firings = client.get(f"{API}/triggers/{rule['id']}/firings").json()
    (firing,) = firings["items"]
    assert firing["entity_id"] == world["PA"] and firing["schema"] == "vitals" and firing["label"] == "temperature"
    assert firing["value"] == 39.6 and firing["time_index"] == 1 and firing["depth"] == 0
    assert firing["effects"] == {"alerts": 2}
    assert firings["next_cursor"] is None


def test_firings_page_newest_first(client: TestClient, world: World) -> None:
    rule = create(client)
    for time in range(5):
        fever(client, world["TPA"], 40.0, time)
    seen: list[int] = []
    cursor = None
    while True:
        page = client.get(f"{API}/triggers/{rule['id']}/firings", params={"limit": 2, "cursor": cursor}).json()
        seen += [f["time_index"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("role", ["clinician", "analyst", "viewer"])
def test_only_admins_keep_rules(
    client: TestClient, world: World, login_as: Callable[..., TestClient], role: str
) -> None:
    rule = create(client)
    other = login_as(role, entity_id=world["A"] if role == "clinician" else None)
    for method, path, body in [
        ("post", "/triggers", {**FEVER, "name": "mine"}),
        ("get", "/triggers", None),
        ("get", f"/triggers/{rule['id']}", None),
        ("patch", f"/triggers/{rule['id']}", {"enabled": False}),
        ("delete", f"/triggers/{rule['id']}", None),
        ("get", f"/triggers/{rule['id']}/firings", None),
    ]:
        response = other.request(method, f"{API}{path}", json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin" in response.json()["detail"]
    assert client.get(f"{API}/triggers/{rule['id']}").json()["enabled"] is True


@ONE_BACKEND
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({**FEVER, "when": {**FEVER["when"], "op": "~"}}, "when.op"),
        ({**FEVER, "when": {**FEVER["when"], "label": "temprature"}}, "did you mean 'temperature'"),
        ({**FEVER, "then": [{"action": "alert", "severity": "urgent"}]}, "severity"),
        ({**FEVER, "then": [{"action": "alert", "message": "{name}"}]}, "unknown placeholder {name}"),
        ({**FEVER, "then": [{"action": "alert", "follow": {"depth": 4}}]}, "depth"),
        ({**FEVER, "surprise": 1}, "surprise"),
        ({**FEVER, "name": "has space"}, "name"),
    ],
)
def test_bad_rules_get_a_422_that_says_why(client: TestClient, world: World, body: dict, words: str) -> None:
    response = client.post(f"{API}/triggers", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.text
    assert client.get(f"{API}/triggers").json()["items"] == []


def test_a_duplicate_name_is_a_409(client: TestClient, world: World) -> None:
    create(client)
    response = client.post(f"{API}/triggers", json=FEVER)
    assert response.status_code == 409 and "fever" in response.json()["detail"]
    other = create(client, {**FEVER, "name": "fever2"})
    renamed = client.patch(f"{API}/triggers/{other['id']}", json={"name": "fever"})
    assert renamed.status_code == 409


@ONE_BACKEND
def test_unknown_triggers_are_404(client: TestClient, world: World) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method in ("get", "patch", "delete"):
        response = client.request(method, f"{API}/triggers/{missing}", json={} if method == "patch" else None)
        assert response.status_code == 404, response.text
    assert client.get(f"{API}/triggers/{missing}/firings").status_code == 404
