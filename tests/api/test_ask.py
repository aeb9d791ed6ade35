"""POST /ask: answers with the query shown, under the asker's access policy; 4xx problems for what it cannot take."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from dust.ask.query import MAX_QUESTION

PROBLEM = "application/problem+json"


@pytest.fixture
def ward(client: TestClient) -> dict[str, str]:
    """A doctor treating Ann Lee, and Bob Ray whom nobody here treats; a day of vitals for both."""
    schema = {
        "name": "vitals",
        "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"], "units": {"temperature": "Cel"}}],
        "time": {"unit": "day", "step": 1},
    }
    assert client.post("/api/v1/schemas", json=schema).status_code == 201
    ids = {}
    for name, kind in (("Dr Grey", "doctor"), ("Ann Lee", "patient"), ("Bob Ray", "patient")):
        ids[name] = client.post("/api/v1/entities", json={"kind": kind, "name": name}).json()["id"]
    for name in ("Ann Lee", "Bob Ray"):
        tensor = client.post("/api/v1/tensors", json={"entity_id": ids[name], "schema": "vitals",
                                                      "origin": "2026-01-01T00:00:00Z"}).json()  # fmt: skip
        values = [{"time": t, "metric": "temperature", "value": 37.0 + t / 10} for t in range(3)]
        assert client.post(f"/api/v1/tensors/{tensor['id']}/values", json={"values": values}).status_code == 200
    relation = {"source_id": ids["Dr Grey"], "target_id": ids["Ann Lee"], "type": "treats"}
    assert client.post("/api/v1/relations", json=relation).status_code == 201
    return ids


def test_a_question_is_answered_with_the_query_and_the_data(client: TestClient, ward: dict[str, str]) -> None:
    answered = client.post("/api/v1/ask", json={"question": "What was Ann Lee's temperature on day 2?"})
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["answer"] == "Ann Lee's temperature on day 2 (2026-01-03) was 37.2 °C."
    assert body["result"]["values"] == {"temperature": pytest.approx(37.2)}
    assert body["query"]["intent"] == "value" and body["query"]["when"]["at"] == 2
    again = client.post("/api/v1/ask", json={"query": body["query"]})
    assert again.status_code == 200 and again.json()["answer"] == body["answer"]
    assert (
        client.post("/api/v1/ask", json={"question": "who treats ann lee"}).json()["result"]["entities"][0]["name"]
        == "Dr Grey"
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"question": "x" * (MAX_QUESTION + 1)}, "at most 500 characters"),
        ({"question": "ann lee\x07 temperature"}, "control character"),
        ({"question": "tell me a joke"}, "could not tell what to look up"),
        ({}, "either a question or a query"),
        ({"question": "temperature", "query": {"intent": "list"}}, "either a question or a query"),
        ({"query": {"intent": "guess"}}, "intent"),
    ],
)
def test_what_it_cannot_take_is_a_4xx_problem(client: TestClient, ward: dict[str, str], body: dict, said: str) -> None:
    refused = client.post("/api/v1/ask", json=body)
    assert 400 <= refused.status_code < 500, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert said in refused.text


def test_a_clinician_cannot_tell_an_unseen_patient_from_a_missing_one(
    client: TestClient, ward: dict[str, str], login_as: Callable[..., TestClient]
) -> None:
    clinician = login_as("clinician", entity_id=ward["Dr Grey"])
    mine = clinician.post("/api/v1/ask", json={"question": "ann lee temperature on day 1"})
    assert mine.status_code == 200 and mine.json()["result"]["values"]["temperature"] == pytest.approx(37.1)
    unseen = clinician.post("/api/v1/ask", json={"question": "bob ray temperature on day 1"})
    missing = clinician.post("/api/v1/ask", json={"question": "zed ray temperature on day 1"})
    assert unseen.status_code == missing.status_code == 404
    assert unseen.json()["detail"].replace("bob", "zed") == missing.json()["detail"]


def test_asking_needs_a_sign_in(anon_client: TestClient) -> None:
    assert anon_client.post("/api/v1/ask", json={"question": "how many patients"}).status_code == 401


def test_rankings_and_conditions_on_values_over_http(client: TestClient, ward: dict[str, str]) -> None:
    ranked = client.post("/api/v1/ask", json={"question": "who treats the most patients"})
    assert ranked.status_code == 200, ranked.text
    assert ranked.json()["answer"] == "Dr Grey treats the most patients: 1."
    listed = client.post("/api/v1/ask", json={"question": "patients with a temperature of at least 37.1 on day 1"})
    assert sorted(e["name"] for e in listed.json()["result"]["entities"]) == ["Ann Lee", "Bob Ray"]
    top = client.post("/api/v1/ask", json={"question": "top 1 patients by temperature"}).json()
    assert top["query"]["limit"] == 1 and len(top["result"]["ranked"]) == 1


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"question": "rank the patients"}, "a ranking, but not by what"),
        ({"query": {"intent": "rank", "limit": 101, "schema": "vitals", "labels": ["temperature"]}}, "limit"),
        ({"query": {"intent": "count", "cohort": {"conditions": [
            {"field": "pulse", "schema": "vitals", "op": ">", "value": 1}]}}}, "label 'pulse' is not in schema vitals"),
    ],
)  # fmt: skip
def test_rankings_and_conditions_it_cannot_take_are_422s(
    client: TestClient, ward: dict[str, str], body: dict, said: str
) -> None:
    refused = client.post("/api/v1/ask", json=body)
    assert refused.status_code == 422 and refused.headers["content-type"].startswith(PROBLEM), refused.text
    assert said in json.dumps(refused.json())
