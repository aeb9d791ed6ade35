"""The Models page as the browser asks for it (Dash's callback route), on SQLite and PostgreSQL: who may train, a
training submitted through the page and run by a job worker, its metrics, predictions with an explanation and a
write-back, a link-prediction model's ranking metrics and likeliest targets, and refusals in the API's own words."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.config import Settings
from dust.core.security import Role
from dust.engine import entities, users
from dust.engine.entities import EntityCreate
from dust.engine.users import UserCreate
from dust.jobs import Worker
from tests.jobs.conftest import until
from tests.models.clinics import LABELLED, TREATED, Clinics, populate
from tests.ui.test_pages import HERE, PASSWORD, _page, _signed_in

pytest.importorskip("torch_geometric")

TRAIN = ["train-name", "train-task", "train-kind", "train-attribute", "train-types", "train-epochs", "train-seed"]


@pytest.fixture
def clinics(app: FastAPI) -> Clinics:
    """The care network of the registry's tests (risk told by the clinic attended), two nurses on the same shift,
    and a user of each role; the clinician is Dr D, who treats patients 0..5 and 30..35."""
    with app.state.sessions() as session, session.begin():
        network = populate(session)
        for name in ("Nurse A", "Nurse B"):
            entities.create(session, EntityCreate(kind="nurse", name=name, attributes={"shift": "day"}))
        for role, linked in (("admin", None), ("clinician", network.doctor), ("analyst", None)):
            users.create(
                session, UserCreate(username=f"ui-{role}", password=PASSWORD, role=Role(role), entity_id=linked)
            )
    return network


@pytest.fixture
def trainer(app: FastAPI, settings: Settings) -> Iterator[Worker]:
    """A job worker in this process, on the app's sessions: it runs the trainings the page submits."""
    with Worker(settings, sessions=app.state.sessions) as running:
        yield running


def _key(id_: Any) -> str:
    return json.dumps(id_, separators=(",", ":"), sort_keys=True) if isinstance(id_, dict) else str(id_)


def _call(
    client: TestClient,
    outputs: list[tuple[str, str]],
    inputs: list[Any],
    state: list[tuple[str, str, Any]] | None = None,
) -> dict[str, Any]:
    """One callback as Dash's renderer calls it; ``inputs`` are (id, property, value) or, for an ALL pattern, a list
    of them. The first input is the one that changed. Its outputs by id: {id: {property: value}}."""

    def prop(item: tuple[Any, str, Any]) -> dict[str, Any]:
        return {"id": item[0], "property": item[1], "value": item[2]}

    first = inputs[0][0] if isinstance(inputs[0], list) else inputs[0]
    outs = [{"id": i, "property": p} for i, p in outputs]
    names = [f"{_key(i)}.{p}" for i, p in outputs]
    body = {
        "output": f"..{'...'.join(names)}.." if len(outputs) > 1 else names[0],
        "outputs": outs if len(outputs) > 1 else outs[0],
        "inputs": [[prop(i) for i in item] if isinstance(item, list) else prop(item) for item in inputs],
        "state": [prop(s) for s in state or []],
        "changedPropIds": [f"{_key(first[0])}.{first[1]}"],
    }
    answer = client.post("/ui/_dash-update-component", json=body, headers={"Origin": HERE})
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _cells(shown: str) -> list[str]:
    """The words a rendered layout shows (a table's cells, say): what a failed assertion should print."""
    return re.findall(r'"children": "([^"]*)"', shown)


def train(
    client: TestClient,
    name: str,
    kind: str | None,
    attribute: str | None,
    epochs: int = 10,
    task: str = "entity-classification",
    relations: list[str] | None = None,
) -> dict[str, Any]:
    """The training form submitted: what the page says and the new model's id (the list's refresh trigger)."""
    values = [name, task, kind, attribute, None, epochs, 0]
    return _call(
        client,
        [("train-msg", "children"), ("models-changed", "data")],
        [("train-go", "n_clicks", 1), ("train-form", "n_submit", None)],
        [
            *((field, "value", value) for field, value in zip(TRAIN, values, strict=True)),
            ("train-as-of", "value", None),
            ("train-relations", "value", relations),
        ],
    )


def listing(client: TestClient) -> tuple[str, bool]:
    """The models list as its 2 s refresh draws it, and whether it keeps refreshing."""
    answer = _call(
        client,
        [("models-list", "children"), ("models-live", "disabled")],
        [("models-live", "n_intervals", 1), ("models-changed", "data", None)],
    )
    return _text(answer["models-list"]["children"]), not answer["models-live"]["disabled"]


def predict(client: TestClient, model_id: str, picked: list[str] | None = None) -> tuple[str, Any]:
    answer = _call(
        client,
        [("predict-out", "children"), ("predict-ids", "data")],
        [("predict-go", "n_clicks", 1)],
        [("predict-entities", "value", picked), ("model-ref", "data", {"id": model_id, "kind": "patient"})],
    )
    return _text(answer["predict-out"]["children"]), answer["predict-ids"]["data"]


def test_each_role_sees_what_the_registry_allows(app: FastAPI, clinics: Clinics) -> None:
    for role in ("admin", "clinician"):
        page = _text(_page(_signed_in(app, role), "/ui/models"))
        assert '"train-go"' in page and "Train a model" in page, role
        assert "No models yet" in page
    admin = _text(_page(_signed_in(app, "admin"), "/ui/models"))
    assert '"risk"' in admin and '"shift"' in _text(_attributes(_signed_in(app, "admin"), "nurse"))
    analyst = _text(_page(_signed_in(app, "analyst"), "/ui/models"))
    assert "You may not train models: you are signed in as an analyst, who can read but not change data" in analyst
    assert '"train-go"' not in analyst


def _attributes(client: TestClient, kind: str) -> Any:
    answer = _call(
        client,
        [("train-attribute", "options"), ("train-attribute", "value")],
        [("train-kind", "value", kind)],
        [("train-attribute", "value", "risk")],
    )
    assert answer["train-attribute"]["value"] is None  # nurses have no risk
    return answer["train-attribute"]["options"]


def test_a_refused_training_shows_the_apis_words(app: FastAPI, clinics: Clinics) -> None:
    admin = _signed_in(app, "admin")
    said = _text(train(admin, "shifts", "nurse", "shift")["train-msg"]["children"])
    assert "the labels hold only the class 'day': a classifier needs at least 2 classes" in said
    said = _text(train(admin, "risk", "doctor", "risk")["train-msg"]["children"])
    assert "no doctor entity that you may see has the attribute 'risk'" in said
    said = _text(train(admin, "bad name!", "patient", "risk")["train-msg"]["children"])
    assert "name: String should match pattern" in said
    refused = train(_signed_in(app, "analyst"), "risk", "patient", "risk")  # a crafted call: the registry says no
    assert "who can read but not change data" in _text(refused["train-msg"]["children"])
    assert listing(admin)[0].count("No models yet") == 1  # nothing was queued


def test_a_queued_model_shows_its_progress_and_the_page_follows_it(app: FastAPI, clinics: Clinics) -> None:
    admin = _signed_in(app, "admin")  # no worker here: the training stays queued
    model_id = train(admin, "risk", "patient", "risk")["models-changed"]["data"]
    shown, live = listing(admin)
    assert live and "queued" in shown and '"type": "Progress"' in shown and "waiting for a worker" in shown
    page = _page(admin, f"/ui/models/{model_id}")
    assert "Its metrics show here once it has trained" in _text(page) and '"predict-go"' not in _text(page)
    assert _props(page, "model-live")["disabled"] is False  # its 2 s refresh runs


def _props(tree: Any, id_: str) -> dict[str, Any]:
    """The properties of the component ``id_`` in a layout as Dash sends it."""
    if isinstance(tree, list):
        found = [p for item in tree if (p := _props(item, id_))]
        return found[0] if found else {}
    if not isinstance(tree, dict) or "props" not in tree:
        return {}
    if tree["props"].get("id") == id_:
        return tree["props"]  # type: ignore[no-any-return]
    return _props(list(tree["props"].values()), id_)


def test_a_model_trained_through_the_page_shows_its_metrics_and_predicts(
    app: FastAPI, clinics: Clinics, trainer: Worker
) -> None:
    admin = _signed_in(app, "admin")
    submitted = train(admin, "risk", "patient", "risk", epochs=30)
    assert "Training risk, version 1" in _text(submitted["train-msg"]["children"])
    model_id = submitted["models-changed"]["data"]

    def ended() -> str | None:
        shown, live = listing(admin)
        return shown if not live else None

    shown = until(ended, what="the page's model training")
    assert "succeeded" in shown and f"/ui/models/{model_id}" in shown and "ui-admin" in shown, _cells(shown)

    page = _text(_page(admin, f"/ui/models/{model_id}"))
    for said in ("Test accuracy", "Train accuracy", "high (15)", "low (15)", "24 / 6", "Seconds per epoch"):
        assert said in page, said
    assert "attribute risk" in page and "epochs 30" in page and '"predict-go"' in page and '"writeback-go"' in page

    table, asked = predict(admin, model_id, [str(p) for p in clinics.unlabelled])
    assert "10 predictions" in table and f"Pat {LABELLED}" in table and '"model-explain"' in table
    assert f"/ui/entity/{clinics.unlabelled[0]}" in table

    ref = {"id": model_id, "kind": "patient"}
    button = {"type": "model-explain", "id": str(clinics.unlabelled[0])}
    explained = _call(admin, [("explain-out", "children")], [[(button, "n_clicks", 1)]], [("model-ref", "data", ref)])
    why = _text(explained["explain-out"]["children"])
    assert "Why " in why and "attends" in why and "Heart clinic" in why and '"type": "bar"' in why

    wrote = _call(
        admin,
        [("writeback-msg", "children")],
        [("writeback-go", "n_clicks", 1)],
        [("writeback-attr", "value", "predicted_risk"), ("predict-ids", "data", asked), ("model-ref", "data", ref)],
    )
    assert "Wrote predicted_risk on 10 entities" in _text(wrote["writeback-msg"]["children"])
    with app.state.sessions() as session:
        assert "predicted_risk" in entities.get(session, clinics.unlabelled[0]).attributes

    clinician = _signed_in(app, "clinician")  # an admin's model is shared: theirs to predict with, on their patients
    assert "succeeded" in listing(clinician)[0]
    assert f"{len(TREATED)} predictions" in predict(clinician, model_id)[0]

    analyst = _signed_in(app, "analyst")
    page = _text(_page(analyst, f"/ui/models/{model_id}"))
    assert '"predict-go"' in page and '"writeback-go"' not in page
    table, _ = predict(analyst, model_id, [str(p) for p in clinics.unlabelled])
    assert "10 predictions" in table and "Pat " not in table  # de-identified


def test_a_link_model_shows_its_ranking_metrics_and_an_entitys_likeliest_targets(
    app: FastAPI, clinics: Clinics, trainer: Worker
) -> None:
    admin = _signed_in(app, "admin")
    fields = [("train-attribute-col", "style"), ("train-kind", "disabled"), ("train-relations-col", "style")]
    shown = _call(admin, [*fields, ("train-epochs", "value")], [("train-task", "value", "link-prediction")])
    assert shown["train-relations-col"]["style"] == {} and shown["train-attribute-col"]["style"] == {"display": "none"}
    assert shown["train-kind"]["disabled"] is True and shown["train-epochs"]["value"] == 500  # the task's default
    said = _text(train(admin, "attends", None, None, task="link-prediction")["train-msg"]["children"])
    assert "pick its relation types" in said
    submitted = train(admin, "attends", "patient", None, epochs=20, task="link-prediction", relations=["attends"])
    model_id = submitted["models-changed"]["data"]

    def ended() -> str | None:
        shown, live = listing(admin)
        return shown if not live else None

    shown = until(ended, what="the link model's training")
    assert "succeeded" in shown and "MRR 0." in shown, _cells(shown)

    page = _text(_page(admin, f"/ui/models/{model_id}"))
    for said in ("Filtered MRR", "A random scorer's MRR", "Hits@10", "relations attends", '"link-go"', '"link-type"'):
        assert said in page, said
    assert '"predict-go"' not in page

    def targets(client: TestClient, source: Any, k: int = 3) -> str:
        ref = {"id": model_id, "kind": None, "task": "link-prediction"}
        state = [("link-source", "value", str(source)), ("link-type", "value", "attends"), ("link-top", "value", k)]
        answer = _call(
            client, [("link-out", "children")], [("link-go", "n_clicks", 1)], [*state, ("model-ref", "data", ref)]
        )
        return _text(answer["link-out"]["children"])

    table = targets(admin, clinics.patients[0])
    assert "The 3 likeliest targets of Pat 0 by attends" in table and table.count("/ui/entity/") == 3
    clinician = _signed_in(app, "clinician")  # sees Dr D and the patients he treats: never a clinic
    theirs = targets(clinician, clinics.patients[0], k=100)
    assert "Heart clinic" not in theirs and "Lung clinic" not in theirs and "Pat 1" in theirs
    assert "does not exist" in targets(clinician, clinics.patients[LABELLED + 9])  # not one of his patients
