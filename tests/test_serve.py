"""`dust serve` as a real process: what only shows behind a real HTTP server, such as proxy headers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dust.api.app import YOUNG_OBJECTS
from dust.embedded import Dust
from dust.engine import tensors, users
from dust.engine.users import UserCreate
from tests.reliability.server import Server, served

PASSWORD = "a long enough password"
VALUES = 400_000  # in one write: a second or two of work
CHUNK = 1 << 16  # bytes of the body sent at a time
SPOOFED = "203.0.113.9"


@pytest.fixture
def admin_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'dust.db'}"
    with Dust(url) as db, db.session() as session:
        users.create(session, UserCreate(username="admin", password=PASSWORD, role="admin"))  # type: ignore[arg-type]
    return url


def _client_recorded(api: str) -> str:
    """Sign in and create an entity claiming to come from SPOOFED; the client address the audit recorded."""
    spoof = {"X-Forwarded-For": SPOOFED}
    token = httpx.post(f"{api}/auth/token", data={"username": "admin", "password": PASSWORD}, headers=spoof)
    auth = {"Authorization": f"Bearer {token.json()['access_token']}", **spoof}
    made = httpx.post(f"{api}/entities", json={"kind": "patient", "name": "Proxy Test"}, headers=auth)
    records = httpx.get(f"{api}/audit", params={"entity_id": made.json()["id"]}, headers=auth).json()["items"]
    return str(records[0]["client"])


def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(admin_database: str) -> None:
    with served(admin_database) as api:
        assert _client_recorded(api) == "127.0.0.1"


def test_a_trusted_proxy_names_the_client(admin_database: str) -> None:
    with served(admin_database, DUST_TRUSTED_PROXIES='["127.0.0.1"]') as api:
        assert _client_recorded(api) == SPOOFED


# --- several workers ---------------------------------------------------------------------------------------


def _token(api: str) -> dict[str, str]:
    signed = httpx.post(f"{api}/auth/token", data={"username": "admin", "password": PASSWORD})
    return {"Authorization": f"Bearer {signed.json()['access_token']}"}


def _workers(server: Server) -> list[int]:
    """The process ids of the server's workers: the supervisor's children that multiprocessing spawned (not its
    resource tracker)."""
    assert server.process is not None
    tasks = Path(f"/proc/{server.process.pid}/task").iterdir()
    children = [int(child) for task in tasks for child in (task / "children").read_text().split()]
    return [child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def test_a_logout_is_honoured_by_every_worker_at_once(admin_database: str) -> None:
    with Server(admin_database, workers=2) as server:
        api = server.start()
        assert len(_workers(server)) == 2
        auth = _token(api)
        # A new connection each time: the workers take turns accepting them, so both cache the token.
        assert {httpx.get(f"{api}/auth/me", headers=auth).status_code for _ in range(20)} == {200}
        assert httpx.post(f"{api}/auth/logout", headers=auth).status_code == 204
        assert {httpx.get(f"{api}/auth/me", headers=auth).status_code for _ in range(20)} == {401}


def test_sigterm_lets_requests_in_progress_finish(admin_database: str) -> None:
    """A restart or scale-down sends SIGTERM: a write in progress is answered and kept, then the server ends."""
    with Server(admin_database, workers=2, DUST_MAX_BATCH_VALUES=str(VALUES), DUST_MAX_BATCH_BLOCKS="2000") as server:
        api = server.start()
        auth = _token(api)
        schema = {
            "name": "load",
            "axes": [{"name": "metric", "labels": ["a", "b", "c", "d"]}],
            "time": {"unit": "second"},
        }
        assert httpx.post(f"{api}/schemas", json=schema, headers=auth).status_code == 201
        entity = httpx.post(f"{api}/entities", json={"kind": "sensor", "name": "S"}, headers=auth).json()
        tensor = httpx.post(f"{api}/tensors", json={"entity_id": entity["id"], "schema": "load"}, headers=auth).json()
        values = [{"time": n // 4, "metric": "abcd"[n % 4], "value": float(n)} for n in range(VALUES)]
        body = json.dumps({"values": values}).encode()
        sending = threading.Event()

        def chunks() -> Iterator[bytes]:
            """The body in pieces: once the first is asked for, the request's headers are on the server."""
            sending.set()
            for at in range(0, len(body), CHUNK):
                yield body[at : at + CHUNK]

        headers = {**auth, "Content-Type": "application/json"}
        path = f"{api}/tensors/{tensor['id']}/values"
        answer: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answer.append(httpx.post(path, content=chunks(), headers=headers, timeout=60))
        )
        sender.start()
        assert sending.wait(30), "the request never started"
        time.sleep(0.2)  # the body is on its way or being written (a second or two of work)
        assert not answer, "the write was done before SIGTERM: nothing was in progress"
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        sender.join(60)
        assert server.process.wait(timeout=60) == 0
        server.process = None
        assert answer and answer[0].status_code == 200, answer and answer[0].text
        assert answer[0].json()["written"] == VALUES
    with Dust(admin_database, migrate=False) as db, db.session() as session:
        last = tensors.read(session, uuid.UUID(tensor["id"]), time=VALUES // 4 - 1).to_numpy().tolist()
        assert last == [float(VALUES - n) for n in (4, 3, 2, 1)]


def test_a_serving_process_freezes_what_it_loaded_and_collects_its_young_objects_less_often(tmp_path: Path) -> None:
    """The collector's settings of a ``dust serve`` worker (dust.api.app.serving_app): set in a process of its own,
    as they last for the whole process."""
    env = {**os.environ, "DUST_DATABASE_URL": f"sqlite:///{tmp_path / 'dust.db'}", "DUST_SECRET_KEY": "k" * 48}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc; from dust.api.app import serving_app; serving_app(); "
            "print(gc.get_threshold()[0], gc.get_freeze_count())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert int(shown[0]) == YOUNG_OBJECTS > 700
    assert int(shown[1]) > 100_000  # the libraries, the routes, the web UI
