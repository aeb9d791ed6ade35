"""`dust serve` as a real process: what only shows behind a real HTTP server, such as proxy headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dust.embedded import Dust
from dust.engine import users
from dust.engine.users import UserCreate
from tests.reliability.server import served

PASSWORD = "a long enough password"
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
