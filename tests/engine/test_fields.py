"""Text and Attributes: what names, ids and attributes may hold, checked in the engine so the embedded API
is protected as the REST API is."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine.fields import MAX_ATTRIBUTE_DEPTH, Attributes, Text
from dust.engine.kinds import KindPolicy
from dust.engine.schemas import SchemaCreate


class Thing(BaseModel):
    name: Text = Field(max_length=8)
    external_id: Text | None = Field(None, max_length=8)
    attributes: Attributes = Field(default_factory=dict)


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An attributes object ``depth`` levels deep (itself level 1)."""
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


REFUSED = {
    "NUL in a name": ({"name": "a\x00b"}, "U+0000"),
    "lone surrogate in a name": ({"name": "a\ud800"}, "U+D800"),
    "tab in a name": ({"name": "a\tb"}, "U+0009"),
    "DEL in an id": ({"name": "a", "external_id": "a\x7f"}, "U+007F"),
    "C1 control in a name": ({"name": "a\x85"}, "U+0085"),
    "zero-width space": ({"name": "a\u200bb"}, "U+200B (ZERO WIDTH SPACE) (character 2)"),
    "left-to-right embedding": ({"name": "\u202aab"}, "U+202A"),
    "right-to-left override": ({"name": "ab\u202e"}, "U+202E"),
    "first strong isolate": ({"name": "a\u2068b"}, "U+2068"),
    "pop directional isolate": ({"name": "a\u2069b"}, "U+2069"),
    "word joiner": ({"name": "a\u2060b"}, "U+2060"),
    "byte order mark": ({"name": "\ufeffab"}, "U+FEFF"),
    "ZWNJ between ASCII letters": ({"name": "a\u200cb"}, "U+200C"),
    "ZWJ at the end": ({"name": "\u0645\u200d"}, "U+200D"),
    "ZWJ between emoji": ({"name": "\U0001f468\u200d\U0001f469"}, "U+200D"),
    "paragraph separator": ({"name": "a\u2029b"}, "U+2029"),
    "blank": ({"name": " \u3000 "}, "blank"),
    "too long once normalised": ({"name": "\u0958" * 5}, "at most 8"),  # each becomes two code points in NFC
    "NUL in a value": ({"name": "a", "attributes": {"g": "\x00"}}, "attributes.g: a value must not contain U+0000"),
    "lone surrogate in a key": ({"name": "a", "attributes": {"\udc00": 1}}, "key '\\udc00'"),
    "bell deep in a list": ({"name": "a", "attributes": {"l": [1, ["\x07"]]}}, "attributes.l[1][0]"),
    "C1 in a value": ({"name": "a", "attributes": {"g": "\x9b"}}, "U+009B"),
    "tab in a key": ({"name": "a", "attributes": {"a\tb": 1}}, "a key must not contain U+0009"),
    "bidi override in a key": ({"name": "a", "attributes": {"\u202eg": 1}}, "U+202E"),
    "too deep": ({"name": "a", "attributes": nested(MAX_ATTRIBUTE_DEPTH + 1)}, "deeper than 32 levels"),
    "far too deep": ({"name": "a", "attributes": nested(100_000)}, "deeper than 32 levels"),
    "NaN": ({"name": "a", "attributes": {"x": float("nan")}}, "plain JSON"),
}


@pytest.mark.parametrize(("fields", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_with_the_character_and_where(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Thing.model_validate(fields)
    assert says in str(caught.value)


ACCEPTED = {
    "Persian ZWNJ": ({"name": "\u0645\u06cc\u200c\u0634\u0648\u062f"}, {}),
    "Devanagari ZWJ after a virama": ({"name": "\u0915\u094d\u200d\u0937"}, {}),
    "NFC": ({"name": "Jose\u0301"}, {"name": "Jos\u00e9"}),
    "emoji": ({"name": "\U0001f600 x"}, {}),
    "tab and line breaks in values": ({"name": "a", "attributes": {"n": "a\tb\r\nc"}}, {}),
    "format characters in values": ({"name": "a", "attributes": {"n": "\u200f\u05e9\u05dc\u05d5\u05dd"}}, {}),
    "nesting at the bound": ({"name": "a", "attributes": nested(MAX_ATTRIBUTE_DEPTH)}, {}),
    "merge-patch nulls": ({"name": "a", "attributes": {"gone": None}}, {}),
}


@pytest.mark.parametrize(("fields", "changed"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_and_normalised(fields: dict[str, Any], changed: dict[str, Any]) -> None:
    assert Thing.model_validate(fields).model_dump(exclude_unset=True) == {**fields, **changed}


@pytest.mark.parametrize(
    "fields",
    [{"name": "x\ud800"}, {"attributes": {"\ud800": 1}}, {"attributes": {"gender": "\x00"}}, {"name": "\u202eJ"}],
    ids=["surrogate name", "surrogate key", "NUL value", "bidi name"],
)
def test_the_embedded_api_refuses_them_on_every_backend(db: Dust, fields: dict[str, Any]) -> None:
    jane = db.create_entity("patient", "Jane", attributes={"gender": "F"})
    with pytest.raises(InvalidInput):
        db.create_entity("patient", **{"name": "x", **fields})
    with pytest.raises(InvalidInput):
        db.update_entity(jane.id, **fields)
    assert [e.id for e in db.entities(gender="F").items] == [jane.id]  # the filter still works, on PostgreSQL too
    assert len(db.entities().items) == 1  # nothing was stored


@pytest.mark.parametrize(
    "definition",
    [
        {"name": "s", "axes": [{"name": "m", "labels": ["a\u202eb"]}]},
        {"name": "s", "axes": [{"name": "m", "labels": ["a"], "units": {"a": "k\x00g"}}]},
        {"name": "s", "description": "x\ud800", "axes": [{"name": "m", "labels": ["a"]}]},
    ],
)
def test_schema_labels_units_and_descriptions_hold_no_hidden_characters(definition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must not contain U\\+"):
        SchemaCreate.model_validate(definition)


@pytest.mark.parametrize("policy", [{"description": "\x07"}, {"sensitive": ["ss\u200bn"]}, {"public": ["na\x00me"]}])
def test_kind_policies_hold_no_hidden_characters(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must not contain U\\+"):
        KindPolicy.model_validate(policy)


def test_a_huge_integer_value_is_refused_with_its_size_not_its_digits(db: Dust) -> None:
    db.create_schema({"name": "v", "axes": [{"name": "m", "labels": ["a"]}], "time": {"unit": "day"}})
    tensor = db.create_tensor(db.create_entity("patient", "Huge").id, "v")
    with pytest.raises(InvalidInput, match="about 5001 digits"):
        db.write_values(tensor.id, [{"time": 0, "m": "a", "value": 10**5000}])


def test_a_label_is_found_in_either_unicode_form(db: Dust) -> None:
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    db.create_schema({"name": "menu", "axes": [{"name": "m", "labels": [decomposed]}], "time": {"unit": "day"}})
    tensor = db.create_tensor(db.create_entity("patient", "Unicode").id, "menu")
    db.write_values(tensor.id, [{"time": 0, "m": decomposed, "value": 1.0}, {"time": 1, "m": composed, "value": 2.0}])
    assert db.read_tensor(tensor.id, labels={"m": decomposed}).to_numpy().tolist() == [1.0, 2.0]
