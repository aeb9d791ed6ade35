"""The OpenAPI document tells the truth about errors: every 4xx an operation can answer is listed, each as
``application/problem+json`` with the ``Problem`` schema, so a generated client knows them and a fuzzer can
hold the server to them. (431 and 503 from ``dust serve``'s protocol, before any route is chosen, are not.)

Routes declare the statuses of their own (``responses={404: {"description": …}}``); the ones every operation
of a kind shares come from here, where the cause lives: the middleware refuses bad text in any path or query
(422) and bodies over the limit (413) or late (408), authentication (401) and roles (403) guard the signed-in
routes, and ``Idempotency-Key`` (400, 409) applies to every POST that does not issue a credential.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from dust.api.idempotency import MAX_KEY
from dust.api.problems import MEDIA_TYPE
from dust.core.config import Settings
from dust.core.errors import ProblemType
from dust.core.security import GRANTS, Permission

# Whatever the route, because of where the cause lives; a route's own description of a status wins.
SHARED = {
    400: "The Idempotency-Key header is not 1..255 characters.",
    401: "No credential, or one that does not identify an active user: sign in (WWW-Authenticate: Bearer).",
    403: "Your role cannot do this; ask an admin.",
    408: "The body did not arrive within DUST_REQUEST_TIMEOUT_SECONDS; the connection is closed.",
    409: "A request with this Idempotency-Key is still running; retry when it has finished.",
    413: "The request body is over DUST_MAX_REQUEST_BYTES.",
    422: "Invalid input: `detail` says what was wrong and what is allowed; `errors` lists each field problem.",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
}
_EVERY_ROLE = frozenset.intersection(*GRANTS.values())


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description='Where: ["body", "name"], ["query", "limit"], ["values", 3]…')
    msg: str
    type: str = Field(description="A short code, such as missing, string_too_long or unknown_label.")


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error."""

    model_config = ConfigDict(extra="allow")

    type: ProblemType = Field(description="A URI naming the kind of problem, one of a fixed vocabulary.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What was wrong and what is allowed.")
    errors: list[FieldProblem] = Field(default_factory=list, description="Each field problem, when there are any.")


def document(app: FastAPI, passthrough: frozenset[str]) -> None:
    """Complete ``app.openapi()`` with the problems; ``passthrough``: POST paths that ignore Idempotency-Key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()  # cached by FastAPI; completed here in place
            _add_problems(doc, passthrough)
            _add_settings(doc, app.state.settings)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_problems(doc: dict[str, Any], passthrough: frozenset[str]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}), Problem=problem)
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, which DUST never sends
        schemas.pop(unused, None)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in _shared(method, path, operation, passthrough):
                responses.setdefault(str(status), {"description": SHARED[status]})
            if "422" in responses and responses["422"].get("description") == "Validation Error":
                responses["422"]["description"] = SHARED[422]
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                    if int(status) in HEADERS:
                        response["headers"] = HEADERS[int(status)]
            if method == "post" and path not in passthrough:
                operation.setdefault("parameters", []).append(_IDEMPOTENCY_KEY)


def _add_settings(doc: dict[str, Any], settings: Settings) -> None:
    """Bounds that are settings: the document a server serves states that server's."""
    key_days = doc["components"]["schemas"].get("ApiKeyCreate", {}).get("properties", {}).get("expires_in_days")
    if key_days is not None:
        key_days["maximum"] = settings.api_key_max_days


def _shared(method: str, path: str, operation: dict[str, Any], passthrough: frozenset[str]) -> list[int]:
    statuses = [422]  # RejectBadText refuses NUL and lone surrogates in any path or query
    if "requestBody" in operation:
        statuses += [408, 413]  # RequestTimeout and BodyLimit, while the body arrives
    if operation.get("security"):
        statuses.append(401)
    permission = operation.get("x-permission")
    if permission is not None and Permission(permission) not in _EVERY_ROLE:
        statuses.append(403)
    if method == "post" and path not in passthrough:
        statuses += [400, 409]
    return statuses


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying with the same key returns the first response (Idempotent-Replayed: true) instead of "
    "doing the work again; per user, remembered DUST_IDEMPOTENCY_TTL_HOURS. The same key with another body is "
    "422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
}
