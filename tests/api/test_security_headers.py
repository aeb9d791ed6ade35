"""Browser-facing defences: security headers on every answer, CORS off unless origins are named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from dust.api.app import create_app
from dust.core.config import Settings

API = "/api/v1"
PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}


@pytest.mark.parametrize(
    "path", [pytest.param(f"{API}/entities", id="api"), pytest.param(f"{API}/nope", id="404"), "/healthz"]
)
def test_every_answer_carries_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_api_answers_carry_security_headers(client: TestClient) -> None:
    api = client.get(f"{API}/entities")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")
    assert api.headers["cache-control"] == "no-store"
    assert "content-security-policy" not in client.get("/docs").headers  # the docs page loads its own scripts


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.options(f"{API}/entities", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in client.get(f"{API}/entities", headers={"Origin": "https://x"}).headers


@pytest.fixture
def cors_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://app.example"]}), migrate=False)
    with TestClient(app) as client:
        yield client


def test_cors_allows_only_named_origins(cors_client: TestClient) -> None:
    allowed = cors_client.options(f"{API}/entities", headers=PREFLIGHT)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = cors_client.options(f"{API}/entities", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
