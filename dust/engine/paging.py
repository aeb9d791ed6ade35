"""Opaque list cursors: a tag and a position, base64url-encoded JSON.

A keyset position may carry what its page left owed (``dust.storage.repositories.paging.Walk``): the
transactions in progress when it was read, and how far the rows they committed behind it have been returned.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dust.core.errors import InvalidInput, Unavailable
from dust.storage.repositories.paging import Key, Walk, next_walk

KEYSET = "k"  # [created_at, id] of the last item returned
OFFSET = "o"  # position in a ranked result
MAX_OFFSET = 2**31 - 1  # PostgreSQL's integer: the largest OFFSET and audit id a cursor may carry
MAX_CURSOR = 4096  # characters: room for a few hundred transactions in progress (max_connections is 100 by default)
MAX_XID = 2**63 - 1  # a PostgreSQL transaction id (xid8) as bigint
FORGED = "cursor is not one this list returned; pass next_cursor unchanged"


def encode_cursor(tag: str, value: Any) -> str:
    # Not ASCII-escaped: a search position holds a name, whose characters would otherwise take up to 12 each.
    raw = json.dumps([tag, value], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, tag: str) -> Any:
    """The position in ``cursor``, checked strictly: it reaches SQL, so a forged one must fail here with 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (ValueError, RecursionError):  # bad base64, UTF-8 or JSON, or an integer of over 4300 digits
        raise InvalidInput(FORGED) from None
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == tag):
        raise InvalidInput(FORGED)
    value = decoded[1]
    if tag == KEYSET and not (
        isinstance(value, list) and len(value) in (2, 5) and all(isinstance(v, str) for v in value[:2])
    ):
        raise InvalidInput(f"{FORGED} (a position is [time, id])")
    if tag == OFFSET and not (isinstance(value, list) or _offset(value)):
        raise InvalidInput(f"{FORGED} (a position is an integer 0..{MAX_OFFSET})")
    return value


def _offset(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_OFFSET  # not a bool, float or 1e999


def keyset_after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    return _time_and_id(decode_cursor(cursor, KEYSET)[:2])


def _time_and_id(position: Any) -> tuple[datetime, uuid.UUID]:
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(v, str) for v in position)):
        raise InvalidInput(f"{FORGED} (a position is [time, id])")
    created, last = position
    try:
        when = datetime.fromisoformat(created)
        # a forged cursor may hold a time that leaves years 1..9999 once converted to UTC
        return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)), uuid.UUID(last)
    except (OverflowError, ValueError):
        raise InvalidInput(FORGED) from None


def keyset_cursor(created_at: datetime, last_id: uuid.UUID) -> str:
    return encode_cursor(KEYSET, [created_at.isoformat(), str(last_id)])


def keyset_walk(cursor: str | None) -> Walk:
    """Where the walk of a list in (created_at, id) order stands, from the cursor its last page handed out."""
    if not cursor:
        return Walk()
    value = decode_cursor(cursor, KEYSET)
    after = _time_and_id(value[:2])
    if len(value) == 2:
        return Walk(after)
    waiting, resuming, resume = value[2:]
    return Walk(after, _xids(waiting), _xids(resuming), None if resume is None else _time_and_id(resume))


def keyset_next_cursor(walk: Walk, rows: Sequence[Any], in_progress: frozenset[int], limit: int) -> str | None:
    """``next_cursor`` of a page of ``limit`` rows (with ``created_at`` and ``id``) read as ``rows``, one more
    asked for than shown: None when there was no more."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return keyset_next(next_walk(walk, (last.created_at, last.id), in_progress))


def keyset_next(walk: Walk) -> str:
    created, last = _key(walk.after)
    position: list[Any] = [created.isoformat(), str(last)]
    if walk.waiting or walk.resuming:
        resume = None if walk.resume is None else [_key(walk.resume)[0].isoformat(), str(_key(walk.resume)[1])]
        position += [_deltas(walk.waiting), _deltas(walk.resuming), resume]
    return _bounded(encode_cursor(KEYSET, position))


def id_walk(cursor: str | None) -> Walk:
    """Where the walk of a list in id order (the audit log's) stands."""
    if not cursor:
        return Walk()
    value = decode_cursor(cursor, OFFSET)
    if not isinstance(value, list):
        return Walk((value,))
    if not (len(value) == 4 and _offset(value[0]) and (value[3] is None or _offset(value[3]))):
        raise InvalidInput(f"{FORGED} (a position is an integer 0..{MAX_OFFSET})")
    return Walk((value[0],), _xids(value[1]), _xids(value[2]), None if value[3] is None else (value[3],))


def id_next_cursor(walk: Walk, rows: Sequence[Any], in_progress: frozenset[int], limit: int) -> str | None:
    """As ``keyset_next_cursor``, for a list newest first by ``id``."""
    if len(rows) <= limit:
        return None
    return id_next(next_walk(walk, (rows[limit - 1].id,), in_progress, descending=True))


def id_next(walk: Walk) -> str:
    after = _key(walk.after)[0]
    if not (walk.waiting or walk.resuming):
        return encode_cursor(OFFSET, after)
    resume = None if walk.resume is None else walk.resume[0]
    return _bounded(encode_cursor(OFFSET, [after, _deltas(walk.waiting), _deltas(walk.resuming), resume]))


def _key(key: Key | None) -> Key:
    assert key is not None, "a next page is always after some row"
    return key


def _deltas(xids: tuple[int, ...]) -> list[int]:
    """Sorted transaction ids as the first and the steps to each next one: close together, so short."""
    return [xid - before for before, xid in zip((0, *xids), xids, strict=False)]


def _xids(deltas: Any) -> tuple[int, ...]:
    if not (isinstance(deltas, list) and len(deltas) <= MAX_CURSOR and all(type(d) is int and d >= 0 for d in deltas)):
        raise InvalidInput(f"{FORGED} (transactions are a list of integers)")
    xids, total = [], 0
    for step in deltas:
        total += step
        xids.append(total)
    if total > MAX_XID:
        raise InvalidInput(f"{FORGED} (a transaction id is at most {MAX_XID})")
    return tuple(xids)


def _bounded(cursor: str) -> str:
    if len(cursor) > MAX_CURSOR:  # hundreds of transactions in progress at once on the database server
        raise Unavailable(
            "too many transactions are in progress on the database to hand out a cursor that none of them can "
            "slip behind; retry shortly",
            headers={"Retry-After": "1"},
        )
    return cursor
