"""GET /metrics: Prometheus text an admin's credential may scrape, counting by route template and status class."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from dust.api import metrics
from dust.engine.caches import Caches
from tests.api.conftest import API, ONE_BACKEND, World
from tests.jobs.conftest import SECONDS
from tests.reliability.server import Server, admin_key, bearer

ENTITY = "/api/v1/entities/{entity_id}"


def scrape(client: TestClient | httpx.Client, base: str = "") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape, by name and labels."""
    response = client.get(f"{base}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], route: str, status: str) -> float:
    labels = frozenset({"method": "GET", "route": route, "status": status}.items())
    return samples.get(("dust_http_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_template_and_status_class(client: TestClient, world: World) -> None:
    before = scrape(client)
    for entity in ("PA", "PB", "A"):
        assert client.get(f"{API}/entities/{world[entity]}").status_code == 200
    assert client.get(f"{API}/entities/{uuid.uuid4()}").status_code == 404
    for n in range(3):
        assert client.get(f"{API}/no-such-route-{n}").status_code == 404
    response = client.get("/metrics")
    after = scrape(client)
    assert requests(after, ENTITY, "2xx") - requests(before, ENTITY, "2xx") == 3
    assert requests(after, ENTITY, "4xx") - requests(before, ENTITY, "4xx") == 1
    assert requests(after, "unmatched", "4xx") - requests(before, "unmatched", "4xx") == 3  # one series, any path
    assert world["PA"] not in response.text and "no-such-route" not in response.text  # never the raw path
    count = ("dust_http_request_duration_seconds_count", frozenset({"method": "GET", "route": ENTITY}.items()))
    assert after[count] - before.get(count, 0.0) == 4


def test_the_pool_and_the_job_queue_are_shown(client: TestClient, world: World) -> None:
    body = {"detector": "multivariate", "tensor_id": world["TPA"]}
    assert client.post(f"{API}/anomalies/scan", params={"background": "true"}, json=body).status_code == 202
    samples = scrape(client, API)  # under /api/v1 too, as the health probes
    assert samples[("dust_db_pool_size", frozenset())] > 0
    assert samples[("dust_db_pool_checked_out", frozenset())] >= 1  # the scrape's own transaction holds one
    assert samples[("dust_jobs", frozenset({("state", "queued")}))] == 1  # this app runs no jobs: it stays queued
    assert samples[("dust_jobs", frozenset({("state", "succeeded")}))] == 0
    assert samples[("dust_job_queue_depth", frozenset({("queue", "pending")}))] >= 1


def test_cache_hits_and_misses_are_counted(app: FastAPI, client: TestClient) -> None:
    before = scrape(client)
    app.state.caches = Caches(lookups=app.state.metrics.cache_lookup)  # empty; the fixture's copies count nothing
    for _ in range(3):
        assert client.get(f"{API}/auth/me").status_code == 200
    after = scrape(client)

    def delta(result: str) -> float:
        key = ("dust_cache_lookups_total", frozenset({"cache": "credentials", "result": result}.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("miss") == 1  # the first check of the token in the new copies
    assert delta("hit") == 3  # the next two, and the scrape's own


def test_the_master_tensor_and_aggregates_count_lookups_and_a_scoped_readers_are_not_cached(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    app.state.caches = Caches(lookups=app.state.metrics.cache_lookup)  # counted, as a served app's
    doctor = login_as("clinician", entity_id=world["A"])
    reads = {
        "relations": ("/query_master/tensor", {}),
        "aggregates": ("/insights/aggregate", {"schema": "vitals", "label": "heart_rate"}),
    }
    for cache, (path, params) in reads.items():
        before = scrape(client)
        answers = [client.get(API + path, params=params).json() for _ in range(3)]
        seen = doctor.get(API + path, params=params).json()  # their reach only: never the cached answer
        after = scrape(client)
        keys = [("dust_cache_lookups_total", frozenset({"cache": cache, "result": r}.items())) for r in ("miss", "hit")]
        assert answers[0] == answers[1] == answers[2] != seen
        assert [after.get(key, 0.0) - before.get(key, 0.0) for key in keys] == [1, 2]


def test_the_connections_in_use_are_counted_at_the_scrape(app: FastAPI, client: TestClient) -> None:
    key = ("dust_db_pool_checked_out", frozenset())
    before = scrape(client)[key]
    with app.state.engine.connect(), app.state.engine.connect():
        assert scrape(client)[key] == before + 2
    assert scrape(client)[key] == before


def test_connections_the_loop_keeps_between_reads_are_not_counted_in_use(app: FastAPI, client: TestClient) -> None:
    """The event loop's reads keep their connections between reads (``HeldReads`` on SQLite, ``LentReads`` on
    PostgreSQL): out of the pool, but idle, so not in use. In use at the scrape: its own transaction's only."""
    key = ("dust_db_pool_checked_out", frozenset())
    for _ in range(3):
        assert client.get(API + "/auth/me").status_code == 200  # read on the loop
    assert app.state.loop.kept() >= 1
    assert scrape(client)[key] == 1


def test_with_several_workers_each_writes_its_connections_in_use_every_second(tmp_path: Path) -> None:
    """The scrape sums every process's files; a process other than the scraped one must have written its own."""
    worker = textwrap.dedent(f"""
        import asyncio, sys
        from sqlalchemy import create_engine
        from dust.api import metrics

        engine = create_engine("sqlite:///{tmp_path / "dust.db"}")
        held = [engine.connect() for _ in range(3)]
        watch = metrics.Metrics()
        watch.watch_pool(engine)
        loop = asyncio.new_event_loop()
        loop.create_task(watch.sample_pools_while_serving())
        loop.run_until_complete(asyncio.sleep(0.2))
        print("sampled", flush=True)
        held.pop().close()
        loop.run_until_complete(asyncio.sleep(metrics.POOL_SAMPLE_SECONDS + 0.5))
        print("again", flush=True)
        sys.stdin.read()
    """)
    folder = tmp_path / "metrics"  # of its own: a scrape reads every *.db file in it
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", worker], env=env, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )

    def in_use() -> float:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(folder))
        return registry.get_sample_value("dust_db_pool_checked_out") or 0.0

    try:
        assert process.stdout is not None and process.stdout.readline() == "sampled\n"
        assert in_use() == 3.0
        assert process.stdout.readline() == "again\n"
        assert in_use() == 2.0
    finally:
        process.kill()
        process.wait(SECONDS)


def test_a_dead_workers_live_gauges_leave_the_sums(tmp_path: Path) -> None:
    """A worker killed without its shutdown (uvicorn starts another) no longer counts in the pool's figures."""
    gauge = (
        "import os, sys, time; from prometheus_client import Gauge; "
        "Gauge('dust_db_pool_checked_out', 'x', multiprocess_mode='livesum').set(float(sys.argv[1])); "
        "print('set', flush=True); time.sleep(60) if sys.argv[2] == 'live' else os._exit(0)"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    started = [
        subprocess.Popen([sys.executable, "-c", gauge, value, how], env=env, stdout=subprocess.PIPE)
        for value, how in (("3", "live"), ("5", "dies"))
    ]
    try:
        for process in started:
            assert process.stdout is not None and process.stdout.readline() == b"set\n"
        started[1].wait(SECONDS)

        def pool() -> float:
            metrics.forget_dead_processes(str(tmp_path))
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
            return registry.get_sample_value("dust_db_pool_checked_out") or 0.0

        assert pool() == 3.0  # the live one's 3; the dead one's 5 is gone
        started[0].kill()
        started[0].wait(SECONDS)
        assert pool() == 0.0
    finally:
        for process in started:
            process.kill()
            process.wait()


@ONE_BACKEND
def test_only_admins_may_scrape(anon_client: TestClient, login_as: Callable[..., TestClient]) -> None:
    assert anon_client.get("/metrics").status_code == 401
    assert login_as("analyst").get("/metrics").status_code == 403
    assert login_as("admin").get("/metrics").status_code == 200


def test_several_workers_add_up_their_counts(tmp_path: Path) -> None:
    """`dust serve --workers 2`: whichever worker answers a scrape counts the requests of both."""
    url = f"sqlite:///{tmp_path / 'dust.db'}"
    auth = bearer(admin_key(url))
    with Server(url, workers=2, DUST_LOG_LEVEL="WARNING") as server:
        server.start()
        for _ in range(20):  # a new connection each: the workers take turns accepting them
            assert httpx.get(f"{server.api}/auth/me", headers=auth).status_code == 200
        with httpx.Client(headers=auth) as http:
            samples = [scrape(http, server.base) for _ in range(4)]
    assert {requests(s, "/api/v1/auth/me", "2xx") for s in samples} == {20.0}
