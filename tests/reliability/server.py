"""A real ``dust serve`` for tests and scripts: start it, SIGKILL it, restart it; throwaway databases; a key.

Only loopback traffic: the server listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import users
from dust.engine.users import UserCreate
from tests.databases import throwaway_postgres

SECRET = "s" * 40
START_SECONDS = 30  # a cold start imports NumPy, pandas and FastAPI: ~2.5 s here, far more on a loaded machine
STOP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One ``dust serve`` process over ``database_url``; each ``start`` takes a new free port.

    Its log goes to a file, not a pipe: nobody reads a pipe while requests run, and a full pipe would block
    the server mid-request.
    """

    def __init__(self, database_url: str, *, workers: int = 1, **env: str) -> None:
        self.database_url = database_url
        self.workers = workers
        self.env = {**os.environ, "DUST_DATABASE_URL": database_url, "DUST_SECRET_KEY": SECRET, **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 -- kept open across restarts; close() closes it
        self.base = ""

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"

    def start(self) -> str:
        """Start and wait until ``/healthz`` answers; the API's base URL."""
        assert self.process is None, "already running"
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "dust"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        # A session of its own, so that a SIGKILL reaches the server (and any worker) but never us.
        self.process = subprocess.Popen(
            command, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True
        )
        self.base = f"http://127.0.0.1:{port}"
        self._wait_healthy()
        return self.api

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dust serve did not start:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, no transaction gets to finish, as in a power cut of the process."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS)
        self.process = None

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not end in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # as a supervisor would: the server stops its workers
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_SECONDS)
        self.process = None

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def served(database_url: str, **env: str) -> Iterator[str]:
    """``dust serve`` on a free loopback port until the block ends; yields the API's base URL."""
    with Server(database_url, **env) as server:
        yield server.start()


@contextmanager
def database(backend: str, postgres_admin_url: str | None = None) -> Iterator[str]:
    """A fresh database URL: a new SQLite file in a temporary directory, or a throwaway PostgreSQL database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dust-reliability-") as directory:
            yield f"sqlite:///{Path(directory) / 'dust.db'}"
        return
    if backend != "postgresql" or not postgres_admin_url:
        raise ValueError(f"backend {backend!r}: sqlite, or postgresql with an admin URL")
    with throwaway_postgres(postgres_admin_url, "dust_reliability") as url:
        yield url


def admin_keys(database_url: str, count: int = 1, username: str = "admin") -> list[str]:
    """Migrate the database, create an admin user (no password: keys only) and mint ``count`` API keys.

    Concurrent clients each want a key of their own: a request signed with a key updates that key's
    ``last_used_at`` in its transaction, so on PostgreSQL the requests of one key wait for each other.
    """
    with Dust(database_url) as db, db.session() as session:
        user = users.create(session, UserCreate(username=username, role=Role.admin))
        return [users.create_key(session, db.settings, user.id, f"reliability {n}").key for n in range(count)]


def admin_key(database_url: str) -> str:
    return admin_keys(database_url)[0]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
