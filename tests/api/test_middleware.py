"""Request ids, the one structured log line per request, error logging and the request size limit."""

from __future__ import annotations

import json
import sys

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from dust.core.config import Settings
from dust.core.logging import MAX_TRACEBACK_CHARS, configure_logging, flush_logs
from tests.core.test_logging import BlockedStderr, finishes, recurse

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"log_format": "json", "log_level": "INFO", "max_request_bytes": 2048})


@pytest.fixture
def app(new_app: FastAPI) -> FastAPI:
    """An app of these tests' own: they add routes to it."""
    app = new_app

    def boom() -> None:
        raise RuntimeError("kaboom")

    def leaky(request: Request) -> None:
        secret_local = "LOCALVALUE"
        token = request.headers["authorization"]
        settings = request.app.state.settings
        raise RuntimeError(f"kaboom with {len(secret_local)}, {len(token)}, {type(settings).__name__} in the frame")

    def deep() -> None:
        recurse(900)

    app.add_api_route("/boom", boom)
    app.add_api_route("/leaky", leaky)
    app.add_api_route("/deep", deep)
    return app


@pytest.fixture
def json_client(client: TestClient) -> TestClient:
    """Signed in as an admin, on an app logging JSON at INFO with a 2 KiB body limit and a /boom route."""
    return client


def log_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def logged(capsys: pytest.CaptureFixture[str]) -> str:
    """What has been logged since the last call; lines are written by a thread, so wait for them first."""
    assert flush_logs()
    return capsys.readouterr().err


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith\ttabs"})
    assert unsafe.headers["x-request-id"] != "bad id\twith\ttabs"


def test_one_structured_line_per_request(json_client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    logged(capsys)
    created = json_client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane"})
    json_client.get(f"{API}/entities/{created.json()['id']}")
    lines = [line for line in log_lines(logged(capsys)) if line["event"] == "request"]
    assert len(lines) == 2
    post, get = lines
    assert post["method"] == "POST" and post["status"] == 201 and post["route"] == "/api/v1/entities"
    assert get["route"] == "/api/v1/entities/{entity_id}"
    assert get["request_id"] and isinstance(get["duration_ms"], float)
    assert {"timestamp", "level", "user"} <= get.keys()


def test_unexpected_error_is_a_problem_and_logged_with_traceback(
    json_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    logged(capsys)
    response = json_client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] in response.json()["detail"]
    assert "kaboom" not in response.text  # internals stay in the log
    errors = [line for line in log_lines(logged(capsys)) if line["level"] == "error"]
    assert errors and "RuntimeError: kaboom" in errors[0]["exception"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_error_shows_no_local_values_key_token_or_password(
    json_client: TestClient, settings: Settings, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)
    logged(capsys)
    assert json_client.get("/leaky").status_code == 500
    err = logged(capsys)
    assert "RuntimeError: kaboom with 10" in err
    assert settings.secret_key is not None
    token = json_client.headers["authorization"].removeprefix("Bearer ")
    for secret in ("LOCALVALUE", settings.secret_key.get_secret_value(), token):
        assert secret not in err
    # The app's own URL has no password to leak; a settings object like the one in the frame, with one:
    with_password = Settings(database_url="postgresql+psycopg://u:hunter2@h/db", secret_key="s" * 40)
    assert not any(s in text for s in ("hunter2", "s" * 40) for text in (repr(with_password), str(with_password)))


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_recursion_error_is_logged_in_bounded_size(
    json_client: TestClient, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)
    logged(capsys)
    assert json_client.get("/deep").status_code == 500
    err = logged(capsys)
    assert "RecursionError: deep down" in err and "outer frames left out" in err
    assert len(err) < MAX_TRACEBACK_CHARS + 2000  # the error with its traceback, and the request line


def test_a_blocked_stderr_does_not_stall_requests(json_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    flush_logs()
    stderr = BlockedStderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    statuses: list[int] = []
    try:
        paths = ["/boom", "/healthz", "/healthz"]
        assert finishes(lambda: statuses.extend(json_client.get(path).status_code for path in paths))
        assert statuses == [500, 200, 200]
        assert stderr.entered.wait(5) and stderr.getvalue() == ""  # nothing written yet: the writer is stuck
    finally:
        stderr.release.set()
    assert flush_logs()
    events = [(line["event"], line["path"]) for line in log_lines(stderr.getvalue()) if "request_id" in line]
    assert events == [
        ("unhandled error", "/boom"),
        ("request", "/boom"),
        ("request", "/healthz"),
        ("request", "/healthz"),
    ]


def test_oversized_body_is_413_and_writes_nothing(json_client: TestClient) -> None:
    big = {"kind": "patient", "name": "x", "attributes": {"blob": "y" * 5000}}
    response = json_client.post(f"{API}/entities", json=big)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]
    assert json_client.get(f"{API}/entities").json()["items"] == []


def test_a_body_cut_short_by_a_disconnect_is_never_acted_on(
    app: FastAPI, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """The part that arrived parses as JSON on its own; acting on it would create what the client never sent."""
    import anyio

    token = client.headers["Authorization"].encode()
    whole = json.dumps({"kind": "patient", "name": "Cut Short", "attributes": {"note": "x" * 50}}).encode()
    first = json.dumps({"kind": "patient", "name": "Cut Short"}).encode()
    assert whole.startswith(first[:-1])  # a client that sent the first part and left
    messages = [
        {"type": "http.request", "body": first, "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/entities",
        "raw_path": b"/api/v1/entities",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"authorization", token), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    logged(capsys)
    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    lines = [line for line in log_lines(logged(capsys)) if line["event"] == "request"]
    assert [(line["method"], line["status"]) for line in lines] == [("POST", 499)]  # logged, no traceback
    assert not [m for m in sent if m["type"] == "http.response.start"]  # nobody to answer
    assert client.get("/api/v1/entities", params={"q": "Cut Short"}).json()["items"] == []
