"""Entities through the engine: ``create_many`` (the importers' path) against ``create`` one at a time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.core.errors import Conflict
from dust.embedded import Dust
from dust.engine import access, entities
from dust.engine.entities import EntityCreate, EntityPublic
from dust.storage.models import AuditRecord

Member = Callable[[str], access.Principal]
ITEMS = [
    {"kind": "patient", "name": "Jane Doe", "external_id": "mrn-1", "attributes": {"ward": "A"}},
    {"kind": "patient", "name": "John Roe"},
    {"kind": "doctor", "name": "Dr Who", "external_id": "mrn-1"},  # external ids are unique per kind only
]


@contextmanager
def acting(db: Dust, who: access.Principal | None) -> Iterator[Session]:
    with db.session() as s:
        access.act_as(s, who)
        yield s


def fields(entity: EntityPublic) -> dict[str, Any]:
    """What the caller gave and the engine kept, without the id and times it made."""
    return entity.model_dump(include={"kind", "name", "external_id", "attributes"})


def audit_trail(db: Dust) -> list[tuple[str, str, uuid.UUID | None, str | None]]:
    with db.session() as s:
        rows = s.scalars(select(AuditRecord).order_by(AuditRecord.id))
        return [(r.action, r.resource, r.entity_id, r.username) for r in rows]


def test_create_many_gives_what_create_gives_in_order(db: Dust) -> None:
    one_by_one = [db.create_entity(**item) for item in ITEMS]
    with db.session() as s:  # frees the external ids for the second round
        for entity in one_by_one:
            entities.delete(s, entity.id)
    many = db.create_entities(ITEMS)
    assert [fields(e) for e in many] == [fields(e) for e in one_by_one]
    assert [fields(db.get_entity(e.id)) for e in many] == [fields(e) for e in many]
    assert len({e.id for e in many}) == 3


def test_create_many_records_the_audit_trail_create_does(db: Dust, member: Member) -> None:
    alice = member("alice")
    with acting(db, alice) as s:
        single = entities.create(s, EntityCreate(kind="patient", name="Jane Doe"))
    with acting(db, alice) as s:
        many = entities.create_many(s, [EntityCreate(kind="patient", name=f"P{i}") for i in range(3)])
    assert audit_trail(db) == [("create", "entity", e.id, "alice") for e in [single, *many]]
    with acting(db, alice) as s:  # created by alice: visible to her, and to nobody else here
        assert [entities.get_row(s, e.id).created_by for e in many] == [alice.user_id] * 3
    with acting(db, member("bob")) as s:
        assert entities.list_(s).items == []


def test_without_a_principal_nothing_is_audited(db: Dust) -> None:
    db.create_entities([{"kind": "patient", "name": "Jane Doe"}])
    assert audit_trail(db) == []


@pytest.mark.parametrize(
    "items",
    [
        [{"kind": "patient", "name": "A", "external_id": "x"}, {"kind": "patient", "name": "B", "external_id": "x"}],
        [{"kind": "patient", "name": "A"}, {"kind": "patient", "name": "B", "external_id": "taken"}],
    ],
    ids=["twice in the batch", "taken already"],
)
def test_create_many_refuses_a_taken_external_id_and_creates_nothing(db: Dust, items: list[dict[str, Any]]) -> None:
    db.create_entity(kind="patient", name="Holder", external_id="taken")
    wanted = items[1]["external_id"]
    with pytest.raises(Conflict, match=f"a patient with external_id '{wanted}' already exists"):
        db.create_entities(items)
    assert [e.name for e in db.entities().items] == ["Holder"]


def test_a_refused_create_many_leaves_the_session_usable(db: Dust) -> None:
    db.create_entity(kind="patient", name="Holder", external_id="taken")
    with db.session() as s:
        with pytest.raises(Conflict):
            entities.create_many(s, [EntityCreate(kind="patient", name="B", external_id="taken")])
        entities.create(s, EntityCreate(kind="patient", name="After"))
    assert sorted(e.name for e in db.entities().items) == ["After", "Holder"]


def test_create_many_of_nothing_is_nothing(db: Dust) -> None:
    assert db.create_entities([]) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (51, ["int", "float"]),
        (51.0, ["int", "float"]),
        ("51", ["text"]),
        (True, ["true"]),
        (False, ["false"]),
        ("F", ["F"]),
    ],
)
def test_an_attribute_filter_compares_json_values_with_their_types(db: Dust, value: Any, expected: list[str]) -> None:
    """Every row holding something else under the key, of any JSON type, is simply not a match (PostgreSQL once
    answered 500 for a number filter as soon as one row held a non-number)."""
    stored = {"int": 51, "float": 51.0, "text": "51", "true": True, "false": False, "F": "F", "list": [51]}
    stored |= {"object": {"a": 51}, "null": None, "one": 1, "zero": 0}
    db.create_entities([{"kind": "patient", "name": name, "attributes": {"k": v}} for name, v in stored.items()])
    db.create_entity("patient", "no such key", attributes={"other": 51})
    matched = db.entities(kind="patient", limit=500, k=value).items
    assert sorted(e.name for e in matched) == sorted(expected)


def test_an_attribute_filter_key_may_hold_any_character(db: Dust) -> None:
    key = 'a."b$[0]\\'
    db.create_entity("patient", "odd", attributes={key: 1})
    assert [e.name for e in db.entities(**{key: 1}).items] == ["odd"]
