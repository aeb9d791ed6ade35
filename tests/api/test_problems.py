"""Framework-level errors are RFC 9457 problem+json too, and say what is allowed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.api import idempotency
from dust.api.app import create_app
from dust.api.problems import problem
from dust.api.protocol import BoundedHttpToolsProtocol, _busy
from dust.core.config import Settings
from dust.core.errors import PROBLEMS, DustError, ProblemType
from dust.storage.backup import ToolFailed
from dust.storage.repositories import idempotency as idempotency_repo
from tests.api.conftest import VITALS
from tests.api.test_limits import _late_body
from tests.conftest import PASSWORD

API = "/api/v1"
PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_unknown_route(client: TestClient) -> None:
    body = assert_problem(client.get(f"{API}/no-such-thing"), 404)
    assert "/api/v1/no-such-thing" in body["detail"]


def test_method_not_allowed_names_the_allowed_methods(client: TestClient) -> None:
    body = assert_problem(client.put(f"{API}/entities"), 405)
    assert "GET" in body["detail"] and "POST" in body["detail"]


def test_malformed_json(client: TestClient) -> None:
    response = client.post(
        f"{API}/entities", content=b'{"kind": "patient", "name": ', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert "JSON" in body["detail"]


def test_wrong_types_name_the_field(client: TestClient) -> None:
    body = assert_problem(client.post(f"{API}/relations", json={"source_id": 1, "target_id": "x", "type": "t"}), 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "source_id"), ("body", "target_id")}


def test_bad_query_parameter(client: TestClient) -> None:
    body = assert_problem(client.get(f"{API}/entities", params={"limit": "many"}), 422)
    assert body["errors"][0]["loc"] == ["query", "limit"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["database"] in {"sqlite", "postgresql"}
    assert client.get(f"{API}/healthz").status_code == 200


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/tensors/{tensor_id}/values" in spec["paths"]
    assert client.get("/docs").status_code == 200


# --- the problem types: a fixed vocabulary, never about:blank ---------------------------------------------------


def typed(response, status: int, expected: ProblemType | None = None) -> dict:  # type: ignore[no-untyped-def]
    """The problem, after checking that its type and its field errors' types are of the vocabulary."""
    body = assert_problem(response, status)
    assert body["type"].startswith(PROBLEMS) and body["type"] in set(ProblemType), body
    if expected is not None:
        assert body["type"] == expected, body
    assert all(error.get("type") for error in body.get("errors", [])), body
    return body


def test_every_error_names_a_problem_type(
    app: FastAPI,
    settings: Settings,
    client: TestClient,
    anon_client: TestClient,
    login_as: Callable[..., TestClient],
) -> None:
    """A sweep over the errors of every layer: routing, authentication, roles, validation, the engine, the
    middleware and the idempotency layer."""
    typed(anon_client.get("/no-such-thing"), 404, ProblemType.not_found)  # "/" redirects to the UI (tests/ui)
    typed(client.get(f"{API}/no-such-thing"), 404, ProblemType.not_found)
    typed(client.get(f"{API}/entities/{uuid.uuid4()}"), 404, ProblemType.not_found)
    typed(client.put(f"{API}/entities"), 405, ProblemType.method_not_allowed)
    typed(client.delete(f"{API}/schemas"), 405, ProblemType.method_not_allowed)
    typed(anon_client.get(f"{API}/entities"), 401, ProblemType.unauthorized)
    typed(anon_client.get(f"{API}/entities", headers={"Authorization": "Bearer nonsense"}), 401)
    typed(client.post(f"{API}/entities", json={"kind": "patient"}), 422, ProblemType.invalid_input)
    typed(client.get(f"{API}/entities", params={"limit": "many"}), 422, ProblemType.invalid_input)
    typed(client.get(f"{API}/entities", params={"q": "a\x00b"}), 422, ProblemType.invalid_input)
    bad_json = client.post(f"{API}/entities", content=b"{", headers={"content-type": "application/json"})
    typed(bad_json, 422, ProblemType.invalid_input)
    typed(client.get(f"{API}/query_master", params={"entity_id": str(uuid.uuid4()), "depth": 9}), 422)
    assert client.post(f"{API}/schemas", json=VITALS).status_code == 201
    typed(client.post(f"{API}/schemas", json=VITALS), 409, ProblemType.conflict)
    tensor = client.post(f"{API}/tensors", json={"entity_id": _entity(client), "schema": "vitals"}).json()
    typed(client.get(f"{API}/tensors/{tensor['id']}", params={"time": 99}), 422)
    app.state.settings = settings.model_copy(update={"max_batch_values": 2})  # read per request
    cells = [{"time": t, "metric": "heart_rate", "value": 70} for t in range(3)]
    typed(client.post(f"{API}/tensors/{tensor['id']}/values", json={"values": cells}), 413, ProblemType.too_large)
    app.state.settings = settings
    with login_as("viewer") as viewer:
        typed(viewer.post(f"{API}/entities", json={"kind": "patient", "name": "X"}), 403, ProblemType.forbidden)


def test_sign_in_refusals_name_their_types(anon_client: TestClient, login_as: Callable[..., TestClient]) -> None:
    login_as("viewer", username="bob").close()
    wrong = {"username": "bob", "password": "wrong"}
    for _ in range(5):
        typed(anon_client.post(f"{API}/auth/token", data=wrong), 401, ProblemType.unauthorized)
    locked = typed(anon_client.post(f"{API}/auth/token", data=wrong), 429, ProblemType.too_many_requests)
    assert "retry in" in locked["detail"]
    login_as("viewer", username="carol").close()
    pair = anon_client.post(f"{API}/auth/token", data={"username": "carol", "password": PASSWORD}).json()
    spent = {"refresh_token": pair["refresh_token"]}
    assert anon_client.post(f"{API}/auth/refresh", json=spent).status_code == 200
    typed(anon_client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 43}), 401, ProblemType.unauthorized)
    reused = typed(anon_client.post(f"{API}/auth/refresh", json=spent), 401, ProblemType.refresh_token_reused)
    assert "every token of its sign-in is now revoked" in reused["detail"]


def test_idempotency_refusals_name_their_types(app: FastAPI, client: TestClient) -> None:
    path, body = f"{API}/entities", {"kind": "patient", "name": "Once"}
    typed(client.post(path, json=body, headers={"Idempotency-Key": "k" * 256}), 400, ProblemType.bad_request)
    assert client.post(path, json=body, headers={"Idempotency-Key": "once"}).status_code == 201
    other = client.post(path, json={**body, "name": "Twice"}, headers={"Idempotency-Key": "once"})
    assert "use a new key" in typed(other, 422, ProblemType.idempotency_mismatch)["detail"]
    # A request holding its key, still running: claimed as the middleware claims it, never settled.
    me = client.get(f"{API}/auth/me").json()["id"]
    content = json.dumps(body).encode()
    target = f"{path}?".encode()
    where = f"{me}:{hashlib.sha256(target).hexdigest()}"
    with app.state.sessions() as session, session.begin():
        fingerprint = hashlib.sha256(target + b"\n" + content).hexdigest()
        owner, lease = idempotency.this_process(os.getpid()), datetime.now(UTC) + idempotency.LEASE
        assert idempotency_repo.claim(session, where, "running", fingerprint, owner, lease) is None
    running = client.post(
        path, content=content, headers={"Idempotency-Key": "running", "content-type": "application/json"}
    )
    typed(running, 409, ProblemType.idempotency_in_progress)


def test_server_failures_name_their_types(new_app: FastAPI) -> None:
    app, client = new_app, TestClient(new_app, raise_server_exceptions=False)  # neither route signs in

    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    typed(client.get("/boom"), 500, ProblemType.internal_error)

    class Unreachable:
        def connect(self) -> None:
            raise ConnectionRefusedError

    engine, app.state.engine = app.state.engine, Unreachable()
    try:
        typed(client.get("/readyz"), 503, ProblemType.unavailable)
    finally:
        app.state.engine = engine


def test_a_late_body_is_a_typed_408(settings: Settings, login_as: Callable[..., TestClient]) -> None:
    app = create_app(settings.model_copy(update={"request_timeout_seconds": 0.3}), migrate=False)
    with login_as("admin") as admin:
        sent = asyncio.run(_late_body(app, admin.headers["Authorization"], b'{"kind": "patient"'))
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["type"] == ProblemType.request_timeout


class _Transport:
    def __init__(self) -> None:
        self.sent = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("status", "type_"), [(431, ProblemType.header_too_large), (408, ProblemType.request_timeout)])
def test_protocol_refusals_name_their_types(status: int, type_: ProblemType) -> None:
    """What ``dust serve``'s protocol answers before the app sees a request (its timing: test_slow_clients)."""
    protocol = BoundedHttpToolsProtocol.__new__(BoundedHttpToolsProtocol)  # only what _refuse touches
    protocol.cycle, protocol.transport = None, _Transport()  # type: ignore[assignment]
    protocol._refuse(status, type_, "why")
    head, _, body = protocol.transport.sent.partition(b"\r\n\r\n")  # type: ignore[attr-defined]
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"application/problem+json" in head
    assert json.loads(body) == {"type": type_, "title": json.loads(body)["title"], "status": status, "detail": "why"}


def test_the_busy_answer_names_its_type() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    asyncio.run(_busy({"type": "http", "method": "GET", "headers": []}, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503 and json.loads(sent[1]["body"])["type"] == ProblemType.unavailable


def test_about_blank_cannot_be_answered() -> None:
    """``problem()`` takes a type of the vocabulary only; every engine error class names one."""
    with pytest.raises(ValueError, match="about:blank"):
        problem(400, "x", type_="about:blank")  # type: ignore[arg-type]
    classes, stack = [], [DustError]
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack.extend(cls.__subclasses__())
    assert ToolFailed in classes
    assert all(cls.type in set(ProblemType) for cls in classes)


def test_the_vocabulary_is_documented_and_in_the_openapi_document(client: TestClient) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    errors = doc[doc.index("## Errors") :]
    assert [t for t in ProblemType if f"`{t.value}`" not in errors] == []
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Problem"]["properties"]["type"]["$ref"] == "#/components/schemas/ProblemType"
    assert set(schemas["ProblemType"]["enum"]) == set(ProblemType)


def _entity(client: TestClient) -> str:
    response = client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_database_out_of_reach_is_503_with_retry_after_on_every_path(settings: Settings) -> None:
    """On the event loop (/auth/me) and in the thread pool (a list) alike: the request was fine, nothing changed."""
    nowhere = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:9/none"})
    with TestClient(create_app(nowhere, migrate=False), raise_server_exceptions=False) as offline:
        for path in ("/api/v1/auth/me", "/api/v1/entities"):
            response = offline.get(path, headers={"Authorization": "Bearer some.access.token"})
            assert response.status_code == 503, (path, response.text)
            assert response.headers["Retry-After"] == "5"
            assert response.json()["type"].endswith("/unavailable")
            assert "retry shortly" in response.json()["detail"]
