"""Entities: anything with an identity. The id is a UUID made here; names are never keys."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process, utils
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.engine.paging import OFFSET, decode_cursor, encode_cursor, keyset_after, keyset_cursor
from dust.storage.models import Entity
from dust.storage.repositories import entities as repo

KIND = r"^[a-z][a-z0-9_\-]{0,63}$"
MATCH_CUTOFF = 70.0  # rapidfuzz WRatio; "jnae doe" ~ "Jane Doe" scores 75, unrelated names stay under 60


def _printable(text: str) -> str:
    if any(ord(c) < 32 for c in text):
        raise ValueError("must not contain control characters")
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Text = Annotated[str, AfterValidator(_printable)]


class EntityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=KIND, description="What the entity is: patient, doctor, product, account…")
    name: Text = Field(max_length=512, description="Display name; not unique.")
    external_id: Text | None = Field(None, max_length=256, description="Outside identifier, unique per kind.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Free JSON attributes.")


class EntityUpdate(BaseModel):
    """Fields to change. ``attributes`` merges (RFC 7396): a key set to null is removed."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, max_length=512)
    external_id: Text | None = Field(None, max_length=256)
    attributes: dict[str, Any] | None = None


class EntityPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    name: str
    external_id: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class EntityList(BaseModel):
    items: list[EntityPublic]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


def create(session: Session, data: EntityCreate) -> EntityPublic:
    if data.external_id is not None:
        _check_external_id_free(session, data.kind, data.external_id)
    try:
        with session.begin_nested():
            row = repo.add(session, **data.model_dump())
    except IntegrityError:  # a concurrent create took the external id between our check and insert
        raise _external_id_taken(data.kind, data.external_id) from None
    return EntityPublic.model_validate(row)


def get(session: Session, entity_id: uuid.UUID, kind: str | None = None) -> EntityPublic:
    return EntityPublic.model_validate(get_row(session, entity_id, kind))


def get_row(session: Session, entity_id: uuid.UUID, kind: str | None = None) -> Entity:
    row = repo.get(session, entity_id)
    if row is None or (kind is not None and row.kind != kind):
        raise NotFound(f"{kind or 'entity'} {entity_id} does not exist")
    return row


def update(session: Session, entity_id: uuid.UUID, data: EntityUpdate, kind: str | None = None) -> EntityPublic:
    row = get_row(session, entity_id, kind)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        raise InvalidInput("name cannot be null")
    if "external_id" in changes and changes["external_id"] not in (None, row.external_id):
        _check_external_id_free(session, row.kind, changes["external_id"])
    if "attributes" in changes:
        changes["attributes"] = merge_patch(row.attributes, changes["attributes"] or {})
    for field, value in changes.items():
        setattr(row, field, value)
    session.flush()
    return EntityPublic.model_validate(row)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def delete(session: Session, entity_id: uuid.UUID, kind: str | None = None) -> None:
    """Delete the entity; its tensors and relations go with it (foreign keys cascade)."""
    get_row(session, entity_id, kind)
    repo.delete(session, entity_id)
    session.expunge_all()


def list_(
    session: Session,
    *,
    kind: str | None = None,
    q: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> EntityList:
    """A page of entities; with ``q``, the best name / external-id matches first."""
    attributes = attributes or {}
    if q is not None and q.strip():
        return _search(session, kind, q, attributes, limit, cursor)
    rows = repo.page(session, kind, attributes, keyset_after(cursor), limit + 1)
    last = rows[limit - 1] if len(rows) > limit else None
    return EntityList(
        items=[EntityPublic.model_validate(r) for r in rows[:limit]],
        next_cursor=keyset_cursor(last.created_at, last.id) if last else None,
    )


def _search(
    session: Session, kind: str | None, q: str, attributes: Mapping[str, Any], limit: int, cursor: str | None
) -> EntityList:
    offset = int(decode_cursor(cursor, OFFSET)) if cursor else 0
    scored: list[tuple[float, str, uuid.UUID]] = []
    for chunk in repo.search_space(session, kind, attributes):
        for score, entity_id, name in _score_chunk(q.strip(), chunk):
            scored.append((score, name, entity_id))
    scored.sort(key=lambda s: (-s[0], s[1], str(s[2])))
    window = scored[offset : offset + limit]
    items = [EntityPublic.model_validate(r) for r in repo.by_ids(session, [s[2] for s in window])]
    more = len(scored) > offset + limit
    return EntityList(items=items, next_cursor=encode_cursor(OFFSET, offset + limit) if more else None)


def _score_chunk(query: str, chunk: list[tuple[uuid.UUID, str, str | None]]) -> list[tuple[float, uuid.UUID, str]]:
    """Score names fuzzily; an external id equal to the query ranks first, then names or ids containing it."""
    words = utils.default_process(query)
    raw = query.lower()
    names = [utils.default_process(name) for _, name, _ in chunk]
    hits: dict[int, float] = {}
    for _, score, index in process.extract(
        words, names, scorer=fuzz.WRatio, processor=None, score_cutoff=MATCH_CUTOFF, limit=None
    ):
        hits[index] = score
    for index, (_, _, external_id) in enumerate(chunk):
        if words and words in names[index]:
            hits[index] = 100.0
        if external_id is not None and raw in external_id.lower():
            hits[index] = 101.0 if raw == external_id.lower() else max(hits.get(index, 0.0), 100.0)
    return [(score, chunk[i][0], chunk[i][1]) for i, score in hits.items()]


def _check_external_id_free(session: Session, kind: str, external_id: str) -> None:
    if repo.by_external_id(session, kind, external_id) is not None:
        raise _external_id_taken(kind, external_id)


def _external_id_taken(kind: str, external_id: str | None) -> Conflict:
    return Conflict(f"a {kind} with external_id '{external_id}' already exists; external ids are unique per kind")


def parse_attribute_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """``attr.<key>=<value>`` query parameters as filters; a value that is JSON (number, true) is compared as such."""
    filters: dict[str, Any] = {}
    for name, raw in params.items():
        if not name.startswith("attr."):
            continue
        key = name[len("attr.") :]
        if not key or len(key) > 128 or not key.replace("_", "").replace("-", "").isalnum():
            raise InvalidInput(f"attribute filter '{name}': key must be letters, digits, '_' or '-'")
        try:
            value = json.loads(raw)
            filters[key] = value if isinstance(value, bool | int | float) else raw
        except json.JSONDecodeError:
            filters[key] = raw
    return filters
