"""What the pages share: running engine calls for the signed-in user and showing their errors as the API words them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import dash_bootstrap_components as dbc
from dash import html
from sqlalchemy.orm import Session

from dust.core.errors import DustError
from dust.ui.auth import signed_session

T = TypeVar("T")
PREFIX = "/ui"


def run(work: Callable[[Session], T], *, write: bool = False) -> tuple[T | None, str | None]:
    """``work(session)`` as the signed-in user: (its result, None), or (None, the error's text) when the engine
    refuses — the same text the API's problem+json ``detail`` carries."""
    try:
        with signed_session(write=write) as session:
            return work(session), None
    except DustError as error:
        return None, error.detail


def problem(text: str | None) -> Any:
    """An error shown where it happened, read out by screen readers."""
    return dbc.Alert(text, color="danger", className="py-2 my-2") if text else None  # rendered with role="alert"


def done(text: str) -> Any:
    return dbc.Alert(text, color="success", className="py-2 my-2", duration=6000)


def entity_href(entity_id: Any) -> str:
    return f"{PREFIX}/entity/{entity_id}"


def as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def parse_filters(text: str | None) -> dict[str, Any]:
    """``key=value`` pairs separated by commas or new lines, values typed as JSON when they parse (``age=42`` is a
    number, ``role=doctor`` text), as the API's ``attr.<key>=<value>`` filters are."""
    found: dict[str, Any] = {}
    for part in (text or "").replace("\n", ",").split(","):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"'{part.strip()}' is not key=value")
        try:
            found[key.strip()] = json.loads(raw.strip())
        except ValueError:
            found[key.strip()] = raw.strip()
    return found


def empty_state(text: str) -> Any:
    return html.P(text, className="text-muted fst-italic my-2")
