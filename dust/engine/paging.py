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


def encode_cursor(tag: str, value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([tag, value]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tag: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found, value = json.loads(raw)
        if found != tag:
            raise ValueError
        if tag == KEYSET:
            datetime.fromisoformat(value[0])
            uuid.UUID(value[1])
        elif int(value) < 0:
            raise ValueError
        return value
    except (ValueError, TypeError, json.JSONDecodeError, IndexError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this list returned; pass next_cursor unchanged") from None


def keyset_after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    created, last = decode_cursor(cursor, KEYSET)
    try:
        when = datetime.fromisoformat(created)
        # a forged cursor may hold a time that leaves years 1..9999 once converted to UTC
        return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), uuid.UUID(last)
    except (OverflowError, ValueError):
        raise InvalidInput("cursor is not one this list returned; pass next_cursor unchanged") from None


def keyset_cursor(created_at: datetime, last_id: uuid.UUID) -> str:
    return encode_cursor(KEYSET, [created_at.isoformat(), str(last_id)])
