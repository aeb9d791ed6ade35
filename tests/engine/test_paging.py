"""List cursors: what the lists hand out decodes; anything forged is a 422 before it reaches SQL."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from dust.core.errors import InvalidInput
from dust.engine.paging import KEYSET, MAX_OFFSET, OFFSET, decode_cursor, encode_cursor, keyset_after, keyset_cursor


def raw(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def test_cursors_the_lists_hand_out_round_trip() -> None:
    when, last = datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()
    assert keyset_after(keyset_cursor(when, last)) == (when, last)
    assert decode_cursor(encode_cursor(OFFSET, 0), OFFSET) == 0
    assert decode_cursor(encode_cursor(OFFSET, MAX_OFFSET), OFFSET) == MAX_OFFSET == 2**31 - 1


FORGED = {
    "keyset position a number": (KEYSET, raw(b'["k", ["2026-01-01T00:00:00", 5]]'), "[time, id]"),
    "keyset position an object": (KEYSET, raw(b'["k", {"a": 1}]'), "[time, id]"),
    "keyset position of three": (KEYSET, raw(b'["k", ["2026-01-01", "x", "y"]]'), "[time, id]"),
    "keyset not a time": (KEYSET, raw(b'["k", ["soon", "' + str(uuid.uuid4()).encode() + b'"]]'), "next_cursor"),
    "offset 1e999": (OFFSET, raw(b'["o", 1e999]'), "integer 0..2147483647"),
    "offset a float": (OFFSET, raw(b'["o", 1.0]'), "integer"),
    "offset a bool": (OFFSET, raw(b'["o", true]'), "integer"),
    "offset a string": (OFFSET, raw(b'["o", "5"]'), "integer"),
    "offset negative": (OFFSET, raw(b'["o", -1]'), "integer"),
    "offset past integer": (OFFSET, raw(b'["o", 2147483648]'), "integer"),
    "offset of 5000 digits": (OFFSET, raw(b'["o", ' + b"9" * 5000 + b"]"), "next_cursor"),
    "nested past the parser": (OFFSET, raw(b"[" * 100_000 + b"]" * 100_000), "next_cursor"),
    "the other list's tag": (OFFSET, encode_cursor(KEYSET, ["2026-01-01", str(uuid.uuid4())]), "next_cursor"),
    "not a pair": (OFFSET, raw(b'["o", 1, 2]'), "next_cursor"),
    "not base64": (OFFSET, "***", "next_cursor"),
    "not UTF-8": (OFFSET, raw(b"\xff\xfe"), "next_cursor"),
    "non-ASCII text": (OFFSET, "é", "next_cursor"),
}


@pytest.mark.parametrize(("tag", "cursor", "says"), FORGED.values(), ids=FORGED.keys())
def test_forged_cursors_are_invalid_input(tag: str, cursor: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        keyset_after(cursor) if tag == KEYSET else decode_cursor(cursor, tag)
    assert says in caught.value.detail
