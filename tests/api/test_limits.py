"""Bounds on input, on every backend: each size, count and length has a bound, and going past it is a 4xx problem
that says what is allowed — and changes nothing. The table in docs/reliability.md ("Limits and slow clients")
lists them; the ones that had none before are tested here, with the request deadline in-process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.api.app import create_app
from dust.core.config import Settings
from dust.engine.fields import MAX_ATTRIBUTES_BYTES, MAX_KEY_LENGTH
from tests.api.conftest import ONE_BACKEND

API = "/api/v1"
VITALS = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate", "spo2"]}]}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    found: dict[str, Any] = response.json()
    return found


def made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def entity(client: TestClient, **attributes: Any) -> dict[str, Any]:
    return made(client.post(f"{API}/entities", json={"kind": "patient", "name": "Jane", "attributes": attributes}))


def padding(size: int) -> dict[str, str]:
    """Attributes ``{"p": "xxx…"}`` of exactly ``size`` bytes as compact JSON."""
    return {"p": "x" * (size - len('{"p":""}'))}


# --- attributes -----------------------------------------------------------------------------------------------


def test_attributes_are_bounded_in_size(client: TestClient) -> None:
    assert entity(client, **padding(MAX_ATTRIBUTES_BYTES))["attributes"] == padding(MAX_ATTRIBUTES_BYTES)
    too_big = {"kind": "patient", "name": "Big", "attributes": padding(MAX_ATTRIBUTES_BYTES + 1)}
    refused = problem(client.post(f"{API}/entities", json=too_big), 422)
    assert f"{MAX_ATTRIBUTES_BYTES + 1} bytes" in refused["detail"] and str(MAX_ATTRIBUTES_BYTES) in refused["detail"]
    assert client.get(f"{API}/entities", params={"q": "Big"}).json()["items"] == []


def test_a_merge_patch_cannot_grow_attributes_past_the_bound(client: TestClient) -> None:
    """Each patch is small, but merged they would not be: the merged value is what is bounded."""
    half = MAX_ATTRIBUTES_BYTES // 2
    jane = entity(client, a="x" * half)
    refused = problem(client.patch(f"{API}/entities/{jane['id']}", json={"attributes": {"b": "y" * half}}), 422)
    assert refused["detail"].startswith("once merged, attributes are")
    assert client.get(f"{API}/entities/{jane['id']}").json()["attributes"] == {"a": "x" * half}
    other = entity(client)
    edge = {"source_id": jane["id"], "target_id": other["id"], "type": "knows", "attributes": {"a": "x" * half}}
    relation = made(client.post(f"{API}/relations", json=edge))
    patch = client.patch(f"{API}/relations/{relation['id']}", json={"attributes": {"b": "y" * half}})
    assert problem(patch, 422)["detail"].startswith("once merged")
    assert client.patch(f"{API}/relations/{relation['id']}", json={"attributes": {"a": None, "b": "y"}}).is_success


def test_attribute_keys_of_the_bound_are_kept_at_any_level(client: TestClient) -> None:
    longest = "k" * MAX_KEY_LENGTH
    assert entity(client, **{longest: {longest: 1}})["attributes"] == {longest: {longest: 1}}


@ONE_BACKEND  # refused by the request's validation, before any database work
@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"k" * (MAX_KEY_LENGTH + 1): 1}, id="top level"),
        pytest.param({"nested": {"k" * (MAX_KEY_LENGTH + 1): 1}}, id="nested"),
    ],
)
def test_attribute_keys_past_the_bound_are_422_at_any_level(client: TestClient, attributes: dict[str, Any]) -> None:
    body = {"kind": "patient", "name": "Long key", "attributes": attributes}
    assert f"over {MAX_KEY_LENGTH} characters" in problem(client.post(f"{API}/entities", json=body), 422)["detail"]


# --- query parameters -----------------------------------------------------------------------------------------


def test_attribute_filters_are_bounded_in_number(client: TestClient) -> None:
    """Each is a condition of one statement: 3,000 of them overflowed SQLite's expression depth (a 500)."""
    entity(client, k0=1)
    sixteen = {f"attr.k{i}": "1" for i in range(16)}
    assert client.get(f"{API}/entities", params=sixteen).json()["items"] == []
    many = {f"attr.k{i}": "1" for i in range(3000)}
    assert "at most 16 attr.<key> filters" in problem(client.get(f"{API}/entities", params=many), 422)["detail"]


@pytest.mark.parametrize("path", ["/relations", "/query_master/tensor", "/query_master"])
def test_relation_type_lists_are_bounded_in_number(client: TestClient, path: str) -> None:
    params = {"entity_id": entity(client)["id"]} if path == "/query_master" else {}
    assert client.get(f"{API}{path}", params={**params, "type": ",".join(["t"] * 32)}).status_code == 200
    refused = problem(client.get(f"{API}{path}", params={**params, "type": ",".join(["t"] * 33)}), 422)
    assert "at most 32 relation types" in refused["detail"]


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/entities", {"limit": 501}, 422, "less than or equal to 500"),
        ("/entities", {"q": "q" * 257}, 422, "at most 256 characters"),
        ("/entities", {"cursor": "c" * 4097}, 422, "at most 4096 characters"),
        ("/entities", {"kind": "k" * 65}, 422, "at most 64 characters"),
        ("/relations", {"type": "t" * 1001}, 422, "at most 1000 characters"),
        ("/audit", {"limit": 1001}, 422, "less than or equal to 1000"),
        ("/audit", {"user": "u" * 65}, 422, "at most 64 characters"),
        ("/schemas/vitals", {"version": 2**31}, 422, "less than or equal to 2147483647"),
    ],
)
def test_query_bounds_answer_a_problem(
    client: TestClient, path: str, params: dict[str, Any], status: int, says: str
) -> None:
    assert says in problem(client.get(f"{API}{path}", params=params), status)["detail"]


def test_tensor_read_parameters_are_one_per_axis(client: TestClient) -> None:
    """Every other parameter names an axis: an unknown one or one given twice is refused, so their number is
    bounded by the schema's axes (at most 8)."""
    made(client.post(f"{API}/schemas", json=VITALS))
    tensor = made(client.post(f"{API}/tensors", json={"entity_id": entity(client)["id"], "schema": "vitals"}))
    read = f"{API}/tensors/{tensor['id']}"
    assert "not an axis" in problem(client.get(read, params={"colour": "red"}), 422)["detail"]
    twice = client.get(f"{read}?metric=spo2&metric=heart_rate")
    assert "given twice" in problem(twice, 422)["detail"]
    assert "at most 64 characters" in problem(client.get(read, params={"time": "1" * 65}), 422)["detail"]


# --- bodies ---------------------------------------------------------------------------------------------------


def test_text_fields_without_a_bound_before_now_have_one(client: TestClient) -> None:
    unit = {"name": "units", "axes": [{"name": "metric", "labels": ["a"], "units": {"a": "u" * 65}}]}
    assert "at most 64 characters" in problem(client.post(f"{API}/schemas", json=unit), 422)["detail"]
    policy = client.put(f"{API}/kinds/patient", json={"sensitive": ["f" * (MAX_KEY_LENGTH + 1)]})
    assert f"at most {MAX_KEY_LENGTH} characters" in problem(policy, 422)["detail"]
    tensor = client.post(f"{API}/tensors", json={"entity_id": str(uuid.uuid4()), "schema": "s" * 100_000})
    assert len(problem(tensor, 422)["detail"]) < 200  # not a 404 quoting the name back
    refresh = client.post(f"{API}/auth/refresh", json={"refresh_token": "r" * 257})
    assert "at most 256 characters" in problem(refresh, 422)["detail"]


# --- responses ------------------------------------------------------------------------------------------------


def test_tensor_history_comes_in_bounded_pages(client: TestClient) -> None:
    made(client.post(f"{API}/schemas", json=VITALS))
    tensor = made(client.post(f"{API}/tensors", json={"entity_id": entity(client)["id"], "schema": "vitals"}))
    values = f"{API}/tensors/{tensor['id']}/values"
    for value in (70, 71, 72):  # each time step's value replaced twice: 2 history entries per step
        cells = [{"time": t, "metric": "spo2", "value": value} for t in (0, 1)]
        assert client.post(values, json={"values": cells}).status_code == 200
    history = f"{API}/tensors/{tensor['id']}/history"
    assert "less than or equal to 10000" in str(problem(client.get(history, params={"limit": 10_001}), 422))
    page = client.get(history, params={"limit": 3}).json()
    assert [(h["time"], h["value"]) for h in page["items"]] == [(0, 70), (0, 71), (1, 70)] and page["next_cursor"]
    narrowed = client.get(history, params={"from": 1, "to": 1}).json()
    assert [(h["time"], h["value"]) for h in narrowed["items"]] == [(1, 70), (1, 71)]


# --- the request deadline, in-process -----------------------------------------------------------------------


def test_a_body_late_past_the_deadline_is_408_and_does_nothing(
    settings: Settings, login_as: Callable[..., TestClient]
) -> None:
    """The JSON that arrives is a whole entity, but its declared length is not reached: a 408 must mean that
    nothing was done, and that an Idempotency-Key used on it is free for the retry."""
    app = create_app(settings.model_copy(update={"request_timeout_seconds": 0.3}), migrate=False)
    with login_as("admin") as admin:
        authorization = admin.headers["Authorization"]
        sent = asyncio.run(_late_body(app, authorization, b'{"kind": "patient", "name": "Late"}'))
        assert sent[0]["status"] == 408
        assert (b"connection", b"close") in sent[0]["headers"]
        assert b"DUST_REQUEST_TIMEOUT_SECONDS" in sent[1]["body"]
        assert len(sent) == 2  # nothing the app said after the 408
        assert admin.get(f"{API}/entities", params={"q": "Late"}).json()["items"] == []
        retry = {"kind": "patient", "name": "Late"}
        assert admin.post(f"{API}/entities", json=retry, headers={"Idempotency-Key": "late-1"}).status_code == 201


async def _late_body(app: FastAPI, authorization: str, first: bytes) -> list[dict[str, Any]]:
    parts = [{"type": "http.request", "body": first, "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.sleep(30)  # the rest never comes (the deadline cancels this wait)
        raise AssertionError("the deadline did not cut the wait")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"authorization", authorization.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(first) + 100).encode()),
        (b"idempotency-key", b"late-1"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/entities",
        "raw_path": f"{API}/entities".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent
