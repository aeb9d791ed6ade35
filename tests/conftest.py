"""Fixtures: a clean, migrated database for each test on SQLite and, where DUST_TEST_POSTGRES_URL is set, on
PostgreSQL (one database per backend and test worker, emptied between tests), and the app on it, shared by the
tests with the same settings.

Without DUST_TEST_POSTGRES_URL the PostgreSQL cases skip (a plain ``pytest``); with it and no server answering,
they error. ``make test`` also sets DUST_TEST_REQUIRE_POSTGRES=1, which turns any skip of a PostgreSQL case into
an error, so the suite cannot pass there with half of it left out.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Generator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool

from dust.api.app import create_app
from dust.core.config import Settings
from dust.core.logging import configure_logging, flush_logs
from dust.core.security import hash_password, issue_access_token
from dust.embedded import Dust
from dust.engine.caches import Caches
from dust.storage.db import make_engine, upgrade
from dust.storage.models import Base, User
from tests.databases import throwaway_postgres

# torch (model tests) on one thread: ``make test`` runs two workers on two cores, and a thread per core each made
# them wait on one another (a five-seed training took 30 s instead of 6). Read when torch is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

POSTGRES_URL = os.environ.get("DUST_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("DUST_TEST_REQUIRE_POSTGRES") == "1"
NO_POSTGRES = "PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)"
BACKENDS = ["sqlite", "postgresql"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PASSWORD = "correct horse battery staple"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under DUST_TEST_REQUIRE_POSTGRES=1 (``make test``), a case skipped for want of PostgreSQL is an error
    (cases that skip on purpose, such as checks of SQLite's own locking, say another reason)."""
    report = yield
    if REQUIRE_POSTGRES and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if NO_POSTGRES in reason:
            report.outcome = "failed"
            report.longrepr = f"a PostgreSQL case skipped under DUST_TEST_REQUIRE_POSTGRES=1: {reason}"
    return report


@pytest.fixture(autouse=True)
def _logs_written() -> Iterator[None]:
    """A thread writes log lines: let each test's lines land before the next test captures output."""
    yield
    flush_logs()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, for tests that need a file of their own (migrating each time would be slower)."""
    path = tmp_path_factory.mktemp("template") / "dust.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file of this test worker's own, emptied before each test that uses it."""
    path = tmp_path_factory.mktemp("sqlite") / "dust.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_database(worker_id: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test worker's own, dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    with throwaway_postgres(POSTGRES_URL, f"dust_test_{worker_id}") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def _emptier(url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(empty, close)`` for the database at ``url``: empty deletes every table's rows and restarts every
    sequence, on one connection kept for the session.

    DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE makes new files for every table on PostgreSQL
    (about 250 ms a test, against 5 ms). A fresh SQLite file per test cost more than this too, mostly in the
    first request of a new app (see ``shared_apps``).
    """
    engine = create_engine(url, poolclass=StaticPool)
    statements = [f"DELETE FROM {t.name}" for t in reversed(Base.metadata.sorted_tables)]
    if engine.dialect.name == "postgresql":  # SQLite tables here have no AUTOINCREMENT, so no sequences
        statements.append("SELECT setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S'")

    def empty() -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
            # as a new database has (migration 0013): its own name for the shared caches' keys
            identity = {"value": secrets.randbits(62) + 1}
            conn.execute(text("INSERT INTO cache_epochs (name, value) VALUES ('identity', :value)"), identity)

    return empty, engine.dispose


@pytest.fixture(scope="session")
def empty_database() -> Iterator[Callable[[str], None]]:
    """``empty_database(url)``: empties that database (an emptier per url, made on first use)."""
    made: dict[str, Callable[[], None]] = {}
    closers: list[Callable[[], None]] = []

    def empty(url: str) -> None:
        if url not in made:
            made[url], close = _emptier(url)
            closers.append(close)
        made[url]()

    yield empty
    for close in closers:
        close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A clean, migrated database: the worker's SQLite file or PostgreSQL database, emptied."""
    fixture = "sqlite_database" if request.param == "sqlite" else "postgres_database"
    url: str = request.getfixturevalue(fixture)
    request.getfixturevalue("empty_database")(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, log_level="WARNING", secret_key="test-secret-key-" + "x" * 32)


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One argon2 hash for every test user (hashing per test would cost ~50 ms each)."""
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def shared_apps() -> dict[str, FastAPI]:
    """Apps by their settings, kept for the session. A new app's first request to each route costs FastAPI
    about 4 ms a route to prepare (0.1-0.3 s an app), which was a quarter of the API tests' time."""
    return {}


@pytest.fixture
def app(settings: Settings, shared_apps: dict[str, FastAPI]) -> FastAPI:
    """The app on ``settings``, shared by the tests with the same settings; its copies (credentials, schemas)
    start empty, as its database does. A test that changes the app itself (routes, state) uses ``new_app``."""
    key = settings.model_dump_json()
    if key not in shared_apps:
        shared_apps[key] = create_app(settings, migrate=False)
    shared = shared_apps[key]
    shared.state.settings = settings  # a test may have swapped them for smaller limits
    shared.state.caches = Caches()
    configure_logging(settings.log_level, settings.log_format)  # as create_app does: another app may have since
    return shared


@pytest.fixture
def new_app(settings: Settings) -> FastAPI:
    """An app of the test's own, to change as it likes."""
    return create_app(settings, migrate=False)


@pytest.fixture
def anon_client(app: FastAPI) -> Iterator[TestClient]:
    """A client that has not signed in."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


class _OpenClient(TestClient):
    """A TestClient opened once by its fixture and closed at the test's end. An unopened TestClient starts an
    event loop thread for every request (about 20 ms each, most of an API test's time); ``with`` on this one is
    a no-op, so tests may still write ``with login_as(...) as c:``."""

    def __enter__(self) -> _OpenClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@pytest.fixture
def login_as(app: FastAPI, settings: Settings, password_hash: str) -> Iterator[Callable[..., TestClient]]:
    """``login_as(role, entity_id=None, username=None)``: a client signed in as a new user of that role."""
    opened: list[_OpenClient] = []

    def make(role: str, entity_id: uuid.UUID | str | None = None, username: str | None = None) -> TestClient:
        name = username or f"{role}-{uuid.uuid4().hex[:8]}"
        with app.state.sessions() as session, session.begin():
            user = User(
                username=name,
                password_hash=password_hash,
                role=role,
                entity_id=uuid.UUID(str(entity_id)) if entity_id else None,
            )
            session.add(user)
            session.flush()
            assert settings.secret_key is not None
            key = settings.secret_key.get_secret_value()
            token, _ = issue_access_token(key, user.id, role, 0, timedelta(minutes=15))
        signed_in = _OpenClient(app, raise_server_exceptions=False)
        TestClient.__enter__(signed_in)
        opened.append(signed_in)
        signed_in.headers["Authorization"] = f"Bearer {token}"
        return signed_in

    yield make
    for signed_in in opened:
        TestClient.__exit__(signed_in, None, None, None)


@pytest.fixture
def client(login_as: Callable[..., TestClient]) -> Iterator[TestClient]:
    """A client signed in as an admin: sees and may do everything."""
    with login_as("admin", username="admin") as admin:
        yield admin


@pytest.fixture
def db(database_url: str) -> Iterator[Dust]:
    """The embedded engine on the same clean database."""
    with Dust(database_url, migrate=False) as opened:
        yield opened
