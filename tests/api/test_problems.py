"""Framework-level errors are RFC 9457 problem+json too, and say what is allowed."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
