"""RFC 9457 problem+json for every error: the engine's, the framework's and unexpected ones."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from dust.core.errors import DustError, ProblemType, invalid_input
from dust.core.logging import get_logger
from dust.engine.fields import MAX_ATTRIBUTE_DEPTH
from dust.engine.timegrid import MAX_TIME_INDEX, MIN_TIME_INDEX

log = get_logger(__name__)
MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
# The type of a framework error, which knows only its status.
_TYPES = {
    400: ProblemType.bad_request,
    401: ProblemType.unauthorized,
    403: ProblemType.forbidden,
    404: ProblemType.not_found,
    405: ProblemType.method_not_allowed,
    408: ProblemType.request_timeout,
    409: ProblemType.conflict,
    413: ProblemType.too_large,
    422: ProblemType.invalid_input,
    429: ProblemType.too_many_requests,
    431: ProblemType.header_too_large,
    503: ProblemType.unavailable,
}


def problem(
    status: int,
    detail: str,
    *,
    type_: ProblemType,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem+json answer; ``type_`` from the fixed vocabulary (a plain string that is not in it raises)."""
    body: dict[str, Any] = {
        "type": ProblemType(type_).value,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": _encodable(detail),
        **extra,
    }
    if errors:
        body["errors"] = [{**e, "msg": _encodable(e["msg"])} if isinstance(e.get("msg"), str) else e for e in errors]
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _encodable(text: str) -> str:
    # A message quoting input with a lone surrogate could not be encoded as UTF-8: the answer would be a 500.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def install(app: FastAPI) -> None:
    app.add_exception_handler(DustError, _dust_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_unavailable)  # type: ignore[arg-type]


async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
    """The database could not be reached, lost the connection, or was too busy (locked, a statement timeout, a
    deadlock): nothing wrong with the request, and nothing was changed (its transaction rolled back)."""
    log.warning("database unavailable", path=request.url.path, error=str(exc.orig).splitlines()[0][:300])
    detail = "the database is unavailable or too busy right now; nothing was changed: retry shortly"
    return problem(503, detail, type_=ProblemType.unavailable, headers={"Retry-After": "5"})


async def _dust_error(request: Request, exc: DustError) -> JSONResponse:
    return problem(
        exc.status, exc.detail, title=exc.title, type_=exc.type, errors=exc.errors, headers=exc.headers, **exc.extra
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    invalid = invalid_input(exc.errors())  # worded as the embedded API words its InvalidInput
    return problem(422, invalid.detail, type_=ProblemType.invalid_input, errors=invalid.errors)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    detail = str(exc.detail)
    unparsed = _unparsable_body(exc.__cause__) if exc.status_code == 400 else None
    if unparsed:
        return problem(422, unparsed, type_=ProblemType.invalid_input)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; the API is listed at /docs"
    elif exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(request))
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        return problem(405, detail, type_=ProblemType.method_not_allowed, headers={"Allow": allowed})
    return problem(exc.status_code, detail, type_=_type_of(exc.status_code), headers=exc.headers)


def _type_of(status: int) -> ProblemType:
    """The problem type of an error known only by its status."""
    fallback = ProblemType.internal_error if status >= 500 else ProblemType.bad_request
    return _TYPES.get(status, fallback)


def _unparsable_body(cause: BaseException | None) -> str | None:
    """Why json.loads failed on a body in a way FastAPI calls only "an error parsing the body", or None."""
    if isinstance(cause, RecursionError):
        return (
            "body nests arrays or objects too deeply to parse; attributes may nest at most "
            f"{MAX_ATTRIBUTE_DEPTH} levels"
        )
    if isinstance(cause, UnicodeDecodeError):
        return "body is not valid UTF-8 (or UTF-16/32) JSON text"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return (
            f"body holds an integer of more than {sys.get_int_max_str_digits()} digits; numbers must be finite "
            f"and within float64, time indices from {MIN_TIME_INDEX:,} to {MAX_TIME_INDEX:,}"
        )
    return None


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API offers on this path (a route answers 405 knowing only its own)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if _template(template).fullmatch(request.url.path):
            methods.update(m.upper() for m in operations)
    return sorted(methods)


@lru_cache(maxsize=512)
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))
