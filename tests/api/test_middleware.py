"""Request ids, the one structured log line per request, error logging and the request size limit."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.config import Settings

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"log_format": "json", "log_level": "INFO", "max_request_bytes": 2048})


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    return app


@pytest.fixture
def json_client(client: TestClient) -> TestClient:
    """Signed in as an admin, on an app logging JSON at INFO with a 2 KiB body limit and a /boom route."""
    return client


def log_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith\ttabs"})
    assert unsafe.headers["x-request-id"] != "bad id\twith\ttabs"


def test_one_structured_line_per_request(json_client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    created = json_client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane"})
    json_client.get(f"{API}/entities/{created.json()['id']}")
    lines = [line for line in log_lines(capsys.readouterr().err) if line["event"] == "request"]
    assert len(lines) == 2
    post, get = lines
    assert post["method"] == "POST" and post["status"] == 201 and post["route"] == "/api/v1/entities"
    assert get["route"] == "/api/v1/entities/{entity_id}"
    assert get["request_id"] and isinstance(get["duration_ms"], float)
    assert {"timestamp", "level", "user"} <= get.keys()


def test_unexpected_error_is_a_problem_and_logged_with_traceback(
    json_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = json_client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] in response.json()["detail"]
    assert "kaboom" not in response.text  # internals stay in the log
    errors = [line for line in log_lines(capsys.readouterr().err) if line["level"] == "error"]
    assert errors and "RuntimeError: kaboom" in errors[0]["exception"]


def test_oversized_body_is_413_and_writes_nothing(json_client: TestClient) -> None:
    big = {"kind": "patient", "name": "x", "attributes": {"blob": "y" * 5000}}
    response = json_client.post(f"{API}/entities", json=big)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]
    assert json_client.get(f"{API}/entities").json()["items"] == []
