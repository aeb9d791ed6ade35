"""Field types shared by the engine's input models."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

MAX_ATTRIBUTE_DEPTH = 32
"""Most levels of objects and arrays an attributes value may nest; the attributes object itself is level 1.
Responses cannot be serialised past 255 levels and JSON parsers recurse per level: 32 is ample for data."""

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
    return value


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
                _check_text(key, bad_name_char(key), f"{path} key '{_safe(key)}'", "a key")
                where = f"{path}.{_safe(key)}"
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


def _safe(text: str, limit: int = 40) -> str:
    """``text`` shortened, with any character a name may not hold shown as an escape (never echoed raw)."""
    shown = text[:limit]
    if bad_name_char(shown) is not None:
        shown = "".join(f"\\u{ord(c):04x}" if bad_name_char(c) is not None else c for c in shown)
    return shown + ("…" if len(text) > limit else "")


Text = Annotated[str, BeforeValidator(_clean), AfterValidator(_not_blank)]
"""A non-blank string in Unicode NFC without control, format (but joiners inside words), surrogate or
line-separator characters."""

Plain = Annotated[str, BeforeValidator(_clean)]
"""Like ``Text`` but may be blank: descriptions, units, field names in policies."""

Attributes = Annotated[dict[str, Any], AfterValidator(_plain_json)]
"""A JSON object without NaN or infinity, nesting at most MAX_ATTRIBUTE_DEPTH levels, whose keys hold no
control, format or surrogate characters and whose string values no control characters but tab and line breaks."""
