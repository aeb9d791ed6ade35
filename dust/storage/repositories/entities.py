"""Queries over ``entities``."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, String, Table, and_, bindparam, exists, func, insert, or_, select, text
from sqlalchemy import cast as cast_
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from dust.storage.models import Entity, Relation
from dust.storage.repositories import Copies, Visible, paging

_ENTITIES = cast(Table, Entity.__table__)
# Built once: the hot paths of creating many entities or tensors run these per call, and building a statement
# costs about as much as running it.
_INSERT = insert(_ENTITIES)
_GET = select(Entity).where(Entity.id == bindparam("b_id"))  # session.get builds its query afresh each call
# FOR KEY SHARE, in id order (the order every writer takes entity rows in, see ``delete``): every caller is about
# to insert rows that reference these entities (a tensor, a relation). Held until commit, it makes a concurrent
# delete wait, which would otherwise commit between this check and the insert and turn the insert into a
# foreign-key violation (a 500, or a relation "exists" 409). Updates of the entities are not held up. SQLite,
# whose writers are serialised, leaves the FOR clause out.
_EXISTING = (
    select(Entity.id)
    .where(Entity.id.in_(bindparam("ids", expanding=True)))
    .order_by(Entity.id)
    .with_for_update(read=True, key_share=True)
)


def add_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert entities, every column given (created_at by ``paging.creation_time``), by one statement
    (executemany). Into the table rather than through the ORM: its bulk insert costs tens of microseconds of
    bookkeeping per row."""
    session.execute(_INSERT, rows)


@functools.lru_cache(maxsize=1024)
def _get_within(within: Visible) -> Select[Entity]:
    """The query of an entity by id among ``within``, once per ``within`` (one per principal, see
    dust.engine.access): SQLAlchemy keys its compiled-statement cache by walking the whole statement, reach
    query included, once per statement object."""
    return select(Entity).where(Entity.id == bindparam("b_id"), Entity.id.in_(within))


# An entity, for a read that changes nothing; among visible ids: as ``get``'s ``within``.
peek = Copies(Entity, owner="id")


def get(session: Session, entity_id: uuid.UUID, *, lock: bool = False, within: Visible | None = None) -> Entity | None:
    """The entity; ``lock``: read afresh and held until commit (None if a delete committed meanwhile);
    ``within``: only if its id is among these (a principal's visible ids), in the same query."""
    if lock:
        return session.get(Entity, entity_id, with_for_update=True, populate_existing=True)
    if within is not None:
        return session.scalars(_get_within(within), {"b_id": entity_id}).first()
    if (known := session.identity_map.get(identity_key(Entity, entity_id))) is not None:
        return cast(Entity, known)
    return session.scalars(_GET, {"b_id": entity_id}).first()


def by_external_id(session: Session, kind: str, external_id: str) -> Entity | None:
    stmt = select(Entity).where(Entity.kind == kind, Entity.external_id == external_id)
    return session.scalars(stmt).first()


def ids_by_external_id(session: Session, kind: str, external_ids: list[str]) -> dict[str, uuid.UUID]:
    """The id of each entity of ``kind`` among ``external_ids`` that exists (for importers)."""
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_BY_EXTERNAL_IDS, {"kind": kind, "names": external_ids})
    else:
        stmt = select(Entity.external_id, Entity.id).where(Entity.kind == kind, Entity.external_id.in_(external_ids))
        rows = session.execute(stmt)
    return {str(external_id): entity_id for external_id, entity_id in rows}


def ids_by_external_id_any_kind(session: Session, external_ids: list[str]) -> dict[str, uuid.UUID]:
    """The id of an entity, of whatever kind, holding each of ``external_ids`` that one holds (the RDF importer:
    an IRI names one thing, whichever kind an earlier import gave it); the oldest when several kinds hold it."""
    stmt = (
        select(Entity.external_id, Entity.id)
        .where(Entity.external_id.in_(external_ids))
        .order_by(Entity.created_at.desc(), Entity.id.desc())
    )
    return {str(external_id): entity_id for external_id, entity_id in session.execute(stmt)}


def taken_external_ids(session: Session, kind: str, external_ids: list[str]) -> set[str]:
    """Which of ``external_ids`` entities of ``kind`` already hold."""
    return set(ids_by_external_id(session, kind, external_ids))


# PostgreSQL: one index probe per name, whatever the statistics say. Right after a bulk load they still describe
# the small table it was, and the planner joined thousands of names to every row instead: seconds a statement.
_BY_EXTERNAL_IDS = text(
    "SELECT e.external_id, e.id FROM unnest(CAST(:names AS varchar[])) AS n(name) CROSS JOIN LATERAL "
    "(SELECT external_id, id FROM entities WHERE kind = :kind AND external_id = n.name) AS e"
)


def existing_ids(session: Session, ids: list[uuid.UUID], *, within: Visible | None = None) -> set[uuid.UUID]:
    """Which of ``ids`` exist, kept from deletion until the transaction ends; ``within``: only those among these
    (a principal's visible ids), filtered in the same query, so that no one holds a row they may not see."""
    stmt = _EXISTING if within is None else _EXISTING.where(Entity.id.in_(within))
    return set(session.scalars(stmt, {"ids": ids}))


def delete(session: Session, entity_id: uuid.UUID) -> None:
    """Delete the entity; its tensors and relations go by cascade.

    Locks first, in the order every writer takes them: the entity row (entity rows in id order), then its
    relations in id order. The cascade alone takes the relations as the source first, then as the target, so
    two deletes of entities related both ways (a→b, b→a) took the shared rows in opposite orders, and
    PostgreSQL aborted one as a deadlock. The entity comes first so that no relation to it can be added
    (adding one holds its end entities, ``existing_ids``) between the lock of its relations and the cascade.
    SQLite has no row locks (its writers are serialised) and skips FOR UPDATE.
    """
    session.execute(select(Entity.id).where(Entity.id == entity_id).with_for_update())
    ends = or_(Relation.source_id == entity_id, Relation.target_id == entity_id)
    session.execute(select(Relation.id).where(ends).order_by(Relation.id).with_for_update())
    session.execute(sql_delete(Entity).where(Entity.id == entity_id))


def filtered(
    session: Session, stmt: Select, kind: str | None, attributes: Mapping[str, Any], visible: Any = None
) -> Select:
    """``stmt`` narrowed to a kind, attribute values, and the ids in the query ``visible`` (None: all)."""
    if visible is not None:
        stmt = stmt.where(Entity.id.in_(visible))
    if kind is not None:
        stmt = stmt.where(Entity.kind == kind)
    postgres = session.get_bind().dialect.name == "postgresql"
    for key, value in attributes.items():
        stmt = stmt.where(_json_equals(key, value) if postgres else _sqlite_equals(key, value))
    return stmt


# An attribute filter compares JSON values, with their types: 51 matches 51 and 51.0 but not "51", true matches
# true but not 1. A SQL CAST would do neither and, on PostgreSQL, fail the whole query on the first row whose
# value under the key is not a number. The key is a bound value on both backends, never part of a JSON path.


def _json_equals(key: str, value: Any) -> ColumnElement[bool]:
    """PostgreSQL: jsonb equality (numbers compare by value, across int and float)."""
    stored = cast_(Entity.attributes.op("->")(bindparam(None, key, type_=String)), JSONB)
    return stored == cast_(bindparam(None, json.dumps(value), type_=String), JSONB)


def _sqlite_equals(key: str, value: Any) -> ColumnElement[bool]:
    """SQLite: the key's top-level entry, if its JSON type is the value's, equal as an SQL value."""
    entry = func.json_each(Entity.attributes).table_valued("key", "type", "atom").alias("entry")
    if isinstance(value, bool):
        matches = entry.c.type == ("true" if value else "false")
    elif isinstance(value, int | float):
        matches = and_(entry.c.type.in_(["integer", "real"]), entry.c.atom == value)
    else:
        matches = and_(entry.c.type == "text", entry.c.atom == str(value))
    return exists().where(entry.c.key == key, matches)


def page(
    session: Session,
    kind: str | None,
    attributes: Mapping[str, Any],
    visible: Any,
    walk: paging.Walk,
    limit: int,
) -> tuple[list[Entity], frozenset[int]]:
    """Entities in creation order that ``walk`` has not returned, and the transactions in progress meanwhile."""
    stmt = filtered(session, select(Entity), kind, attributes, visible)
    return paging.page(session, stmt, (Entity.created_at, Entity.id), Entity.txid, walk, limit)


def search_space(
    session: Session, kind: str | None, attributes: Mapping[str, Any], visible: Any = None, chunk: int = 20_000
) -> Iterator[list[tuple[uuid.UUID, str, str | None]]]:
    """(id, name, external_id) of every matching entity, in chunks, for fuzzy matching."""
    stmt = filtered(session, select(Entity.id, Entity.name, Entity.external_id), kind, attributes, visible)
    result = session.execute(stmt.execution_options(yield_per=chunk))
    for part in result.partitions(chunk):
        yield [(row[0], row[1], row[2]) for row in part]


def by_ids(session: Session, ids: list[uuid.UUID]) -> list[Entity]:
    rows = {e.id: e for e in session.scalars(select(Entity).where(Entity.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]


def attribute_of_kind(
    session: Session, kind: str | None, key: str, visible: Any = None, chunk: int = 20_000
) -> Iterator[list[tuple[uuid.UUID, Any]]]:
    """(id, value of attribute ``key``) of each entity of ``kind`` (None: any; among the ids of the query
    ``visible``) that holds the key, in id order and in chunks (a model's labels)."""
    stmt = filtered(session, select(Entity.id, Entity.attributes), kind, {}, visible).order_by(Entity.id)
    for part in session.execute(stmt.execution_options(yield_per=chunk)).partitions(chunk):
        yield [(row[0], row[1][key]) for row in part if row[1] and key in row[1]]


def among(session: Session, ids: list[uuid.UUID], *, within: Visible | None = None) -> list[Entity]:
    """The entities of ``ids`` that exist (and are among ``within``, a principal's visible ids), unlocked."""
    stmt = select(Entity).where(Entity.id.in_(ids))
    return list(session.scalars(stmt if within is None else stmt.where(Entity.id.in_(within))))


def ids_among(
    session: Session, ids: list[uuid.UUID], *, kind: str | None = None, within: Visible | None = None
) -> set[uuid.UUID]:
    """Which of ``ids`` exist (of ``kind``; among ``within``, a principal's visible ids), unlocked: ids only."""
    stmt = select(Entity.id).where(Entity.id.in_(ids))
    if kind is not None:
        stmt = stmt.where(Entity.kind == kind)
    return set(session.scalars(stmt if within is None else stmt.where(Entity.id.in_(within))))
