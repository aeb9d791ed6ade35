"""/jobs and background anomaly scans: who sees a job, and a scan in the background answers as in the foreground."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.jobs import Worker, submit
from tests.anomalies.test_multivariate import vitals
from tests.api.conftest import API, ONE_BACKEND, World
from tests.api.test_anomalies import DAY, RELATIONAL
from tests.jobs.conftest import GATES, finished, until


def background_scan(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post(f"{API}/anomalies/scan", params={"background": "true"}, json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted == {"job_id": accepted["job_id"], "kind": "anomalies.scan", "state": "queued"}
    assert response.headers["location"] == f"{API}/jobs/{accepted['job_id']}"
    return str(accepted["job_id"])


def done(client: TestClient, job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        response = client.get(f"{API}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["state"] in ("succeeded", "failed") else None

    return until(ended, what=f"job {job_id} ending")


def write_vitals(client: TestClient, tensor_id: str) -> None:
    values = vitals()
    cells = [
        {"time": t, "metric": label, "value": float(values[t, k])}
        for t in range(len(values))
        for k, label in enumerate(("heart_rate", "temperature"))
    ]
    assert client.post(f"{API}/tensors/{tensor_id}/values", json={"values": cells}).status_code == 200


def test_a_background_scan_gives_the_foreground_result(client: TestClient, world: World, worker: Worker) -> None:
    write_vitals(client, world["TPA"])
    body = {"detector": "multivariate", "tensor_id": world["TPA"]}
    foreground = client.post(f"{API}/anomalies/scan", json=body)
    assert foreground.status_code == 200, foreground.text
    flagged_before = client.get(f"{API}/anomalies").json()["items"]
    job = done(client, background_scan(client, body))
    assert (job["state"], job["kind"], job["error"]) == ("succeeded", "anomalies.scan", None)
    assert job["result"] == foreground.json() == {"scored": 80, "flagged": 1}
    after = client.get(f"{API}/anomalies").json()["items"]
    assert [(a["time_index"], a["detector"]) for a in after] == [
        (a["time_index"], a["detector"]) for a in flagged_before
    ]


def test_a_clinicians_background_scan_sees_only_what_they_may(
    client: TestClient, world: World, wards: dict[str, str], login_as: Callable[..., TestClient], worker: Worker
) -> None:
    """As test_a_clinicians_relational_scan_compares_only_with_patients_they_may_see, run as a job."""
    alice = login_as("clinician", entity_id=world["A"])
    job = done(alice, background_scan(alice, {**RELATIONAL, "from": DAY}))
    assert (job["state"], job["result"]) == ("succeeded", {"scored": 4, "flagged": 1})
    audited = client.get(f"{API}/audit", params={"user": alice.get(f"{API}/auth/me").json()["username"]}).json()
    scans = [a for a in audited["items"] if a["resource"] == "anomaly"]
    assert scans and all(a["method"] == "JOB" and a["path"] == f"{API}/jobs/{job['id']}" for a in scans)
    everyone = done(client, background_scan(client, {**RELATIONAL, "from": DAY}))
    assert everyone["result"] == {"scored": 7, "flagged": 0}


def test_a_background_scan_that_fails_says_why(client: TestClient, world: World, worker: Worker) -> None:
    job = done(client, background_scan(client, {"tensor_id": world["TPA"], "label": "heart_rate"}))
    assert job["state"] == "failed"
    assert job["error"] == (
        "label 'heart_rate' of schema 'vitals' has no anomaly rule; PUT /anomalies/rules/vitals/heart_rate first"
    )


def test_a_disabled_users_job_fails_rather_than_run_with_their_old_access(
    client: TestClient, world: World, app: FastAPI, login_as: Callable[..., TestClient], settings: Any
) -> None:
    alice = login_as("clinician", entity_id=world["A"])
    job_id = background_scan(alice, {"detector": "multivariate", "tensor_id": world["TPA"]})
    me = alice.get(f"{API}/auth/me").json()
    assert client.patch(f"{API}/users/{me['id']}", json={"disabled": True}).status_code == 200
    with Worker(settings, sessions=app.state.sessions):
        job = done(client, job_id)
    assert (job["state"], job["error"]) == ("failed", "the user who submitted this job no longer exists or is disabled")


@ONE_BACKEND
def test_a_bad_background_scan_is_refused_at_once(client: TestClient) -> None:
    response = client.post(f"{API}/anomalies/scan", params={"background": "true"}, json={"label": "x"})
    assert response.status_code == 422
    assert "give either tensor_id or schema" in response.text
    assert client.get(f"{API}/jobs").json()["items"] == []


def _submitted_by(app: FastAPI, user_id: str | None, kind: str = "tests.count") -> str:
    with app.state.sessions() as session, session.begin():
        return str(submit(session, kind, {"token": uuid.uuid4().hex}, created_by=user_id))


def test_a_job_is_seen_by_its_submitter_and_admins_and_by_no_one_else(
    app: FastAPI, client: TestClient, login_as: Callable[..., TestClient]
) -> None:
    alice, bob = login_as("clinician"), login_as("viewer")
    job_id = _submitted_by(app, alice.get(f"{API}/auth/me").json()["id"])
    for reader in (alice, client):
        shown = reader.get(f"{API}/jobs/{job_id}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["id"] == job_id and shown.json()["state"] == "queued"
    hidden, missing = bob.get(f"{API}/jobs/{job_id}"), bob.get(f"{API}/jobs/{uuid.uuid4()}")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == f"job {job_id} does not exist"  # worded as for an id that is not there
    assert hidden.json().keys() == missing.json().keys()
    assert alice.get(f"{API}/jobs").status_code == 403  # the list is for admins


def test_a_job_reads_as_documented(app: FastAPI, client: TestClient) -> None:
    job_id = _submitted_by(app, None)
    assert set(client.get(f"{API}/jobs/{job_id}").json()) == {
        "id",
        "kind",
        "state",
        "progress",
        "message",
        "result",
        "error",
        "attempts",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    }


def test_admins_list_jobs_newest_first_by_state_and_kind_page_by_page(
    app: FastAPI, client: TestClient, worker: Worker, gate: str
) -> None:
    ids = [_submitted_by(app, None) for _ in range(3)]
    for job_id in ids:
        finished(app, job_id)
    with app.state.sessions() as session, session.begin():
        waiting = str(submit(session, "tests.wait", {"gate": gate}))
    until(lambda: client.get(f"{API}/jobs/{waiting}").json()["state"] == "running")
    listed = client.get(f"{API}/jobs", params={"limit": 2})
    assert listed.status_code == 200, listed.text
    first = listed.json()
    rest = client.get(f"{API}/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [j["id"] for j in first["items"] + rest["items"]] == [waiting, *reversed(ids)]
    assert rest["next_cursor"] is None
    running = client.get(f"{API}/jobs", params={"state": "running"}).json()["items"]
    assert [j["id"] for j in running] == [waiting]
    assert [j["id"] for j in client.get(f"{API}/jobs", params={"kind": "tests.wait"}).json()["items"]] == [waiting]
    GATES[gate].set()
    finished(app, waiting)


@ONE_BACKEND
@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"state": "done"}, "Input should be 'queued', 'running', 'succeeded' or 'failed'"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"cursor": "nonsense"}, "cursor is not one this list returned"),
    ],
)
def test_a_bad_job_list_query_says_what_is_allowed(client: TestClient, query: dict[str, Any], detail: str) -> None:
    response = client.get(f"{API}/jobs", params=query)
    assert response.status_code == 422
    assert detail in response.text


@ONE_BACKEND
def test_a_malformed_job_id_is_refused(client: TestClient) -> None:
    assert client.get(f"{API}/jobs/not-a-uuid").status_code == 422
