"""Jobs: submitted in a transaction, claimed once, run with progress, recorded as succeeded or failed; and the
sweep that takes back the jobs of workers that are gone."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from dust.core.config import Settings
from dust.jobs import Worker, records, submit
from dust.storage.db import make_sessionmaker
from dust.storage.models import Job, utcnow
from tests.jobs.conftest import GATES, RUNS, finished, job, until


def submitted(app: FastAPI, kind: str, payload: dict[str, object]) -> uuid.UUID:
    with app.state.sessions() as session, session.begin():
        return submit(session, kind, payload)


def test_a_job_moves_from_queued_to_running_to_succeeded_with_its_progress_visible(
    app: FastAPI, settings: Settings, gate: str
) -> None:
    job_id = submitted(app, "tests.wait", {"gate": gate})
    queued = job(app, job_id)
    assert (queued.state, queued.progress, queued.attempts, queued.started_at) == ("queued", 0.0, 0, None)
    with Worker(settings, sessions=app.state.sessions):
        running = until(lambda: (j := job(app, job_id)).state == "running" and j.message == "halfway" and j)
        assert (running.progress, running.attempts, running.finished_at) == (0.5, 1, None)
        assert running.started_at is not None
        GATES[gate].set()
        done = finished(app, job_id)
    assert (done.state, done.progress, done.result, done.error) == ("succeeded", 1.0, {"waited": gate}, None)
    assert done.finished_at is not None and done.started_at is not None
    assert done.created_at <= done.started_at <= done.finished_at


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({}, "label 'pulse' is not one of the schema's labels"),
        ({"unexpected": True}, "an unexpected error stopped the job; the worker's log has the details (job "),
    ],
)
def test_a_failing_job_records_its_error(app: FastAPI, worker: Worker, payload: dict[str, object], error: str) -> None:
    job_id = submitted(app, "tests.fail", payload)
    done = finished(app, job_id)
    assert (done.state, done.result, done.attempts) == ("failed", None, 1)
    assert done.error is not None and done.error.startswith(error)
    assert "hunter2" not in done.error  # what an unexpected error says stays in the worker's log


def test_a_duplicate_message_runs_the_job_once(app: FastAPI, worker: Worker) -> None:
    token = uuid.uuid4().hex
    job_id = submitted(app, "tests.count", {"token": token})
    for _ in range(3):  # as a sweep, or a queue that delivers twice, would
        worker.queue.send("jobs.run", [str(job_id)])
    assert finished(app, job_id).result == {"runs": 1}
    worker.queue.send("jobs.run", [str(job_id)])  # and once it is done
    until(lambda: worker.queue.huey.pending_count() == 0, what="the queue emptying")
    assert RUNS[token] == 1


def test_a_job_of_a_rolled_back_transaction_never_runs(app: FastAPI, worker: Worker) -> None:
    token = uuid.uuid4().hex
    with app.state.sessions() as session:
        session.begin()
        job_id = submit(session, "tests.count", {"token": token})
        session.rollback()
    after = submitted(app, "tests.count", {"token": token + "-after"})  # a job after it, to know the worker got here
    finished(app, after)
    assert RUNS[token] == 0
    with app.state.sessions() as session:
        assert session.get(Job, job_id) is None


def test_an_unknown_kind_is_refused_when_submitted(app: FastAPI) -> None:
    with (
        app.state.sessions() as session,
        session.begin(),
        pytest.raises(LookupError, match=r"no job kind 'tests\.nope'"),
    ):
        submit(session, "tests.nope", {})


def _left_running(app: FastAPI, job_id: uuid.UUID, *, worker: str, attempts: int, beat_ago: float) -> None:
    """As a worker that claimed the job and then stopped would leave it."""
    with app.state.sessions() as session, session.begin():
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                state="running",
                attempts=attempts,
                worker=worker,
                heartbeat_at=utcnow() - timedelta(seconds=beat_ago),
                started_at=utcnow(),
            )
        )


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


@pytest.mark.parametrize("how", ["dead process", "silent too long"])
def test_a_job_left_running_by_a_worker_that_is_gone_runs_again(app: FastAPI, settings: Settings, how: str) -> None:
    token = uuid.uuid4().hex
    job_id = submitted(app, "tests.count", {"token": token})
    if how == "dead process":
        _left_running(app, job_id, worker=f"{records.HOST}:{_dead_pid()}", attempts=1, beat_ago=1)
    else:
        _left_running(app, job_id, worker="elsewhere:1", attempts=1, beat_ago=records.STALE_SECONDS + 5)
    with Worker(settings, sessions=app.state.sessions):
        done = finished(app, job_id)
    assert (done.state, done.result, done.attempts) == ("succeeded", {"runs": 1}, 2)


def test_a_job_left_running_by_a_live_worker_is_left_alone(app: FastAPI, settings: Settings) -> None:
    token = uuid.uuid4().hex
    job_id = submitted(app, "tests.count", {"token": token})
    _left_running(app, job_id, worker="elsewhere:1", attempts=1, beat_ago=1)  # another host, beating
    with Worker(settings, sessions=app.state.sessions, threads=1) as worker:  # one thread: in order
        worker.queue.send("jobs.run", [str(job_id)])  # its message again: the claim refuses it
        finished(app, submitted(app, "tests.count", {"token": token + "-after"}))
    assert job(app, job_id).state == "running" and RUNS[token] == 0


def test_a_job_whose_workers_keep_dying_fails_after_three_starts(app: FastAPI, settings: Settings) -> None:
    job_id = submitted(app, "tests.count", {"token": uuid.uuid4().hex})
    _left_running(app, job_id, worker="elsewhere:1", attempts=records.MAX_ATTEMPTS, beat_ago=1e6)
    with Worker(settings, sessions=app.state.sessions):
        done = finished(app, job_id)
    assert done.state == "failed" and done.attempts == records.MAX_ATTEMPTS
    assert done.error == "its worker stopped while running it, 3 times (killed, or out of memory?)"


def test_a_queued_job_whose_message_was_lost_runs_when_a_worker_starts(app: FastAPI, settings: Settings) -> None:
    token = uuid.uuid4().hex
    job_id = submitted(app, "tests.count", {"token": token})
    app.state.jobs.huey.flush()  # the message lost (an in-memory queue and a restart, a crash before enqueue)
    with Worker(settings, sessions=app.state.sessions):
        assert finished(app, job_id).result == {"runs": 1}


def test_sweep_hooks_are_called_when_a_worker_starts(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dust.jobs import registry

    called: list[object] = []
    monkeypatch.setitem(registry._sweeps, "tests", lambda context: called.append(context.settings))
    with Worker(settings, sessions=app.state.sessions):
        until(lambda: called, what="the hook being called")
    assert called == [settings]


def test_a_job_whose_message_never_reached_the_queue_runs_all_the_same(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the queue (Redis) was away at the commit: the running worker's sweep finds the job queued, with the
    queue empty, and sends it again."""
    for name, seconds in (("HEARTBEAT_SECONDS", 0.05), ("SWEEP_SECONDS", 0.1), ("STALE_SECONDS", 0.3)):
        monkeypatch.setattr(records, name, seconds)
    with Worker(settings, sessions=app.state.sessions):
        with make_sessionmaker(app.state.engine)() as session, session.begin():  # a session with no queue
            job_id = submit(session, "tests.count", {"token": uuid.uuid4().hex})
        assert finished(app, job_id).result == {"runs": 1}
