"""A few crash rounds per backend inside `make test`; `make crash` runs 100 (tests/reliability/crash.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dust.storage.db import make_engine
from dust.storage.models import IdempotencyKey
from tests.reliability.crash import LABELS, run_rounds, seed
from tests.reliability.server import Server, bearer

ROUNDS = 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_acknowledged_write_is_lost_when_the_server_is_killed(backend: str) -> None:
    """Nor the audit record of any request answered 2xx, read or write."""
    postgres_url = os.environ.get("DUST_TEST_POSTGRES_URL")
    if backend == "postgresql" and not postgres_url:
        pytest.skip("PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)")
    lines: list[str] = []
    totals = run_rounds(backend, ROUNDS, postgres_url=postgres_url, out=lines.append)
    print("\n".join(lines))  # the figures, for `pytest -s`
    assert totals.rounds == ROUNDS
    assert totals.acked > 0, "no write was acknowledged: the round proved nothing"
    assert totals.reads > 0, "no read was acknowledged: no read's audit record was put to the test"
    assert totals.ok, "\n".join([totals.line(), *totals.details[:20]])


def test_a_request_killed_in_flight_can_be_retried_with_its_idempotency_key(tmp_path: Path) -> None:
    """Retrying after a crash is what an Idempotency-Key is for: the retry must run (or replay), not be refused."""
    url = f"sqlite:///{tmp_path / 'dust.db'}"
    world = seed(url)
    values = [{"time": t // 4, "metric": LABELS[t % 4], "value": 1.0} for t in range(100_000)]  # ~1 s of work
    post = {"url": f"/tensors/{world.tensors[0]}/values", "json": {"values": values}}
    headers = {**bearer(world.keys[0]), "Idempotency-Key": "retry-me"}
    with Server(url, DUST_LOG_LEVEL="WARNING") as server:
        api = server.start()
        sender = threading.Thread(target=_send_ignoring_errors, args=(api, headers, post))
        sender.start()
        _wait_for_claim(url)
        server.kill()
        sender.join(timeout=60)
        if not _claimed(url):
            pytest.skip("the request finished before the kill: nothing was in flight")
        api = server.start()
        with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
            retried = http.post(**post)
    assert retried.status_code == 200, retried.text


def _send_ignoring_errors(api: str, headers: dict[str, str], post: dict[str, Any]) -> None:
    with contextlib.suppress(httpx.TransportError), httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        http.post(**post)


def _wait_for_claim(url: str) -> None:
    """Until the request has claimed its key and is running (claimed, not yet settled)."""
    deadline = time.monotonic() + 30
    while not _claimed(url):
        assert time.monotonic() < deadline, "the request never claimed its key"
        time.sleep(0.01)


def _claimed(url: str) -> bool:
    """Whether a key is claimed by a request that has not settled it."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(IdempotencyKey.key).where(IdempotencyKey.status.is_(None))).first() is not None
    finally:
        engine.dispose()
