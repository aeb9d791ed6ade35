"""Field types shared by the engine's input models."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator


def _printable(text: str) -> str:
    if any(ord(c) < 32 for c in text):
        raise ValueError("must not contain control characters")
    if not text.strip():
        raise ValueError("must not be blank")
    return text


def _plain_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # JSON has no NaN or infinity: PostgreSQL would refuse them and responses could not carry them.
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(
            "attributes must be plain JSON: objects, arrays, strings, finite numbers, booleans and null"
        ) from None
    return value


Text = Annotated[str, AfterValidator(_printable)]
"""A non-blank string without control characters."""

Attributes = Annotated[dict[str, Any], AfterValidator(_plain_json)]
"""A JSON object without NaN or infinity."""
