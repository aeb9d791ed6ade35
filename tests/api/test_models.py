"""/models: training as a job, polled to its end; predictions, written back and explained; versions; who may
train, see and predict; and every bad request a problem, never a 5xx."""

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
from tests.models.clinics import LABELLED, TREATED, Clinics, populate, request

pytest.importorskip("torch_geometric")


@pytest.fixture
def trainer(app: FastAPI, settings: Settings) -> Iterator[Worker]:
    """A job worker in this process, on the app's sessions: it runs the trainings."""
    with Worker(settings, sessions=app.state.sessions) as running:
        yield running


@pytest.fixture
def clinics(app: FastAPI) -> Clinics:
    with app.state.sessions() as session, session.begin():
        return populate(session)


def submit(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/models", json=body)
    assert response.status_code == 202, response.text
    model: dict[str, Any] = response.json()
    assert response.headers["location"] == f"{API}/models/{model['id']}"
    return model


def trained(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    """A model submitted and polled (GET /models/{id}) until its training ended."""
    model_id = submit(client, body)["id"]

    def ended() -> dict[str, Any] | None:
        response = client.get(f"{API}/models/{model_id}")
        assert response.status_code == 200, response.text
        model: dict[str, Any] = response.json()
        return model if model["status"] in ("succeeded", "failed") else None

    return until(ended, what=f"model {model_id} training")


def job_of(client: TestClient, model: dict[str, Any]) -> dict[str, Any]:
    """The job that trained ``model``, once it has ended: the model's status commits in the job, a moment before
    the queue records the job's end."""

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"{API}/jobs/{model['job_id']}").json()
        return job if job["state"] not in ("queued", "running") else None

    return until(ended, what=f"job {model['job_id']}")


def predict(client: TestClient, model_id: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post(f"{API}/models/{model_id}/predict", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_train_poll_predict_and_write_back(client: TestClient, clinics: Clinics, trainer: Worker) -> None:
    queued = submit(client, request())
    assert (queued["status"], queued["version"], queued["metrics"], queued["data_version"]) == ("queued", 1, None, None)
    assert queued["shared"] and queued["target"] == {"attribute": "risk"} and queued["settings"]["epochs"] == 30
    model = until(lambda: (m := client.get(f"{API}/models/{queued['id']}").json())["status"] == "succeeded" and m)
    assert model["progress"] == 1.0 and model["metrics"]["test_accuracy"] >= 0.6 and model["data_version"]
    job = job_of(client, model)
    assert (job["kind"], job["state"], job["result"]["version"]) == ("models.train", "succeeded", 1)

    targets = [str(e) for e in clinics.unlabelled]
    answer = predict(client, model["id"], {"entity_ids": targets, "write_back": {"attribute": "predicted_risk"}})
    assert (answer["version"], answer["written"], answer["data_version"]) == (1, 10, model["data_version"])
    classes = [p["class"] for p in answer["predictions"]]
    assert sum(c == clinics.risk(LABELLED + i) for i, c in enumerate(classes)) >= 8
    assert answer["predictions"][0]["name"] == f"Pat {LABELLED}"
    written = client.get(f"{API}/entities/{targets[0]}").json()["attributes"]
    assert written == {"predicted_risk": classes[0]}
    audited = client.get(f"{API}/audit", params={"entity_id": targets[0]}).json()["items"]
    assert {(a["action"], a["resource"]) for a in audited} >= {("update", "entity"), ("read", "model")}


def test_each_training_of_a_name_is_a_new_version(client: TestClient, clinics: Clinics, trainer: Worker) -> None:
    first = trained(client, request())
    second = trained(client, request(settings={"epochs": 10, "hidden": 8, "literals": False}))
    assert (first["version"], second["version"]) == (1, 2)
    listed = client.get(f"{API}/models", params={"name": "risk"}).json()
    assert [m["version"] for m in listed["items"]] == [2, 1] and listed["next_cursor"] is None
    page = client.get(f"{API}/models", params={"limit": 1}).json()
    assert [m["version"] for m in page["items"]] == [2] and page["next_cursor"]
    rest = client.get(f"{API}/models", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [m["version"] for m in rest["items"]] == [1]
    assert predict(client, first["id"], {"kind": "patient"})["version"] == 1  # the old version still answers


def test_explanations_name_the_neighbours_the_caller_may_see(
    client: TestClient, clinics: Clinics, login_as: Callable[..., TestClient], trainer: Worker
) -> None:
    model = trained(client, request())
    patient = str(clinics.unlabelled[0])  # treated by Dr D, so the clinician sees it
    full = predict(client, model["id"], {"entity_ids": [patient], "explain": True, "top": 5})
    explanation = full["predictions"][0]["explanation"]
    assert explanation["method"] == "gradient × input on edge masks"
    assert "Heart clinic" in [n["name"] for n in explanation["neighbours"]]  # patient 30 attends it
    assert "attends" in [r["type"] for r in explanation["relations"]]
    first = explanation["edges"][0]
    assert {first["source"]["name"], first["target"]["name"]} & {"Pat 30", "Heart clinic", "Dr D"}

    clinician = login_as("clinician", entity_id=clinics.doctor)
    theirs = predict(clinician, model["id"], {"entity_ids": [patient], "explain": True, "top": 100})
    seen = {str(clinics.doctor), *(str(clinics.patients[i]) for i in TREATED)}
    edges = theirs["predictions"][0]["explanation"]["edges"]
    ends = [edge[end]["entity_id"] for edge in edges for end in ("source", "target")]
    assert ends and set(ends) <= seen  # no clinic, no untreated patient: not theirs to see
    assert {n["entity_id"] for n in theirs["predictions"][0]["explanation"]["neighbours"]} <= seen
    other = str(clinics.patients[LABELLED + 9])  # patient 39: not treated by Dr D
    predict(clinician, model["id"], {"entity_ids": [other]}, status=404)
    mine = predict(clinician, model["id"], {"kind": "patient"})
    assert {p["entity_id"] for p in mine["predictions"]} == {str(clinics.patients[i]) for i in TREATED}

    analyst = login_as("analyst")
    pseudonymous = predict(analyst, model["id"], {"entity_ids": [patient], "explain": True})
    names = [pseudonymous["predictions"][0]["name"]] + [
        n["name"] for n in pseudonymous["predictions"][0]["explanation"]["neighbours"] if n["kind"] == "patient"
    ]
    assert names and not any(name.startswith("Pat ") for name in names)


def test_who_may_train_see_and_write_back(
    client: TestClient, clinics: Clinics, login_as: Callable[..., TestClient], trainer: Worker
) -> None:
    for role in ("analyst", "viewer"):
        refused = login_as(role).post(f"{API}/models", json=request())
        assert refused.status_code == 403, refused.text
    clinician = login_as("clinician", entity_id=clinics.doctor)
    theirs = trained(clinician, request("mine"))
    assert theirs["status"] == "succeeded" and not theirs["shared"]
    # trained on what the clinician sees: patients 0..5 carry the labels
    assert theirs["metrics"]["train_size"] + theirs["metrics"]["test_size"] == 6
    assert client.get(f"{API}/models/{theirs['id']}").status_code == 200  # admins see every model
    colleague = login_as("clinician", entity_id=clinics.doctor)
    assert colleague.get(f"{API}/models/{theirs['id']}").status_code == 404
    assert colleague.get(f"{API}/models").json()["items"] == []
    predict(colleague, theirs["id"], {"kind": "patient"}, status=404)

    shared = trained(client, request())
    assert [m["id"] for m in colleague.get(f"{API}/models").json()["items"]] == [shared["id"]]
    body = {"entity_ids": [str(clinics.unlabelled[0])], "write_back": {"attribute": "predicted_risk"}}
    predict(login_as("viewer", entity_id=clinics.doctor), shared["id"], body, status=403)
    predict(login_as("analyst"), shared["id"], body, status=403)
    assert predict(colleague, shared["id"], body)["written"] == 1


def test_bad_requests_are_problems(client: TestClient, clinics: Clinics, app: FastAPI) -> None:
    def refused(body: dict[str, Any], status: int, says: str, path: str = "/models") -> None:
        response = client.post(f"{API}{path}", json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert says in response.json()["detail"], response.json()["detail"]

    refused(request(task="entity-clasification"), 422, "did you mean 'entity-classification'?")
    refused(request(target={"attribute": "colour"}), 422, "no patient entity that you may see has the attribute")
    refused(request(kind="clinic", target={"attribute": "floor"}), 422, "has the attribute 'floor'")
    one = {"labels": {"MRN-0": "high", "MRN-2": "high"}}
    refused(request(target=one), 422, "only the class 'high': a classifier needs at least 2 classes")
    refused(request(target={"attribute": "risk", "labels": {"MRN-0": "high"}}), 422, "not both")
    refused(request(kind=None, target={"attribute": "colour"}), 422, "no entity that you may see has the")
    refused(request(settings={"blocks": 3}), 422, "blocks (3) must divide hidden (16)")
    refused(request(as_of=3), 422, "ISO 8601")
    missing = "00000000-0000-4000-8000-000000000000"
    refused({"kind": "patient"}, 404, "does not exist", f"/models/{missing}/predict")
    assert client.get(f"{API}/models/{missing}").status_code == 404

    queued = submit(client, request())  # no worker runs it here
    refused({"kind": "patient"}, 409, "has queued", f"/models/{queued['id']}/predict")
    refused({"entity_ids": [missing], "kind": "patient"}, 422, "not both", f"/models/{queued['id']}/predict")


def test_predictions_refuse_what_the_model_cannot_answer(client: TestClient, clinics: Clinics, trainer: Worker) -> None:
    model = trained(client, request())
    path = f"/models/{model['id']}/predict"
    late = client.post(f"{API}/entities", json={"kind": "patient", "name": "Late"}).json()["id"]
    cases = [
        ({"entity_ids": [late]}, 422, "is not in the graph model risk (version 1) was trained on"),
        ({"write_back": {"attribute": "risk"}}, 422, "holds the labels model risk learnt from"),
        ({"kind": "patient", "explain": True}, 422, "explain takes at most 20 entities"),
        ({"entity_ids": ["00000000-0000-4000-8000-000000000000"]}, 404, "does not exist"),
    ]
    for body, status, says in cases:
        response = client.post(f"{API}{path}", json=body)
        assert response.status_code == status and says in response.json()["detail"], response.text


def test_a_training_that_fails_says_why(client: TestClient, clinics: Clinics, app: FastAPI, settings: Settings) -> None:
    """The labels are read again when the job runs: gone by then, the model fails, saying why."""
    queued = submit(client, request())
    for i in range(LABELLED):
        client.patch(f"{API}/entities/{clinics.patients[i]}", json={"attributes": {"risk": None}})
    with Worker(settings, sessions=app.state.sessions):
        failed = until(lambda: (m := client.get(f"{API}/models/{queued['id']}").json())["status"] == "failed" and m)
    assert "has the attribute 'risk'" in failed["error"] and failed["metrics"] is None
    predict(client, queued["id"], {"kind": "patient"}, status=409)
