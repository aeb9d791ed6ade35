"""The errors the engine raises. Each maps to one HTTP status and becomes RFC 9457 problem+json at the edge.

The engine never imports the web framework; it raises these, and ``dust.api.problems`` renders them.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches
from typing import Any


class DustError(Exception):
    """Base class: a problem with a status, a short title and a detail that says what is allowed."""

    status = 400
    title = "Bad request"
    type = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extra = extra


class InvalidInput(DustError):
    status = 422
    title = "Invalid input"
    type = "https://dust.dev/problems/invalid-input"


class OutOfRange(InvalidInput):
    title = "Out of range"
    type = "https://dust.dev/problems/out-of-range"


class Unauthorized(DustError):
    """No credential, or one that does not identify an active user."""

    status = 401
    title = "Unauthorized"
    type = "https://dust.dev/problems/unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="dust"'})


class Forbidden(DustError):
    status = 403
    title = "Forbidden"
    type = "https://dust.dev/problems/forbidden"


class NotFound(DustError):
    status = 404
    title = "Not found"
    type = "https://dust.dev/problems/not-found"


class Conflict(DustError):
    status = 409
    title = "Conflict"
    type = "https://dust.dev/problems/conflict"


class TooLarge(DustError):
    status = 413
    title = "Content too large"
    type = "https://dust.dev/problems/too-large"


class Unavailable(DustError):
    status = 503
    title = "Service unavailable"
    type = "https://dust.dev/problems/unavailable"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix when one of ``choices`` is close to ``word``, else ''."""
    match = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
