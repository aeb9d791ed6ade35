"""The Ask page, as the browser asks for it (Dash's callback route), on SQLite and PostgreSQL: the answer, a
chart of the data and the query, as the signed-in user may see them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.security import Role
from dust.engine import entities, relations, schemas, tensors, users
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate
from dust.engine.users import UserCreate
from tests.ui.test_pages import HERE, PASSWORD, _page, _signed_in

VITALS = {
    "name": "vitals",
    "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"], "units": {"temperature": "Cel"}}],
    "time": {"unit": "day", "origin": "2026-01-01T00:00:00Z"},
}


@pytest.fixture
def ward(app: FastAPI) -> dict[str, uuid.UUID]:
    """A doctor treating Ann, and Bob whom nobody here treats; three days of temperatures each."""
    with app.state.sessions() as session, session.begin():
        doctor = entities.create(session, EntityCreate(kind="practitioner", name="Dr Who")).id
        schemas.create(session, SchemaCreate.model_validate(VITALS))
        ids = {"doctor": doctor}
        for key, name in (("ann", "Ann Example"), ("bob", "Bob Example")):
            ids[key] = entities.create(session, EntityCreate(kind="patient", name=name)).id
            tensor = tensors.create(session, TensorCreate.model_validate({"entity_id": ids[key], "schema": "vitals"}))
            values = [{"time": t, "metric": "temperature", "value": 37.0 + t / 10} for t in range(3)]
            tensors.write_values(session, tensor.id, values)
        relations.create(session, RelationCreate(source_id=doctor, target_id=ids["ann"], type="treats"))
        for role, linked in (("admin", None), ("clinician", doctor)):
            users.create(
                session, UserCreate(username=f"ui-{role}", password=PASSWORD, role=Role(role), entity_id=linked)
            )
    return ids


def _ask(client: TestClient, question: str) -> Any:
    body = {
        "output": "ask-out.children",
        "outputs": {"id": "ask-out", "property": "children"},
        "inputs": [
            {"id": "ask-go", "property": "n_clicks", "value": 1},
            {"id": "ask-form", "property": "n_submit", "value": None},
        ],
        "state": [{"id": "ask-q", "property": "value", "value": question}],
        "changedPropIds": ["ask-go.n_clicks"],
    }
    answer = client.post("/ui/_dash-update-component", json=body, headers={"Origin": HERE})
    assert answer.status_code == 200, answer.text
    return json.dumps(answer.json()["response"]["ask-out"]["children"], ensure_ascii=False)


def test_the_page_is_in_the_navigation_and_has_a_question_box(app: FastAPI, ward: dict[str, uuid.UUID]) -> None:
    page = json.dumps(_page(_signed_in(app, "admin"), "/ui/ask"))
    assert '"id": "ask-q"' in page and '"id": "ask-go"' in page


def test_an_answer_comes_with_a_chart_and_the_query(app: FastAPI, ward: dict[str, uuid.UUID]) -> None:
    shown = _ask(_signed_in(app, "admin"), "Ann Example temperature between day 0 and 2")
    assert "Ann Example" in shown and "°C" in shown
    assert '"type": "scatter"' in shown  # the series drawn
    assert '\\"intent\\": \\"series\\"' in shown  # the query shown


def test_a_clinician_is_told_an_unseen_patient_is_not_found(app: FastAPI, ward: dict[str, uuid.UUID]) -> None:
    clinician = _signed_in(app, "clinician")
    assert "37.1" in _ask(clinician, "ann example temperature on day 1")
    refused = _ask(clinician, "bob example temperature on day 1")
    assert "found no entity matching" in refused and "37.1" not in refused


def test_a_ranking_is_drawn_as_bars_in_its_order_with_links(app: FastAPI, ward: dict[str, uuid.UUID]) -> None:
    shown = _ask(_signed_in(app, "admin"), "which patient has the highest temperature")
    assert '"type": "bar"' in shown
    assert "Ann Example and Bob Example have the highest temperature of 2 patients: 37.2 °C each" in shown  # a tie
    assert str(ward["ann"]) in shown and str(ward["bob"]) in shown  # linked
