"""Fixtures shared by the API tests: the small world of the access tests.

Hospital H; doctors A and B work there; A treats patient PA, B treats patient PB, and each also `consults`
their patient (a relation type that grants no access). Each patient has a vitals tensor with one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

API = "/api/v1"
# For cases refused before any database work (request validation): one backend shows the mapping, and a case per
# backend would only double the count.
ONE_BACKEND = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
VITALS = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"]}]}


@dataclass
class World:
    ids: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.ids[key]


def engines(app: FastAPI) -> list[Engine]:
    """The app's engines, whose statements a test may count: its own and (PostgreSQL) the event loop's."""
    loop = app.state.loop
    return [app.state.engine, *(engine.sync_engine for engine in (loop.engines if loop else ()))]


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the searches of an included router's routes (FastAPI's routing), appended as they happen."""
    searched: list[str] = []
    fastapis = fastapi.routing._IncludedRouter._match

    def counted_search(self: Any, scope: Any) -> Any:
        searched.append(scope["path"])
        return fastapis(self, scope)

    monkeypatch.setattr(fastapi.routing._IncludedRouter, "_match", counted_search)
    return searched


def make(client: TestClient, path: str, body: dict[str, Any]) -> str:
    response = client.post(f"{API}{path}", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def world(client: TestClient) -> World:
    assert client.post(f"{API}/schemas", json=VITALS).status_code == 201
    ids = {
        "H": make(client, "/entities", {"kind": "hospital", "name": "General"}),
        "A": make(client, "/entities", {"kind": "doctor", "name": "Dr A"}),
        "B": make(client, "/entities", {"kind": "doctor", "name": "Dr B"}),
        "PA": make(client, "/patients", {"name": "Pat A", "external_id": "MRN-A", "attributes": {"ssn": "1"}}),
        "PB": make(client, "/patients", {"name": "Pat B", "external_id": "MRN-B"}),
    }
    for doctor, patient in (("A", "PA"), ("B", "PB")):
        ids[f"{doctor}-works"] = make(
            client, "/relations", {"source_id": ids[doctor], "target_id": ids["H"], "type": "works_at"}
        )
        ids[f"{doctor}-treats"] = make(
            client, "/relations", {"source_id": ids[doctor], "target_id": ids[patient], "type": "treats"}
        )
        # not an access-granting type: members may write it
        ids[f"{doctor}-consults"] = make(
            client, "/relations", {"source_id": ids[doctor], "target_id": ids[patient], "type": "consults"}
        )
        ids[f"T{patient}"] = make(client, "/tensors", {"entity_id": ids[patient], "schema": "vitals"})
        client.post(
            f"{API}/tensors/{ids[f'T{patient}']}/values",
            json={"values": [{"time": 0, "metric": "heart_rate", "value": 70}]},
        )
    return World(ids)
