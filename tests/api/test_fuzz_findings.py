"""What fuzzing the API from its own OpenAPI document found (tests/api/test_fuzz.py), each kept as a plain test.

1. Statuses the document did not list: it gave each operation 200 (or 201/204) and 422, while the API also
   answers 400, 401, 403, 404, 408, 409, 413 and 429 where they apply.
2. Every error is application/problem+json, but the document promised FastAPI's 422 body (HTTPValidationError,
   application/json) and nothing for other errors.
3. A number was taken as a time: `at=-212732747` read as 1963-04-04, `valid_from: 0` as 1970 (pydantic reads
   numbers as Unix seconds, or milliseconds past 2e10), where the document and the docs say ISO 8601.
4. The document offered what the API refuses: null for an entity's name and a relation's weight in PATCH, null
   for the sign-in form's fields; names without the characters the API refuses (added patterns must stay valid
   regexes in ECMA-262 engines, which refuse a class of lone surrogates; then they are ignored, not enforced).
5. The API took what the document refuses (found by `make fuzz`): `"expires_in_days": true` made a 1-day key,
   `"disabled": 0.0` enabled a user; pydantic reads true as 1, 0 as false, "7" as 7 and "0.5" as 0.5.
6. A time before year 1 or after 9999 once in UTC (`0001-01-01T00:00:00+00:01`): `GET /audit?from=` answered 500
   (found by `make fuzz`; tests/api/test_audit.py), a schema took it as the default origin of tensors that then
   could not be made, and `as_of` read it as a moment.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dust.api.problems import MEDIA_TYPE
from dust.engine.fields import NEVER_IN_NAMES, bad_name_char
from tests.api.conftest import API, VITALS, World


def conforms(app: FastAPI, method: str, path: str, response: Any) -> None:
    """``response`` is an answer the document gives for the operation: its status, media type and schema."""
    operation = schemathesis.openapi.from_dict(app.openapi())[API + path][method]
    template = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(API + path))
    sent = re.fullmatch(template, response.request.url.path)
    assert sent is not None, f"{response.request.url.path} is not {path}"
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    operation.Case(path_parameters=sent.groupdict()).validate_response(response, checks=checks)


def documents(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in app.openapi()["paths"].items() for m, op in ops.items()]


# --- 1 and 2: every error each operation gives is in the document, as problem+json -------------------------


def test_not_found_conflict_and_forbidden_are_documented(
    app: FastAPI, client: TestClient, world: World, login_as: Callable[..., TestClient]
) -> None:
    ghost = uuid.uuid4()
    conforms(app, "GET", "/users/{user_id}", client.get(f"{API}/users/{ghost}"))
    conforms(app, "GET", "/tensor/{tensor_id}", client.get(f"{API}/tensor/{ghost}"))
    conforms(app, "DELETE", "/auth/api-keys/{key_id}", client.delete(f"{API}/auth/api-keys/{ghost}"))
    conforms(app, "POST", "/schemas", client.post(f"{API}/schemas", json=VITALS))  # 409: exists
    conforms(app, "DELETE", "/schemas/{name}", client.delete(f"{API}/schemas/vitals"))  # 409: in use
    conforms(app, "PATCH", "/tensors/{tensor_id}", client.patch(f"{API}/tensors/{world['TPA']}", json={}))  # 422
    viewer = login_as("viewer")
    conforms(app, "POST", "/entities", viewer.post(f"{API}/entities", json={"kind": "x", "name": "y"}))  # 403
    clinician = login_as("clinician", entity_id=world["A"])
    refused = clinician.delete(f"{API}/relations/{world['A-treats']}")  # a granting type: admins only
    assert refused.status_code == 403
    conforms(app, "DELETE", "/relations/{relation_id}", refused)


def test_401_413_and_429_are_documented(app: FastAPI, anon_client: TestClient, client: TestClient) -> None:
    signed_out = anon_client.get(f"{API}/auth/me")
    assert signed_out.status_code == 401
    conforms(app, "GET", "/auth/me", signed_out)
    body = b"{" + b" " * 40_000_000 + b"}"  # over DUST_MAX_REQUEST_BYTES
    big = client.post(f"{API}/entities", content=body, headers={"content-type": "application/json"})
    assert big.status_code == 413
    conforms(app, "POST", "/entities", big)
    for _ in range(6):
        answer = anon_client.post(f"{API}/auth/token", data={"username": "admin", "password": "wrong password"})
    assert answer.status_code == 429 and "retry-after" in answer.headers
    conforms(app, "POST", "/auth/token", answer)


def test_every_operation_documents_its_errors_as_problems(app: FastAPI) -> None:
    doc = app.openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's 422 body, never sent
    assert {"type", "title", "status", "detail"} <= set(doc["components"]["schemas"]["Problem"]["properties"])
    wrong = []
    for method, path, operation in documents(app):
        responses = operation["responses"]
        expected = {"422"} | ({"401"} if operation.get("security") else set())
        upserts = {("put", f"{API}/kinds/{{kind}}"), ("put", f"{API}/weight-policies/{{type}}")}  # no 404: they create
        expected |= {"404"} if "{" in path and (method, path) not in upserts else set()
        expected |= {"409"} if method == "post" and operation.get("security") and "api-keys" not in path else set()
        expected |= {"413"} if "requestBody" in operation else set()
        missing = sorted(expected - set(responses))
        not_problems = [s for s, r in responses.items() if s[0] in "45" and set(r.get("content", {})) != {MEDIA_TYPE}]
        if missing or not_problems:
            wrong.append(f"{method.upper()} {path}: missing {missing}, not problem+json {not_problems}")
    assert not wrong, wrong


# --- 3: a number is not a time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/query_master/tensor", {"at": "-212732747"}),  # was 200, as of 1963-04-04
        ("/query_master/tensor", {"at": "1700000000000"}),  # milliseconds: 2023-11-14
        ("/audit", {"from": "0"}),
    ],
)
def test_a_number_is_not_a_timestamp_in_a_query(
    app: FastAPI, client: TestClient, path: str, params: dict[str, str]
) -> None:
    refused = client.get(f"{API}{path}", params=params)
    assert refused.status_code == 422 and "ISO 8601" in refused.json()["detail"], refused.text
    conforms(app, "GET", path, refused)


def test_a_number_is_not_a_timestamp_in_a_body(client: TestClient, world: World) -> None:
    edge = {"source_id": world["A"], "target_id": world["PB"], "type": "consults", "valid_from": 0}
    assert client.post(f"{API}/relations", json=edge).status_code == 422  # was 201, valid from 1970
    tensor = {"entity_id": world["A"], "schema": "vitals", "origin": 1_767_225_600}
    assert client.post(f"{API}/tensors", json=tensor).status_code == 422
    as_of = client.get(f"{API}/tensor/{world['TPA']}", params={"as_of": "3"})
    assert as_of.status_code == 422 and "ISO 8601" in as_of.json()["detail"]
    # what the document says still works
    assert client.get(f"{API}/tensor/{world['TPA']}", params={"as_of": "2026-01-05T08:00:00Z"}).status_code == 200
    assert client.post(f"{API}/relations", json={**edge, "valid_from": "2026-01-01T00:00:00Z"}).status_code == 201


# --- 4: the document offers only what the API takes ---------------------------------------------------------


def test_null_where_the_document_offers_none_is_422(app: FastAPI, client: TestClient, world: World) -> None:
    schemas = app.openapi()["components"]["schemas"]
    assert schemas["EntityUpdate"]["properties"]["name"].get("type") == "string"
    assert schemas["RelationUpdate"]["properties"]["weight"] == {"title": "Weight", "type": "number"}
    renamed = client.patch(f"{API}/entities/{world['PA']}", json={"name": None})
    assert renamed.status_code == 422 and "name cannot be null" in renamed.json()["detail"]
    reweighed = client.patch(f"{API}/relations/{world['A-consults']}", json={"weight": None})
    assert reweighed.status_code == 422 and "weight cannot be null" in reweighed.json()["detail"]


def test_the_sign_in_form_has_no_nulls(app: FastAPI, anon_client: TestClient) -> None:
    form = app.openapi()["components"]["schemas"]["Body_token_api_v1_auth_token_post"]["properties"]
    assert all("anyOf" not in field for field in form.values())
    assert form["grant_type"]["const"] == "password" and form["username"]["minLength"] == 1
    wrong_grant = anon_client.post(f"{API}/auth/token", data={"username": "a", "password": "b", "grant_type": "x"})
    assert wrong_grant.status_code == 422
    assert (
        anon_client.post(
            f"{API}/auth/token", data={"username": "a", "password": "b", "grant_type": "password"}
        ).status_code
        == 401
    )


def test_every_pattern_in_the_document_is_a_valid_regex(app: FastAPI) -> None:
    import jsonschema_rs  # the validator schemathesis judges responses and generated data with

    patterns: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                patterns.append(value) if key == "pattern" and isinstance(value, str) else walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(app.openapi())
    assert len(patterns) > 20
    for pattern in set(patterns):
        jsonschema_rs.validator_for({"type": "string", "pattern": pattern})  # raises on an invalid regex
        re.compile(pattern)


def test_the_names_pattern_is_what_the_engine_refuses() -> None:
    """The class in the document's name patterns holds exactly the characters below U+10000 that names may never
    hold, but ZWNJ/ZWJ (allowed between letters) and lone surrogates (which no JSON text carries)."""
    in_class = re.compile(f"[{NEVER_IN_NAMES}]")
    for code in range(0x10000):
        char = chr(code)
        never = bad_name_char(char) is not None and code not in (0x200C, 0x200D)
        if unicodedata.category(char) == "Cs":
            continue
        assert bool(in_class.match(char)) == never, f"U+{code:04X}"


# --- 5: a boolean is not a number, nor a number a boolean -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/auth/api-keys", {"name": "k", "expires_in_days": True}),  # was 201: a key for 1 day
        ("post", "/auth/api-keys", {"name": "k", "expires_in_days": "30"}),
        ("patch", "/users/{user}", {"disabled": 0.0}),  # was 200: the user stayed enabled
        ("patch", "/users/{user}", {"disabled": "yes"}),
        ("post", "/schemas", {**VITALS, "name": "v2", "sensitive": "yes"}),
        ("post", "/schemas", {**VITALS, "name": "v2", "time": {"unit": "day", "step": "7"}}),
        ("post", "/schemas", {**VITALS, "name": "v2", "time": {"unit": "day", "step": True}}),
        ("patch", "/tensors/{tensor}", {"schema_version": "1"}),
        ("patch", "/relations/{relation}", {"weight": "0.5"}),
    ],
)
def test_json_types_are_not_coerced(
    client: TestClient, world: World, login_as: Callable[..., TestClient], method: str, path: str, body: Any
) -> None:
    user = client.get(f"{API}/auth/me").json()["id"] if "{user}" in path else None
    target = path.format(user=user, tensor=world["TPA"], relation=world["A-consults"])
    refused = client.request(method.upper(), f"{API}{target}", json=body)
    assert refused.status_code == 422, refused.text
    assert client.get(f"{API}/auth/me").json()["disabled"] is False


def test_the_same_fields_take_their_json_types(client: TestClient, world: World) -> None:
    assert client.post(f"{API}/auth/api-keys", json={"name": "k", "expires_in_days": 30}).status_code == 201
    made = client.post(f"{API}/schemas", json={**VITALS, "name": "v2", "sensitive": True, "time": {"step": 7}})
    assert made.status_code == 201 and made.json()["time"]["step"] == 7
    assert client.patch(f"{API}/tensors/{world['TPA']}", json={"schema_version": 1}).status_code == 200
    assert client.patch(f"{API}/tensors/{world['TPA']}", json={"schema_version": 1.0}).status_code == 200  # JSON
    assert client.patch(f"{API}/relations/{world['A-consults']}", json={"weight": 0.5}).json()["weight"] == 0.5


# --- 6: a time must be a time in UTC --------------------------------------------------------------------------

EARLY, LATE = "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"


@pytest.mark.parametrize("when", [EARLY, LATE])
def test_a_time_outside_years_1_to_9999_in_utc_is_422(client: TestClient, world: World, when: str) -> None:
    schema = {**VITALS, "name": "early", "time": {"unit": "day", "origin": when}}
    refused = client.post(f"{API}/schemas", json=schema)  # was 201, and every tensor made from it 422
    assert refused.status_code == 422 and "years 1..9999" in refused.json()["detail"], refused.text
    assert client.get(f"{API}/tensor/{world['TPA']}", params={"as_of": when}).status_code == 422  # was 200


@pytest.mark.parametrize("when", [EARLY, LATE])
@pytest.mark.parametrize(("path", "bound"), [("/query_master/tensor", "at"), ("/audit", "to")])
def test_a_time_outside_years_1_to_9999_in_utc_is_422_as_a_query_parameter(
    client: TestClient, path: str, bound: str, when: str
) -> None:
    assert client.get(f"{API}{path}", params={bound: when}).status_code == 422
