"""The worker: started only where asked, one consumer of a SQLite queue among a server's processes, and a stop
that lets the jobs running finish."""

from __future__ import annotations

import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.api.app import create_app
from dust.core.config import Settings
from dust.jobs import Worker, records, submit
from tests.jobs.conftest import GATES, finished, job, until

KEEPER = "dust-jobs-keeper"


def keepers() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == KEEPER)


def test_an_app_consumes_jobs_only_when_asked(settings: Settings) -> None:
    before = keepers()
    with TestClient(create_app(settings, migrate=False)):
        assert keepers() == before  # the many apps of the tests start no threads of their own
    serving = create_app(settings, migrate=False, run_jobs=True)  # as `dust serve` makes it
    with TestClient(serving):
        assert keepers() == before + 1
        with serving.state.sessions() as session, session.begin():
            job_id = submit(session, "tests.count", {"token": "served"})
        assert finished(serving, job_id).state == "succeeded"
    assert keepers() == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_of_two_exclusive_workers_one_consumes_and_the_other_takes_over(
    settings: Settings, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the processes of `dust serve --workers 2` on one SQLite queue."""
    monkeypatch.setattr(records, "HEARTBEAT_SECONDS", 0.05)
    first = Worker(settings, exclusive=True).start()
    second = Worker(settings, exclusive=True).start()
    try:
        assert first.consuming and not second.consuming
        first.stop()
        until(lambda: second.consuming, what="the second worker taking over")
        with app.state.sessions() as session, session.begin():
            job_id = submit(session, "tests.count", {"token": "taken over"})
        assert finished(app, job_id).state == "succeeded"
    finally:
        first.stop()
        second.stop()


def test_stopping_lets_a_running_job_finish(app: FastAPI, settings: Settings, gate: str) -> None:
    worker = Worker(settings, sessions=app.state.sessions).start()
    with app.state.sessions() as session, session.begin():
        job_id = submit(session, "tests.wait", {"gate": gate})
    until(lambda: job(app, job_id).state == "running")
    threading.Timer(0.3, GATES[gate].set).start()
    worker.stop(timeout=30)
    done = job(app, job_id)
    assert (done.state, done.result) == ("succeeded", {"waited": gate})
