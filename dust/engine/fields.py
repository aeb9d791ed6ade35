"""Field types shared by the engine's input models."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MAX_ATTRIBUTE_DEPTH = 32
"""Most levels of objects and arrays an attributes value may nest; the attributes object itself is level 1.
Responses cannot be serialised past 255 levels and JSON parsers recurse per level: 32 is ample for data."""
MAX_ATTRIBUTES_BYTES = 64 * 1024
"""Largest attributes value, as compact UTF-8 JSON. A list page carries up to 500 entities with their attributes:
this keeps one page to about 32 MiB, and bounds how many keys an object can have (some 10,000)."""
MAX_KEY_LENGTH = 128
"""Longest attribute key, at any level: as long as an ``attr.<key>`` filter may name."""

# Zero-width (non-)joiners shape Persian and Indic words, so a name may hold them between two letters.
_JOINERS = frozenset("\u200c\u200d")
# Line breaks and tabs are text in an attribute value (a note, an address); every other C0/C1 control, DEL
# and a lone surrogate (unicode categories Cc and Cs) is not.
_VALUE_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Controls, surrogates and line/paragraph separators. Format characters (Cf: zero-width, bidi overrides) are
# refused in names and keys, where they make two strings look alike or display reordered.
_NEVER = frozenset({"Cc", "Cs", "Zl", "Zp"})


def describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character named safely, never echoed."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _letter(char: str) -> bool:
    # A virama or vowel sign (a mark) precedes the joiner in Indic conjuncts, so marks count as letters here.
    return not char.isascii() and unicodedata.category(char)[0] in "LM"


def _joins_letters(text: str, i: int) -> bool:
    return text[i] in _JOINERS and 0 < i < len(text) - 1 and _letter(text[i - 1]) and _letter(text[i + 1])


def bad_name_char(text: str) -> int | None:
    """The position of the first character a name, id or key may not hold, or None."""
    if text.isascii() and text.isprintable():  # the common case, without a look-up per character
        return None
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category in _NEVER or (category == "Cf" and not _joins_letters(text, i)):
            return i
    return None


def bad_value_char(text: str) -> int | None:
    """The position of the first character an attribute string value may not hold, or None."""
    found = _VALUE_BAD.search(text)
    return None if found is None else found.start()


def _clean(value: Any) -> Any:
    # Before pydantic's own str check, which would refuse a lone surrogate without saying what or where, and
    # before the length check, so max_length bounds the stored (normalised) text.
    if not isinstance(value, str):
        return value
    at = bad_name_char(value)
    if at is not None:
        raise ValueError(
            f"must not contain {describe(value[at])} (character {at + 1}): names and ids may not hold control, "
            "format (zero-width, bidirectional), surrogate or line-separator characters; ZWNJ/ZWJ only between "
            "two non-ASCII letters"
        )
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


def _plain_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    _check_tree(value)
    # JSON has no NaN or infinity: PostgreSQL would refuse them and responses could not carry them.
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(
            "attributes must be plain JSON: objects, arrays, strings, finite numbers, booleans and null"
        ) from None
    too_big = oversized(value)
    if too_big:
        raise ValueError(too_big)
    return value


def oversized(value: Mapping[str, Any]) -> str | None:
    """Why an attributes value is over MAX_ATTRIBUTES_BYTES, or None. Checked again after a merge patch, which
    could otherwise grow a value past the bound a few keys at a time."""
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size <= MAX_ATTRIBUTES_BYTES:
        return None
    return f"attributes are {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES}: keep documents elsewhere"


def _check_tree(value: dict[str, Any]) -> None:
    """Bound the nesting and refuse characters PostgreSQL cannot store or that hide in keys. Iterative, so a
    deep value built in Python stops at the bound instead of at the interpreter's recursion limit."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "attributes")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_ATTRIBUTE_DEPTH:
            raise ValueError(
                f"attributes nest deeper than {MAX_ATTRIBUTE_DEPTH} levels of objects and arrays (at {path[:80]}…); "
                "flatten them"
            )
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(key, str):
                _check_text(key, bad_name_char(key), f"{path} key '{excerpt(key)}'", "a key")
                if len(key) > MAX_KEY_LENGTH:
                    raise ValueError(f"{path} key '{excerpt(key)}' is over {MAX_KEY_LENGTH} characters")
                where = f"{path}.{excerpt(key)}"
            else:
                where = f"{path}[{key}]"
            if isinstance(child, str):
                _check_text(child, bad_value_char(child), where, "a value")
            elif isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1, where))


def _check_text(text: str, at: int | None, where: str, what: str) -> None:
    if at is None:
        return
    allowed = (
        "values may hold tab, line feed and carriage return but no other control character or lone surrogate"
        if what == "a value"
        else "keys may not hold control, format (zero-width, bidirectional) or surrogate characters"
    )
    raise ValueError(f"{where[:120]}: {what} must not contain {describe(text[at])} (character {at + 1}); {allowed}")


def excerpt(text: str, limit: int = 40) -> str:
    """``text`` shortened, with any character a name may not hold shown as an escape (never echoed raw)."""
    shown = text[:limit]
    if bad_name_char(shown) is not None:
        shown = "".join(f"\\u{ord(c):04x}" if bad_name_char(c) is not None else c for c in shown)
    return shown + ("…" if len(text) > limit else "")


# What the OpenAPI document says these types hold: the characters ``bad_name_char`` always refuses below U+10000,
# as a regex class. Not in it: ZWNJ and ZWJ (allowed between two letters, which a class cannot say), format
# characters beyond U+FFFF (a regex without the u flag cannot name them) and lone surrogates (no JSON text or
# ECMA regex with the u flag holds one). All are refused still: the document is only ever more lenient than the
# code, never stricter. tests/api/test_fuzz_findings.py checks the class against ``bad_name_char``.
NEVER_IN_NAMES = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    r"\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
)
PLAIN_PATTERN = rf"^[^{NEVER_IN_NAMES}]*$"
TEXT_PATTERN = rf"^[^{NEVER_IN_NAMES}]*[^{NEVER_IN_NAMES}\s][^{NEVER_IN_NAMES}]*$"
VALUE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
"""What an attribute's string value may hold (``bad_value_char``)."""

Text = Annotated[
    str, BeforeValidator(_clean), AfterValidator(_not_blank), Field(json_schema_extra={"pattern": TEXT_PATTERN})
]
"""A non-blank string in Unicode NFC without control, format (but joiners inside words), surrogate or
line-separator characters."""

Plain = Annotated[str, BeforeValidator(_clean), Field(json_schema_extra={"pattern": PLAIN_PATTERN})]
"""Like ``Text`` but may be blank: descriptions, units, field names in policies."""

# Bounded ``Plain`` for items of lists and dicts. The bound goes before the validator: placed after it, as a Field
# on the item would be, it is checked as a count of "items" and says so.
Unit = Annotated[str, Field(max_length=64, json_schema_extra={"pattern": PLAIN_PATTERN}), BeforeValidator(_clean)]
"""A label's unit (UCUM codes are short)."""
FieldName = Annotated[
    str, Field(max_length=MAX_KEY_LENGTH, json_schema_extra={"pattern": PLAIN_PATTERN}), BeforeValidator(_clean)
]
"""A field a kind's policy names: 'name', 'external_id' or an attribute key."""
ShortText = Annotated[
    str,
    Field(max_length=256, json_schema_extra={"pattern": TEXT_PATTERN}),
    BeforeValidator(_clean),
    AfterValidator(_not_blank),
]
"""Bounded ``Text`` for items of lists and dicts: an external id, a class name."""

_ATTRIBUTES_SCHEMA = {
    "propertyNames": {"maxLength": MAX_KEY_LENGTH, "pattern": PLAIN_PATTERN},
    # The first level spelt out; deeper levels are any JSON (the same rules apply, unsaid).
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "pattern": VALUE_PATTERN},
            {"type": ["number", "boolean", "null"]},
            {"type": "array"},
            {"type": "object"},
        ]
    },
}
Attributes = Annotated[dict[str, Any], AfterValidator(_plain_json), Field(json_schema_extra=_ATTRIBUTES_SCHEMA)]
"""A JSON object without NaN or infinity, nesting at most MAX_ATTRIBUTE_DEPTH levels, whose keys hold no
control, format or surrogate characters and whose string values no control characters but tab and line breaks."""


def _not_a_number(value: Any) -> Any:
    # pydantic would read a number, or a string of digits, as Unix seconds (milliseconds beyond 2e10): `at=3`
    # would silently mean 1970-01-01T00:00:03. Times are ISO 8601 here; a number is a time index's business.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise ValueError(f"must be an ISO 8601 timestamp such as 2026-01-05T08:00:00Z, not the number {value!r}")
    return value


def _in_utc(value: datetime) -> datetime:
    # Times are kept and compared in UTC (a naive one is taken as UTC), where 0001-01-01T00:00+00:01 is before
    # year 1: stored as a schema's origin no tensor could use it, and as a bound of a query it answered 500.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within years 1..9999 once converted to UTC") from None


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
Timestamp = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]
"""A time: an ISO 8601 string (or a datetime), never a number; converted to UTC, within its years 1..9999."""


def not_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` for an optional field that refuses null: the document offers no null to send."""
    branches = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    schema.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
    schema.pop("default", None)


def _json_integer(value: Any) -> Any:
    # pydantic would read true as 1 and "7" as 7. JSON says what a number is (5.0 is an integer to JSON Schema).
    if isinstance(value, bool | str):
        raise ValueError(f"must be an integer, not {'true or false' if isinstance(value, bool) else 'text'}")
    return value


Integer = Annotated[int, BeforeValidator(_json_integer)]
"""An integer as JSON has one: never true, false or text."""
