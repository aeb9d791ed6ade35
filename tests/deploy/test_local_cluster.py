"""deploy/local-cluster: nginx → two `dust serve` replicas → PostgreSQL and Redis, and a `dust worker`, on loopback.

One cluster for the module (starting one takes seconds); the tests run in file order, the last two stopping parts
of it. Its database is a throwaway one on the PostgreSQL of DUST_TEST_POSTGRES_URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.conftest import NO_POSTGRES, POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-cluster"
REDIS_URL = "redis://127.0.0.1:6379/0"  # the queue's name on it is the database's own
SECONDS = 30


@dataclass
class Cluster:
    run: Path
    balancer: str
    replicas: list[str]
    token: str
    tensor: str = ""

    def client(self, base: str) -> httpx.Client:
        return httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.run / "state.json").read_text())
        return state


def local_cluster(run: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SCRIPT), "--dir", str(run), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def printed(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    run = tmp_path_factory.mktemp("cluster")
    database = f"dust_cluster_{uuid.uuid4().hex[:10]}"
    try:
        up = local_cluster(run, "up", "--replicas", "2", "--postgres-url", POSTGRES_URL, "--database", database)
        lines = printed(up.stdout)
        made = Cluster(run, lines["balancer"][0], lines["replica"], lines["token"][0])
        with made.client(made.balancer) as api:
            schema = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
            assert api.post("/schemas", json=schema).status_code == 201
            patient = api.post("/patients", json={"name": "Jane Doe"}).json()["id"]
            made.tensor = api.post("/tensors", json={"entity_id": patient, "schema": "vitals"}).json()["id"]
        yield made
    finally:
        subprocess.run([str(SCRIPT), "--dir", str(run), "down", "--drop"], capture_output=True, timeout=120)
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def write(api: httpx.Client, cluster: Cluster, time_index: int, value: float) -> httpx.Response:
    body = {"values": [{"time": time_index, "metric": "heart_rate", "value": value}]}
    return api.post(f"/tensors/{cluster.tensor}/values", json=body)


def read(api: httpx.Client, cluster: Cluster, time_index: int) -> float | None:
    response = api.get(f"/tensor/{cluster.tensor}", params={"time": time_index, "metric": "heart_rate"})
    assert response.status_code == 200, response.text
    value: float | None = response.json()["values"]
    return value


def test_up_prints_the_balancer_each_replica_and_a_token_and_says_when_it_is_already_up(cluster: Cluster) -> None:
    assert len(cluster.replicas) == 2 and cluster.balancer not in cluster.replicas
    for base in [cluster.balancer, *cluster.replicas]:
        with cluster.client(base) as api:
            assert api.get("/auth/me").json()["role"] == "admin"
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "database": "postgresql", "redis": "ok"}
    again = local_cluster(cluster.run, "up")
    assert "Already up" in again.stderr and printed(again.stdout)["balancer"] == [cluster.balancer]


def test_a_write_through_one_replica_is_read_at_once_through_the_other_and_the_balancer(cluster: Cluster) -> None:
    a, b = cluster.replicas
    stale = []
    with cluster.client(a) as on_a, cluster.client(b) as on_b, cluster.client(cluster.balancer) as balanced:
        for n in range(30):  # alternating: write through A, read through B; then the other way round
            writer, reader = (on_a, on_b) if n % 2 == 0 else (on_b, on_a)
            assert write(writer, cluster, 0, 60.0 + n).status_code == 200
            seen = [read(reader, cluster, 0), read(balanced, cluster, 0)]
            stale += [(n, value) for value in seen if value != 60.0 + n]
    assert stale == []


def cache_lookups(base: str, cluster: Cluster, result: str) -> float:
    """The replica's count of master tensor lookups with ``result`` (hit or miss), from its /metrics."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {cluster.token}"}).text
    wanted = {"cache": "relations", "result": result}
    samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
    return sum(s.value for s in samples if s.name == "dust_cache_lookups_total" and s.labels == wanted)


def test_a_cached_master_tensor_is_gone_on_every_replica_after_a_write(cluster: Cluster) -> None:
    a, b = cluster.replicas

    def weights(api: httpx.Client) -> list[float]:
        response = api.get("/query_master/tensor", params={"type": "cached"})
        assert response.status_code == 200, response.text
        values: list[float] = response.json()["values"]
        return values

    with cluster.client(a) as on_a, cluster.client(b) as on_b, cluster.client(cluster.balancer) as balanced:
        ends = [on_a.post("/entities", json={"kind": "thing", "name": n}).json()["id"] for n in "st"]
        made = on_a.post("/relations", json={"source_id": ends[0], "target_id": ends[1], "type": "cached"})
        relation = made.json()["id"]
        assert weights(on_a) == [1.0]  # made on A, and shared through Redis
        hits = cache_lookups(b, cluster, "hit")
        assert weights(on_b) == [1.0] and cache_lookups(b, cluster, "hit") == hits + 1  # B never made it
        misses = cache_lookups(b, cluster, "miss")
        assert on_a.patch(f"/relations/{relation}", json={"weight": 2.0}).status_code == 200
        assert weights(on_b) == [2.0]
        assert cache_lookups(b, cluster, "miss") == misses + 1  # B's entry was not served after A's write
        stale = []
        for n in range(30):  # alternating: write through A, read through B and the balancer; then the other way
            writer, reader = (on_a, on_b) if n % 2 == 0 else (on_b, on_a)
            assert writer.patch(f"/relations/{relation}", json={"weight": 3.0 + n}).status_code == 200
            stale += [(n, seen) for seen in (weights(reader), weights(balanced)) if seen != [3.0 + n]]
    assert stale == []


def test_a_job_submitted_on_a_replica_runs_on_the_worker(cluster: Cluster) -> None:
    a, b = cluster.replicas
    with cluster.client(a) as on_a, cluster.client(b) as on_b:
        for t in range(1, 31):
            assert write(on_a, cluster, t, 70.0 + t % 3).status_code == 200
        body = {"detector": "multivariate", "tensor_id": cluster.tensor}
        accepted = on_a.post("/anomalies/scan", params={"background": "true"}, json=body)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + SECONDS
        while (job := on_b.get(f"/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"the job is still {job['state']}"
            time.sleep(0.1)
    assert job["state"] == "succeeded", job
    # The replicas leave a shared (Redis) queue to workers: the worker ran it.
    assert job_id in (cluster.run / "worker.log").read_text()


def test_a_killed_replica_is_routed_around_and_no_acknowledged_write_is_lost(cluster: Cluster) -> None:
    acknowledged: list[int] = []
    refused: list[int] = []
    killed = threading.Event()
    after_kill: list[int] = []

    def writer() -> None:
        with cluster.client(cluster.balancer) as api:
            for t in range(100, 400):
                if len(after_kill) >= 40:
                    return
                try:
                    ok = write(api, cluster, t, float(t)).status_code == 200
                except httpx.TransportError:
                    ok = False
                (acknowledged if ok else refused).append(t)
                if ok and killed.is_set():
                    after_kill.append(t)

    load = threading.Thread(target=writer)
    load.start()
    deadline = time.monotonic() + SECONDS
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = next(p for p in cluster.state()["processes"] if p["name"] == "replica-1")
    os.killpg(victim["pid"], signal.SIGKILL)  # no shutdown: as a crashed machine
    killed.set()
    load.join(SECONDS * 2)
    assert not load.is_alive()
    assert len(after_kill) >= 40, f"only {len(after_kill)} writes succeeded after the kill"
    assert len(refused) <= 1, refused  # at most the one write in flight on the killed replica
    with cluster.client(cluster.balancer) as api:
        lost = [t for t in acknowledged if read(api, cluster, t) != float(t)]
    assert lost == []


def test_down_stops_everything_it_started_and_nothing_else(cluster: Cluster) -> None:
    processes = cluster.state()["processes"]
    bystander = subprocess.Popen(["sleep", "60"])  # not the cluster's: left alone
    try:
        done = local_cluster(cluster.run, "down")
        assert "Stopped." in done.stderr
        deadline = time.monotonic() + SECONDS
        while (left := [p["name"] for p in processes if _running(p["pid"])]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []
        assert bystander.poll() is None
        assert "Nothing is up" in local_cluster(cluster.run, "down").stderr
    finally:
        bystander.kill()
        bystander.wait()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped by init."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
