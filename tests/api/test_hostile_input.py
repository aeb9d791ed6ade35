"""Cheap hostile inputs from the outside security review, against the served API on every backend: each is a
4xx problem that says what was wrong, and changes nothing. A 5xx is a bug."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dust.core.config import Settings

API = "/api/v1"
PROBLEM = "application/problem+json"


@pytest.fixture
def world(client: TestClient) -> dict[str, str]:
    """A patient the filters find, a tensor of hers with one value, and the state to compare against."""
    client.post(f"{API}/schemas", json={"name": "vitals", "axes": [{"name": "metric", "labels": ["hr"]}]})
    jane = client.post(f"{API}/patients", json={"name": "Jane", "attributes": {"gender": "F", "age": 51}})
    tensor = client.post(f"{API}/tensors", json={"entity_id": jane.json()["id"], "schema": "vitals"}).json()["id"]
    client.post(f"{API}/tensors/{tensor}/values", json={"values": [{"time": 0, "metric": "hr", "value": 70}]})
    return {"entity_id": jane.json()["id"], "tensor_id": tensor}


def state(client: TestClient, world: dict[str, str]) -> Any:
    """Everything a rejected request might have changed; the gender filter must keep answering (on PostgreSQL a
    stored NUL or lone surrogate made it fail for everyone)."""
    found = client.get(f"{API}/patients", params={"attr.gender": "F"})
    assert found.status_code == 200, found.text
    return (
        [e["id"] for e in found.json()["items"]],
        client.get(f"{API}/entities", params={"limit": 500}).json()["items"],
        client.get(f"{API}/relations").json()["items"],
        client.get(f"{API}/tensor/{world['tensor_id']}").json()["values"],
    )


def assert_problem(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def nested(depth: int, open_: bytes = b'{"a":', close: bytes = b"}") -> bytes:
    """An attributes object ``depth`` levels deep (the attributes object itself is level 1)."""
    return open_ * (depth - 1) + b"1" + close * (depth - 1)


# (method, path, content type, raw body, words the detail must hold). "{entity}" is the world's patient.
BAD_TEXT = {
    "lone surrogate attribute key": (
        "POST",
        "/entities",
        "application/json",
        rb'{"kind": "patient", "name": "x", "attributes": {"\ud800": 1}}',
        ["attributes", "U+D800", "lone surrogate"],
    ),
    "NUL value, mixed-case media type": (
        "POST",
        "/entities",
        "Application/Json",
        rb'{"kind": "patient", "name": "x", "attributes": {"gender": "\u0000"}}',
        ["gender", "U+0000", "NUL"],
    ),
    "NUL, upper-case media type with charset": (
        "POST",
        "/entities",
        "APPLICATION/JSON; charset=UTF-8",
        rb'{"kind": "patient", "name": "x\u0000y"}',
        ["name", "NUL"],
    ),
    "low surrogate, upper-case escape, nested": (
        "POST",
        "/entities",
        "application/json",
        rb'{"kind": "patient", "name": "x", "attributes": {"a": [{"b": "x\uDC00"}]}}',
        ["U+DC00", "lone surrogate"],
    ),
    "surrogate as raw UTF-8 bytes": (
        "POST",
        "/entities",
        "application/json",
        b'{"kind": "patient", "name": "x\xed\xa0\x80"}',
        ["name", "U+D800"],
    ),
    "surrogate in a field the engine does not check": (
        "POST",
        "/entities",
        "application/json",
        rb'{"kind": "pat\ud83dient", "name": "x"}',
        ["kind", "U+D83D"],
    ),
    "merge-patch media type": (
        "PATCH",
        "/entities/{entity}",
        "application/merge-patch+json",
        rb'{"attributes": {"\udfff": null}}',
        ["U+DFFF"],
    ),
    "UTF-16 body": (
        "POST",
        "/entities",
        "application/json",
        json.dumps({"kind": "patient", "name": "x", "attributes": {"g": "\x00"}}).encode("utf-16"),
        ["NUL"],
    ),
    "form body": ("POST", "/auth/token", "application/x-www-form-urlencoded", b"username=a%00&password=b", ["NUL"]),
    "query: surrogate": ("GET", "/patients?attr.gender=%ED%A0%80", None, b"", ["query", "UTF-8", "%ED%A0%80"]),
    "query: NUL": ("GET", "/patients?attr.gender=%00", None, b"", ["query", "NUL"]),
    "query: surrogate in a search": ("GET", "/entities?q=%ed%a0%80", None, b"", ["query", "UTF-8"]),
}


@pytest.mark.parametrize("case", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_nul_and_lone_surrogates_are_refused(client: TestClient, world: dict[str, str], case: tuple) -> None:
    """Finding A: no key or string anywhere may hold NUL or a lone surrogate, whatever the media type's case."""
    method, path, media, body, words = case
    before = state(client, world)
    headers = {"Content-Type": media} if media else {}
    response = client.request(method, API + path.format(entity=world["entity_id"]), content=body, headers=headers)
    assert_problem(response, 422, *words)
    assert state(client, world) == before


FINE_TEXT = {
    "surrogate pair (an emoji)": (rb'"\ud83d\ude00"', "\U0001f600"),
    "escaped backslash before u0000": (rb'"\\u0000"', "\\u0000"),
    "escaped backslash before ud800": (rb'"a\\ud800"', "a\\ud800"),
    "tab and line breaks in a value": (rb'"a\tb\nc\r"', "a\tb\nc\r"),
}


@pytest.mark.parametrize(("raw", "stored"), FINE_TEXT.values(), ids=FINE_TEXT.keys())
def test_text_that_only_looks_bad_is_stored_exactly(
    client: TestClient, world: dict[str, str], raw: bytes, stored: str
) -> None:
    body = b'{"kind": "patient", "name": "x", "attributes": {"note": ' + raw + b"}}"
    made = client.post(f"{API}/entities", content=body, headers={"Content-Type": "application/json"})
    assert made.status_code == 201, made.text
    assert client.get(f"{API}/entities/{made.json()['id']}").json()["attributes"] == {"note": stored}
    assert client.get(f"{API}/patients", params={"attr.note": stored}).json()["items"][0]["id"] == made.json()["id"]
    state(client, world)  # the filters still answer


# (field, value, words the detail must hold)
HIDDEN_CHARACTERS = {
    "zero-width space in a name": ("name", "Jane\u200bDoe", ["name", "U+200B", "ZERO WIDTH SPACE", "character 5"]),
    "bidi override in a name": ("name", "\u202eeoD enaJ", ["U+202E", "RIGHT-TO-LEFT OVERRIDE"]),
    "bidi isolate in an external id": ("external_id", "MRN\u20661", ["external_id", "U+2066"]),
    "word joiner in a name": ("name", "Ja\u2060ne", ["U+2060"]),
    "BOM in a name": ("name", "\ufeffJane", ["U+FEFF"]),
    "ZWJ between ASCII letters": ("name", "Ja\u200dne", ["U+200D"]),
    "C1 control in a name": ("name", "Jane\x85", ["U+0085"]),
    "DEL in a name": ("name", "Jane\x7f", ["U+007F"]),
    "line separator in a name": ("name", "Jane\u2028Doe", ["U+2028"]),
    "bell in an attribute value": ("attributes", {"note": "ding\x07"}, ["attributes.note", "U+0007"]),
    "escape in a nested value": ("attributes", {"a": ["ok", {"b": "\x1b[31m"}]}, ["attributes.a[1].b", "U+001B"]),
    "C1 control in a value": ("attributes", {"note": "x\x9b"}, ["U+009B"]),
    "line feed in a key": ("attributes", {"a\nb": 1}, ["key", "U+000A"]),
    "zero-width space in a key": ("attributes", {"gen\u200bder": "F"}, ["key", "U+200B"]),
}


@pytest.mark.parametrize(("field", "value", "words"), HIDDEN_CHARACTERS.values(), ids=HIDDEN_CHARACTERS.keys())
def test_hidden_and_control_characters_are_refused(
    client: TestClient, world: dict[str, str], field: str, value: Any, words: list[str]
) -> None:
    """Finding B: names and ids hold no format or control characters, attribute values no controls."""
    before = state(client, world)
    body = {"kind": "patient", "name": "x", field: value}
    assert_problem(client.post(f"{API}/entities", json=body), 422, *words)
    assert_problem(client.patch(f"{API}/entities/{world['entity_id']}", json={field: value}), 422, *words)
    assert state(client, world) == before


ACCEPTED_NAMES = {
    "Persian ZWNJ": ("می\u200cخواهم", "می\u200cخواهم"),
    "Devanagari ZWJ after a virama": ("क्\u200dष", "क्\u200dष"),
    "decomposed accent (NFC)": ("Jose\u0301", "José"),
    "emoji": ("Jane 😀", "Jane 😀"),
}


@pytest.mark.parametrize(("name", "stored"), ACCEPTED_NAMES.values(), ids=ACCEPTED_NAMES.keys())
def test_names_scripts_need_are_kept_normalised(client: TestClient, name: str, stored: str) -> None:
    made = client.post(f"{API}/entities", json={"kind": "patient", "name": name, "external_id": name})
    assert made.status_code == 201, made.text
    assert made.json()["name"] == made.json()["external_id"] == stored


def deep(depth: int, array: bool = False) -> bytes:
    """An entity whose attributes nest ``depth`` levels (the attributes object itself is level 1)."""
    opening, closing = (b"[", b"]") if array else (b'{"a": ', b"}")
    attributes = b'{"a": ' + opening * (depth - 1) + b"1" + closing * (depth - 1) + b"}"
    return b'{"kind": "patient", "name": "x", "attributes": ' + attributes + b"}"


# (method, path, query, body, words the detail must hold); "{tensor}" is the world's tensor.
CHEAP_500S = {
    "cursor position a number": (
        "GET",
        "/entities",
        {"cursor": "WyJrIiwgWyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgNV1d"},
        None,
        ["cursor", "[time, id]"],
    ),
    "cursor position an object": ("GET", "/entities", {"cursor": "WyJrIiwgeyJhIjogMX1d"}, None, ["cursor"]),
    "cursor offset 1e999": (
        "GET",
        "/entities",
        {"q": "jane", "cursor": cursor(b'["o", 1e999]')},
        None,
        ["cursor", "integer 0..2147483647"],
    ),
    "cursor offset a float": ("GET", "/entities", {"q": "jane", "cursor": cursor(b'["o", 1.0]')}, None, ["cursor"]),
    "cursor offset a bool": ("GET", "/entities", {"q": "jane", "cursor": cursor(b'["o", true]')}, None, ["cursor"]),
    "cursor offset of 5000 digits": (
        "GET",
        "/entities",
        {"q": "j", "cursor": cursor(b'["o", ' + b"9" * 300 + b"]")},
        None,
        ["cursor"],
    ),
    "audit cursor 1e999": ("GET", "/audit", {"cursor": cursor(b'["o", 1e999]')}, None, ["cursor"]),
    "audit cursor past integer": (
        "GET",
        "/audit",
        {"cursor": cursor(b'["o", 2147483648]')},
        None,
        ["cursor", "2147483647"],
    ),
    "audit cursor past bigint": ("GET", "/audit", {"cursor": cursor(b'["o", 99999999999999999999]')}, None, ["cursor"]),
    "filter 1 and 400 zeros": (
        "GET",
        "/patients",
        {"attr.age": "1" + "0" * 400},
        None,
        ["attr.age", "finite", "float64"],
    ),
    "filter of 5000 digits": ("GET", "/patients", {"attr.age": "9" * 5000}, None, ["attr.age", "float64"]),
    "filter 1e999": ("GET", "/patients", {"attr.age": "-1e999"}, None, ["attr.age", "float64"]),
    "read at a 5000-digit time": ("GET", "/tensor/{tensor}", {"time": "9" * 5000}, None, ["time"]),
    "write at a 5000-digit time string": (
        "POST",
        "/tensors/{tensor}/values",
        {},
        json.dumps({"values": [{"time": "9" * 5000, "metric": "hr", "value": 1}]}).encode(),
        ["values[0]", "run from -100,000,000 to 100,000,000"],
    ),
    "write at a 5000-digit time number": (
        "POST",
        "/tensors/{tensor}/values",
        {},
        b'{"values": [{"time": ' + b"9" * 5000 + b', "metric": "hr", "value": 1}]}',
        ["4300 digits"],
    ),
    "write a 5000-digit value": (
        "POST",
        "/tensors/{tensor}/values",
        {},
        b'{"values": [{"time": 1, "metric": "hr", "value": ' + b"9" * 5000 + b"}]}",
        ["4300 digits"],
    ),
    "attributes 33 deep": ("POST", "/entities", {}, deep(33), ["attributes", "deeper than 32 levels"]),
    "attributes 255 deep": ("POST", "/entities", {}, deep(255, array=True), ["deeper than 32 levels"]),
    "attributes 256 deep": ("POST", "/entities", {}, deep(256), ["deeper than 32 levels"]),
    "attributes 257 deep": ("POST", "/entities", {}, deep(257, array=True), ["deeper than 32 levels"]),
    "attributes 1000 deep": ("POST", "/entities", {}, deep(1000), ["nests", "too deeply", "32 levels"]),
    "attributes 100000 deep": ("POST", "/entities", {}, deep(100_000, array=True), ["too deeply"]),
}


@pytest.mark.parametrize("case", CHEAP_500S.values(), ids=CHEAP_500S.keys())
def test_cheap_inputs_are_422_not_500(client: TestClient, world: dict[str, str], case: tuple) -> None:
    """Finding C: forged cursors, huge numbers and deep nesting are refused with what is allowed."""
    method, path, query, body, words = case
    before = state(client, world)
    response = client.request(
        method,
        API + path.format(tensor=world["tensor_id"]),
        params=query,
        content=body,
        headers={"Content-Type": "application/json"} if body else {},
    )
    assert_problem(response, 422, *words)
    assert state(client, world) == before


@pytest.mark.parametrize("depth", [1, 32])
def test_attributes_nest_up_to_the_bound(client: TestClient, depth: int) -> None:
    made = client.post(f"{API}/entities", content=deep(depth), headers={"Content-Type": "application/json"})
    assert made.status_code == 201, made.text


def forge(settings: Settings, payload: bytes) -> str:
    """An HS256 token over ``payload`` exactly as given, signed with the server's own key."""
    secret = settings.secret_key
    key = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret

    def encode(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signed = encode(b'{"alg":"HS256","typ":"JWT"}') + "." + encode(payload)
    mac = hmac.new(str(key).encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + encode(mac)


def me_with(anon_client: TestClient, settings: Settings, payload: bytes) -> Any:
    return anon_client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {forge(settings, payload)}"})


# Claims over a good token's, as functions of now (a token made at import could expire during a long run).
ODD_CLAIMS = {
    "exp 10**20": lambda now: {"exp": 10**20},
    "exp 1e300": lambda now: {"exp": 1e300},
    "exp a string": lambda now: {"exp": str(now + 600)},
    "exp a float": lambda now: {"exp": now + 600.5},
    "exp a bool": lambda now: {"exp": True},
    "exp past year 9999": lambda now: {"exp": 253402300800},
    "iat 10**20": lambda now: {"iat": 10**20},
    "iat -10**20": lambda now: {"iat": -(10**20)},
    "nbf 10**20": lambda now: {"nbf": 10**20},
    "nbf a float": lambda now: {"nbf": now - 0.5},
    "sub a number": lambda now: {"sub": 12345},
    "ver a list": lambda now: {"ver": [1]},
}


@pytest.mark.parametrize("odd", ODD_CLAIMS.values(), ids=ODD_CLAIMS.keys())
def test_tokens_with_odd_claims_are_401(
    anon_client: TestClient, client: TestClient, world: dict[str, str], settings: Settings, odd: Any
) -> None:
    """Finding C: a token signed with the right key but with claims out of range is invalid, not a crash."""
    now = int(time.time())
    good = {"iss": "dust", "sub": client.get(f"{API}/auth/me").json()["id"], "role": "admin", "ver": 0}
    good |= {"typ": "access", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600}
    assert me_with(anon_client, settings, json.dumps(good).encode()).status_code == 200  # the forgery is right
    before = state(client, world)
    response = me_with(anon_client, settings, json.dumps({**good, **odd(now)}).encode())
    assert_problem(response, 401, "token")
    assert "is invalid" in response.json()["detail"] or "has expired" in response.json()["detail"]  # exp true is 1
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert state(client, world) == before


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"NaN", b"9" * 5000], ids=["inf", "-inf", "nan", "digits"])
def test_tokens_with_non_json_numbers_are_401(
    anon_client: TestClient, client: TestClient, settings: Settings, raw: bytes
) -> None:
    subject = client.get(f"{API}/auth/me").json()["id"].encode()
    payload = (
        b'{"iss": "dust", "sub": "' + subject + b'", "role": "admin", "ver": 0, "typ": "access", "jti": "x", '
        b'"iat": ' + str(int(time.time())).encode() + b', "exp": ' + raw + b"}"
    )
    assert_problem(me_with(anon_client, settings, payload), 401, "token is invalid")
