"""The errors the engine raises. Each maps to one HTTP status and becomes RFC 9457 problem+json at the edge.

The engine never imports the web framework; it raises these, and ``dust.api.problems`` renders them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from difflib import get_close_matches
from enum import StrEnum
from typing import Any

PROBLEMS = "https://dust.dev/problems/"


class ProblemType(StrEnum):
    """The fixed vocabulary of problem types (docs/api.md#errors): every error names one, never about:blank."""

    bad_request = f"{PROBLEMS}bad-request"
    invalid_input = f"{PROBLEMS}invalid-input"
    out_of_range = f"{PROBLEMS}out-of-range"
    idempotency_mismatch = f"{PROBLEMS}idempotency-mismatch"
    unauthorized = f"{PROBLEMS}unauthorized"
    refresh_token_reused = f"{PROBLEMS}refresh-token-reused"
    forbidden = f"{PROBLEMS}forbidden"
    not_found = f"{PROBLEMS}not-found"
    method_not_allowed = f"{PROBLEMS}method-not-allowed"
    request_timeout = f"{PROBLEMS}request-timeout"
    conflict = f"{PROBLEMS}conflict"
    idempotency_in_progress = f"{PROBLEMS}idempotency-in-progress"
    too_large = f"{PROBLEMS}too-large"
    too_many_requests = f"{PROBLEMS}too-many-requests"
    header_too_large = f"{PROBLEMS}header-too-large"
    internal_error = f"{PROBLEMS}internal-error"
    unavailable = f"{PROBLEMS}unavailable"


class DustError(Exception):
    """Base class: a problem with a status, a short title and a detail that says what is allowed.

    ``code`` is the field-level kind of the problem (``unknown_label``, ``out_of_range`` …, as pydantic's error
    types), for when it becomes one item of another error's ``errors`` (docs/api.md#errors).
    """

    status = 400
    title = "Bad request"
    type = ProblemType.bad_request
    code = "invalid_value"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.code = code or self.code
        self.extra = extra


class InvalidInput(DustError):
    status = 422
    title = "Invalid input"
    type = ProblemType.invalid_input


class OutOfRange(InvalidInput):
    """A time outside what a tensor can hold, or has recorded."""

    title = "Out of range"
    type = ProblemType.out_of_range
    code = "time_out_of_range"


class Unauthorized(DustError):
    """No credential, or one that does not identify an active user."""

    status = 401
    title = "Unauthorized"
    type = ProblemType.unauthorized

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="dust"'})


class Forbidden(DustError):
    status = 403
    title = "Forbidden"
    type = ProblemType.forbidden


class NotFound(DustError):
    status = 404
    title = "Not found"
    type = ProblemType.not_found


class Conflict(DustError):
    status = 409
    title = "Conflict"
    type = ProblemType.conflict


class TooLarge(DustError):
    status = 413
    title = "Content too large"
    type = ProblemType.too_large


class Unavailable(DustError):
    status = 503
    title = "Service unavailable"
    type = ProblemType.unavailable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix when one of ``choices`` is close to ``word``, else ''."""
    match = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def invalid_input(errors: Sequence[Mapping[str, Any]]) -> InvalidInput:
    """pydantic's ``errors()`` (of a request, or of the embedded API's arguments and models) in the words of
    every 422: ``detail`` names where the first problem is and what is wrong, and how many more there are;
    ``errors`` holds each as ``{loc, msg, type}``."""
    found = [field_error(e) for e in errors]
    first = found[0] if found else {"loc": ["request"], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return InvalidInput(f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}", errors=found)


def field_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One pydantic error as an item of a problem's ``errors``."""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        message = f"body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    return {"loc": list(error.get("loc", [])), "msg": message, "type": error.get("type")}
