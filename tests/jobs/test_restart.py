"""A job enqueued before a kill runs after restart: on the SQLite queue file, on Redis, and (with the queue in
memory) from the ``jobs`` table by the sweep; consumed by a worker in this process or by ``dust worker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dust.api.app import create_app
from dust.core.config import Settings
from dust.embedded import Dust
from dust.jobs import JobPublic, Worker, queue_for, records
from tests.api.conftest import API
from tests.jobs.conftest import SECONDS, until
from tests.reliability.server import SECRET, Server, admin_key, bearer

REDIS_URL = "redis://127.0.0.1:6379/0"  # each test database's queue has a name of its own on it
DUST = str(Path(sys.executable).parent / "dust")
ENQUEUE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from dust.embedded import Dust
    from dust.engine.anomalies import ScanRequest
    from dust.jobs import scans

    db = Dust(sys.argv[1], migrate=False)
    db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"]}]})
    patient = db.create_entity("patient", "Jane Doe")
    tensor = db.create_tensor(patient.id, "vitals")
    rng = np.random.default_rng(1)
    values = [
        {"time": t, "metric": metric, "value": float(base + spread * rng.standard_normal())}
        for t in range(80)
        for metric, base, spread in (("heart_rate", 70, 8), ("temperature", 37, 0.3))
    ]
    db.write_values(tensor.id, values)
    with db.session() as session:
        job = scans.submit(session, ScanRequest(detector="multivariate", tensor_id=tensor.id))
    print(job, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before any worker could run it: no clean-up, no shutdown
    """
)

# (queue, consumer): the SQLite file and Redis carry the message across the kill; in memory it dies with the
# process, and the worker's sweep finds the queued job in the jobs table.
CASES = [("file", "thread"), ("file", "dust worker"), ("redis", "dust worker"), ("memory", "thread")]


def queue_settings(database_url: str, queue: str, tmp_path: Path) -> Settings:
    extra: dict[str, Any] = {"redis_url": REDIS_URL} if queue == "redis" else {}
    if queue == "file":
        extra["jobs_path"] = str(tmp_path / "queue" / "jobs.db")
    return Settings(database_url=database_url, secret_key=SECRET, log_level="WARNING", **extra)


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    assert settings.secret_key is not None
    secret = settings.secret_key.get_secret_value()
    env.update(DUST_DATABASE_URL=settings.database_url, DUST_SECRET_KEY=secret, DUST_LOG_LEVEL="INFO")
    if settings.redis_url:
        env["DUST_REDIS_URL"] = settings.redis_url
    if settings.jobs_path:
        env["DUST_JOBS_PATH"] = settings.jobs_path
    return env


@pytest.fixture
def flushed() -> Iterator[list[Settings]]:
    """Settings whose queues are emptied before and after the test (a Redis queue outlives the test database)."""
    used: list[Settings] = []
    yield used
    for settings in used:
        queue_for(settings).huey.flush()


def state(settings: Settings, job_id: str) -> JobPublic:
    with Dust(settings.database_url, migrate=False) as db, db.session() as session:
        return records.get(session, uuid.UUID(job_id))


class CliWorker:
    """``dust worker`` as a real process, its log in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [DUST, "worker"], env=environment(settings), stdout=out, stderr=out, start_new_session=True
            )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=SECONDS)
            raise

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.mark.parametrize(("queue", "consumer"), CASES)
def test_a_job_enqueued_before_a_kill_runs_after_restart(
    database_url: str, queue: str, consumer: str, tmp_path: Path, flushed: list[Settings]
) -> None:
    if queue == "memory" and database_url.startswith("sqlite"):
        pytest.skip("a SQLite database file always has its queue file beside it")
    settings = queue_settings(database_url, queue, tmp_path)
    flushed.append(settings)
    queue_for(settings).huey.flush()
    script = tmp_path / "enqueue_and_die.py"
    script.write_text(ENQUEUE_AND_DIE)
    died = subprocess.run(
        [sys.executable, str(script), database_url],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    job_id = died.stdout.strip()
    assert state(settings, job_id).state == "queued"
    if queue != "memory":
        assert queue_for(settings).huey.pending_count() == 1  # the message itself survived the kill
    if consumer == "thread":
        with Worker(settings):
            job = until(lambda: (j := state(settings, job_id)).state == "succeeded" and j, what="the job succeeding")
    else:
        worker = CliWorker(settings, tmp_path / "worker.log")
        try:
            job = until(lambda: (j := state(settings, job_id)).state == "succeeded" and j, what="the job succeeding")
        finally:
            assert worker.stop() == 0, worker.text()
        assert "job succeeded" in worker.text() and "DUST worker stopped." in worker.text()
    assert (job.result, job.attempts) == ({"scored": 80, "flagged": 0}, 1)


def test_dust_worker_runs_what_the_app_submits_on_redis(
    settings: Settings, client: TestClient, tmp_path: Path, flushed: list[Settings]
) -> None:
    """The team's setup: servers submit to Redis, and `dust worker` processes run the jobs."""
    settings = settings.model_copy(update={"redis_url": REDIS_URL})
    flushed.append(settings)
    queue_for(settings).huey.flush()
    vitals = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
    assert client.post(f"{API}/schemas", json=vitals).status_code == 201
    patient = client.post(f"{API}/patients", json={"name": "Jane Doe"}).json()["id"]
    tensor = client.post(f"{API}/tensors", json={"entity_id": patient, "schema": "vitals"}).json()["id"]
    cells = [{"time": t, "metric": "heart_rate", "value": 70.0 + t % 3} for t in range(30)]
    assert client.post(f"{API}/tensors/{tensor}/values", json={"values": cells}).status_code == 200
    app = create_app(settings, migrate=False, run_jobs=True)  # with Redis, a server leaves the jobs to workers
    with TestClient(app) as server:
        server.headers["Authorization"] = client.headers["Authorization"]
        assert not [t for t in threading.enumerate() if t.name == "dust-jobs-keeper"]
        body = {"detector": "multivariate", "tensor_id": tensor}
        accepted = server.post(f"{API}/anomalies/scan?background=true", json=body)
        assert accepted.status_code == 202, accepted.text
        job_url = accepted.headers["location"]
        assert server.get(job_url).json()["state"] == "queued"
        worker = CliWorker(settings, tmp_path / "worker.log")
        try:
            job = until(lambda: (j := server.get(job_url).json())["state"] == "succeeded" and j, what="the job")
        finally:
            assert worker.stop() == 0, worker.text()
    assert job["result"] == {"scored": 30, "flagged": 0}


def test_dust_worker_refuses_a_queue_only_its_own_process_could_reach() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    env.update(DUST_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none", DUST_SECRET_KEY=SECRET)
    done = subprocess.run([DUST, "worker"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Set DUST_REDIS_URL (a team's shared queue) or DUST_JOBS_PATH" in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_dust_serve_runs_jobs_itself_on_the_embedded_default(tmp_path: Path, workers: int) -> None:
    """No Redis, no `dust worker`: the server consumes the SQLite queue beside its database (with --workers 2,
    one of its processes does)."""
    url = f"sqlite:///{tmp_path / 'dust.db'}"
    key = admin_key(url)
    with Server(url, workers=workers, DUST_LOG_LEVEL="WARNING") as server:
        api = server.start()
        with httpx.Client(base_url=api, headers=bearer(key), timeout=30) as http:
            vitals = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
            assert http.post("/schemas", json=vitals).status_code == 201
            patient = http.post("/patients", json={"name": "Jane Doe"}).json()["id"]
            tensor = http.post("/tensors", json={"entity_id": patient, "schema": "vitals"}).json()["id"]
            cells = [{"time": t, "metric": "heart_rate", "value": 70.0 + t % 3} for t in range(30)]
            assert http.post(f"/tensors/{tensor}/values", json={"values": cells}).status_code == 200
            body = {"detector": "multivariate", "tensor_id": tensor}
            job_ids = [http.post("/anomalies/scan?background=true", json=body).json()["job_id"] for _ in range(4)]
            for job_id in job_ids:
                job = until(lambda j=job_id: (b := http.get(f"/jobs/{j}").json())["state"] == "succeeded" and b)
                assert job["result"] == {"scored": 30, "flagged": 0}
