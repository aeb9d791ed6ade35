"""Every time the REST API returns is in UTC and ends in ``Z``, whatever offset it was sent with, on every backend:
entities, relations (and their history), users, API keys, audit, schemas, tensors (their metadata and history)
and the master tensor's neighbourhoods."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

API = "/api/v1"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
SCHEMA = {
    "name": "vitals",
    "axes": [{"name": "metric", "labels": ["heart_rate"]}],
    "time": {"unit": "day", "step": 1, "origin": "2026-01-01T02:00:00+02:00"},
}


def times(found: Any, where: str = "") -> dict[str, str]:
    """Every string in ``found`` that is an ISO 8601 time, by where it is."""
    if isinstance(found, dict):
        return {k: v for key, value in found.items() for k, v in times(value, f"{where}.{key}").items()}
    if isinstance(found, list):
        return {k: v for i, value in enumerate(found) for k, v in times(value, f"{where}[{i}]").items()}
    return {where: found} if isinstance(found, str) and ISO.match(found) else {}


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_every_time_returned_ends_in_z(client: TestClient) -> None:
    answers: dict[str, Any] = {}
    answers["schema"] = ok(client.post(f"{API}/schemas", json=SCHEMA))
    answers["schemas"] = ok(client.get(f"{API}/schemas"))
    jane = ok(client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane"}))
    john = ok(client.post(f"{API}/entities", json={"kind": "patient", "name": "John"}))
    answers["entity"] = ok(client.get(f"{API}/entities/{jane['id']}"))
    answers["entities"] = ok(client.get(f"{API}/entities"))
    relation = {
        "source_id": jane["id"],
        "target_id": john["id"],
        "type": "knows",
        "valid_from": "2026-01-01T00:00:00+02:00",
        "valid_to": "2100-01-01T00:00:00-05:00",
    }
    made = ok(client.post(f"{API}/relations", json=relation))
    ok(client.patch(f"{API}/relations/{made['id']}", json={"weight": 2.0}))
    answers["relation"] = ok(client.get(f"{API}/relations/{made['id']}"))
    answers["relations"] = ok(client.get(f"{API}/relations"))
    answers["neighbourhood"] = ok(client.get(f"{API}/query_master", params={"entity_id": jane["id"]}))
    tensor = ok(client.post(f"{API}/tensors", json={"entity_id": jane["id"], "schema": "vitals"}))
    for value in (70, 71):
        cell = {"time": "2026-01-02T12:00:00+02:00", "metric": "heart_rate", "value": value}
        ok(client.post(f"{API}/tensors/{tensor['id']}/values", json={"values": [cell]}))
    answers["tensors"] = ok(client.get(f"{API}/entities/{jane['id']}/tensors"))
    answers["history"] = ok(client.get(f"{API}/tensors/{tensor['id']}/history"))
    user = ok(
        client.post(f"{API}/users", json={"username": "ann", "password": "a long enough password", "role": "viewer"})
    )
    answers["users"] = ok(client.get(f"{API}/users"))
    answers["me"] = ok(client.get(f"{API}/auth/me"))
    answers["key"] = ok(client.post(f"{API}/auth/api-keys", json={"name": "ci", "user_id": user["id"]}))
    assert client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {answers['key']['key']}"}).status_code == 200
    assert client.delete(f"{API}/auth/api-keys/{answers['key']['id']}").status_code == 204
    answers["keys"] = ok(client.get(f"{API}/auth/api-keys"))
    answers["audit"] = ok(client.get(f"{API}/audit", params={"limit": 1000}))

    found = times(answers)
    # Each kind of time is there to be checked: creation, change, validity, use, revocation, expiry, origin.
    for key in ("created_at", "updated_at", "valid_from", "valid_to", "changed_at", "written_at", "replaced_at"):
        assert any(where.endswith(f".{key}") for where in found), key
    for key in ("last_used_at", "revoked_at", "expires_at", "origin", ".at"):
        assert any(where.endswith(key) for where in found), key
    assert [f"{where}: {value}" for where, value in found.items() if not value.endswith("Z")] == []
    assert answers["relation"]["valid_from"] == "2025-12-31T22:00:00Z"
    assert answers["schema"]["time"]["origin"] == "2026-01-01T00:00:00Z"
