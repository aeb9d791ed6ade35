"""/models with node features and tensor write-backs: a feature request that cannot be read is a 422 problem,
and predictions go into tensors at a time step as ordinary, audited, access-checked writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.config import Settings
from dust.jobs import Worker
from tests.api.conftest import API
from tests.jobs.conftest import until
from tests.models.clinics import FAST, LABELLED, Clinics, populate, request

pytest.importorskip("torch_geometric")
PROBLEM = "application/problem+json"
SCHEMAS = [
    {"name": "pulse", "sensitive": True, "axes": [{"name": "metric", "labels": ["bpm", "spo2"]}]},
    {
        "name": "probs",
        "axes": [{"name": "class", "labels": ["high", "low"], "ranges": {"high": [0, 1], "low": [0, 1]}}],
    },
    {"name": "score", "axes": [{"name": "model", "labels": ["risk", "other"]}]},
    {"name": "highs", "axes": [{"name": "class", "labels": ["high"]}]},
]
FEATURES = {"tensors": [{"schema": "pulse", "labels": {"metric": "bpm"}}], "window": 30}
WHEN = "2026-01-02T12:00:00Z"


@pytest.fixture
def trainer(app: FastAPI, settings: Settings) -> Iterator[Worker]:
    with Worker(settings, sessions=app.state.sessions) as running:
        yield running


@pytest.fixture
def clinics(app: FastAPI, client: TestClient) -> Clinics:
    for schema in SCHEMAS:
        assert client.post(f"{API}/schemas", json=schema).status_code == 201
    with app.state.sessions() as session, session.begin():
        return populate(session)


def refused(response: Any, said: str, status: int = 422) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM and said in response.text, response.text


def test_a_feature_request_that_cannot_be_read_is_a_problem(client: TestClient, clinics: Clinics) -> None:
    bad = [
        ({"tensors": [{"schema": "pulsee"}]}, "no tensor schema 'pulsee'"),
        ({"tensors": [{"schema": "pulse", "labels": {"metric": ["bpm", "bp"]}}]}, "label 'bp' is not in axis metric"),
        ({"tensors": [{"schema": "pulse", "labels": {"vital": "bpm"}}]}, "'vital' is not an axis of schema pulse"),
        ({"tensors": [{"schema": "pulse"}], "window": 0}, "greater than or equal to 1"),
        ({"tensors": [{"schema": "pulse"}, {"schema": "pulse"}]}, "each schema once"),
        ({"attributes": ["risk"]}, "the target attribute"),
        ({}, "give tensors"),
        ({"tensors": "every"}, "tensors"),
        ({"tensors": [{"schema": "pulse"}], "mean": True}, "mean"),
    ]
    for features, said in bad:
        refused(client.post(f"{API}/models", json=request(settings={**FAST, "features": features})), said)
    assert client.get(f"{API}/models").json()["items"] == []  # nothing was queued


def test_predictions_go_into_tensors_at_a_time_step(
    client: TestClient, clinics: Clinics, login_as: Callable[..., TestClient], trainer: Worker
) -> None:
    model_id = submit_and_wait(client, request(settings={**FAST, "features": FEATURES}))
    model = client.get(f"{API}/models/{model_id}").json()
    assert model["settings"]["features"]["tensors"] == FEATURES["tensors"]  # as sent (its "schema" key too)
    assert model["metrics"]["features"] == 7  # one cell: 5 summaries, 2 masks
    targets = [str(e) for e in clinics.unlabelled[:3]]

    # every class's probability at its label, at the step holding as_of
    each = {"tensor": {"schema": "probs", "axis": "class"}}
    answer = predict(client, model_id, {"entity_ids": targets, "write_back": each, "as_of": WHEN})
    assert answer["written"] == 3
    for target, prediction in zip(targets, answer["predictions"], strict=True):
        read = client.get(f"{API}/tensors/{tensor_of(client, target, 'probs')}", params={"time": WHEN}).json()
        assert read["coords"]["class"] == ["high", "low"]
        assert read["values"] == pytest.approx([prediction["probabilities"][c] for c in ("high", "low")])
    # one class's probability into one cell, now
    one = {"tensor": {"schema": "score", "labels": {"model": "risk"}, "class": "high"}}
    answer = predict(client, model_id, {"entity_ids": targets[:1], "write_back": one})
    read = client.get(f"{API}/tensors/{tensor_of(client, targets[0], 'score')}", params={"time": "latest"}).json()
    assert read["values"][0] == pytest.approx(answer["predictions"][0]["probabilities"]["high"])
    audited = client.get(f"{API}/audit", params={"entity_id": targets[0]}).json()["items"]
    assert {(a["action"], a["resource"]) for a in audited} >= {("create", "tensor"), ("update", "tensor")}

    bad = [
        ({"tensor": {"schema": "pulse", "class": "high", "labels": {"metric": "bpm"}}}, "reads its features from"),
        ({"tensor": {"schema": "nope", "class": "high"}}, "no tensor schema 'nope'"),
        ({"tensor": {"schema": "score", "class": "medium", "labels": {"model": "risk"}}}, "none of the model's"),
        ({"tensor": {"schema": "score", "class": "high"}}, "must name a label of axis 'model'"),
        ({"tensor": {"schema": "score", "class": "high", "labels": {"model": "riks"}}}, "label 'riks'"),
        ({"tensor": {"schema": "highs", "axis": "class"}}, "no label for the class 'low'"),
        ({"tensor": {"schema": "probs", "axis": "class", "class": "high"}}, "not both"),
        ({}, "give attribute, tensor, or both"),
    ]
    for write_back, said in bad:
        body = {"entity_ids": targets[:1], "write_back": write_back}
        refused(client.post(f"{API}/models/{model_id}/predict", json=body), said)
    viewer = login_as("viewer")
    refused(viewer.post(f"{API}/models/{model_id}/predict", json={"entity_ids": targets, "write_back": one}), "", 403)
    # a de-identified reader may not read a sensitive schema's values, so no model reads them for them either
    analyst = login_as("analyst")
    refused(analyst.post(f"{API}/models/{model_id}/predict", json={"entity_ids": targets}), "sensitive", 403)
    unlabelled = clinics.patients[LABELLED]
    assert len(client.get(f"{API}/entities/{unlabelled}/tensors").json()) == 2  # probs and score, nothing more


def submit_and_wait(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post(f"{API}/models", json=body)
    assert response.status_code == 202, response.text
    model_id: str = response.json()["id"]
    until(lambda: client.get(f"{API}/models/{model_id}").json()["status"] in ("succeeded", "failed"))
    status = client.get(f"{API}/models/{model_id}").json()
    assert status["status"] == "succeeded", status
    return model_id


def predict(client: TestClient, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/models/{model_id}/predict", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def tensor_of(client: TestClient, entity_id: str, schema: str) -> str:
    listed = client.get(f"{API}/entities/{entity_id}/tensors").json()
    return next(t["id"] for t in listed if t["schema"] == schema)
