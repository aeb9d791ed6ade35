"""Opaque list cursors: a tag and a position, base64url-encoded JSON."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from dust.core.errors import InvalidInput

KEYSET = "k"  # [created_at, id] of the last item returned
OFFSET = "o"  # position in a ranked result
MAX_OFFSET = 2**31 - 1  # PostgreSQL's integer: the largest OFFSET and audit id a cursor may carry
_FORGED = "cursor is not one this list returned; pass next_cursor unchanged"


def encode_cursor(tag: str, value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([tag, value]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tag: str) -> Any:
    """The position in ``cursor``, checked strictly: it reaches SQL, so a forged one must fail here with 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (ValueError, RecursionError):  # bad base64, UTF-8 or JSON, or an integer of over 4300 digits
        raise InvalidInput(_FORGED) from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == tag):
        raise InvalidInput(_FORGED)
    value = decoded[1]
    if tag == KEYSET and not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InvalidInput(f"{_FORGED} (a position is [time, id])")
    if tag == OFFSET and not (type(value) is int and 0 <= value <= MAX_OFFSET):  # not a bool, float or 1e999
        raise InvalidInput(f"{_FORGED} (a position is an integer 0..{MAX_OFFSET})")
    return value


def keyset_after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    created, last = decode_cursor(cursor, KEYSET)
    try:
        when = datetime.fromisoformat(created)
        # a forged cursor may hold a time that leaves years 1..9999 once converted to UTC
        return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), uuid.UUID(last)
    except (OverflowError, ValueError):
        raise InvalidInput(_FORGED) from None


def keyset_cursor(created_at: datetime, last_id: uuid.UUID) -> str:
    return encode_cursor(KEYSET, [created_at.isoformat(), str(last_id)])
