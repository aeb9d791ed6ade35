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
from starlette.exceptions import HTTPException

from dust.core.errors import DustError
from dust.engine.fields import MAX_ATTRIBUTE_DEPTH
from dust.engine.timegrid import MAX_TIME_INDEX

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
}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
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


async def _dust_error(request: Request, exc: DustError) -> JSONResponse:
    return problem(
        exc.status, exc.detail, title=exc.title, type_=exc.type, errors=exc.errors, headers=exc.headers, **exc.extra
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_field_error(e) for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(
        422, f"{where}: {first['msg']}{more}", type_="https://dust.dev/problems/invalid-input", errors=errors
    )


def _field_error(error: Any) -> dict[str, Any]:
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        message = f"body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    return {"loc": list(error.get("loc", [])), "msg": message, "type": error.get("type")}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    detail = str(exc.detail)
    unparsed = _unparsable_body(exc.__cause__) if exc.status_code == 400 else None
    if unparsed:
        return problem(422, unparsed, type_="https://dust.dev/problems/invalid-input")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; the API is listed at /docs"
    elif exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(request))
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        return problem(405, detail, headers={"Allow": allowed})
    return problem(exc.status_code, detail, headers=exc.headers)


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
            f"and within float64, time indices within 0..{MAX_TIME_INDEX}"
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
