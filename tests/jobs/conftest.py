"""Fixtures of the job layer's tests: a worker in this process on the test's database, and job kinds and a task
that the tests steer (a gate to hold a job running, a counter of runs)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from dust import jobs
from dust.core.config import Settings
from dust.core.errors import InvalidInput
from dust.jobs import JobPublic, JobRun, Worker, records
from tests.api.conftest import world  # noqa: F401 (fixtures of the API tests that these tests use too)
from tests.api.test_anomalies import wards  # noqa: F401

SECONDS = 20  # longest a test waits for a job (they take well under a second)
GATES: dict[str, threading.Event] = {}  # "tests.wait" jobs hold until their gate opens
RUNS: Counter[str] = Counter()  # runs of "tests.count" jobs by their payload's token
RECEIVED: list[tuple[Any, ...]] = []  # what "tests.record" tasks were given


@jobs.kind("tests.wait")
def wait(run: JobRun, payload: dict[str, Any]) -> dict[str, Any]:
    run.progress(0.5, "halfway")
    assert GATES[payload["gate"]].wait(SECONDS)
    return {"waited": payload["gate"]}


@jobs.kind("tests.fail")
def fail(run: JobRun, payload: dict[str, Any]) -> None:
    if payload.get("unexpected"):
        raise RuntimeError("secret internals: password=hunter2")
    raise InvalidInput("label 'pulse' is not one of the schema's labels")


@jobs.kind("tests.count")
def count(run: JobRun, payload: dict[str, Any]) -> dict[str, Any]:
    RUNS[payload["token"]] += 1
    return {"runs": RUNS[payload["token"]]}


@jobs.task("tests.record")
def record(context: jobs.Context, *args: Any) -> None:
    RECEIVED.append(args)


def until(check: Callable[[], Any], seconds: float = SECONDS, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} did not hold within {seconds} s")


def job(app: FastAPI, job_id: uuid.UUID | str) -> JobPublic:
    """The job as the process sees it (no principal: full access)."""
    with app.state.sessions() as session, session.begin():
        return records.get(session, uuid.UUID(str(job_id)))


def finished(app: FastAPI, job_id: uuid.UUID | str) -> JobPublic:
    return until(lambda: (j := job(app, job_id)).state in ("succeeded", "failed") and j, what=f"job {job_id} ending")


@pytest.fixture
def worker(app: FastAPI, settings: Settings) -> Iterator[Worker]:
    """A worker consuming the test database's queue in this process (on the app's sessions)."""
    RECEIVED.clear()
    with Worker(settings, sessions=app.state.sessions) as running:
        yield running


@pytest.fixture
def gate() -> Iterator[str]:
    """A gate for a "tests.wait" job; opened at the end of the test whatever happens, so no worker waits on."""
    name = uuid.uuid4().hex
    GATES[name] = threading.Event()
    yield name
    GATES.pop(name).set()
