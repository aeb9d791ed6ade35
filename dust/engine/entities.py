"""Entities: anything with an identity. The id is a UUID made here; names are never keys."""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process, utils
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from dust.engine import access, audit, caches
from dust.engine.fields import Attributes, Text, bad_value_char, describe, not_null, oversized
from dust.engine.paging import FORGED, OFFSET, decode_cursor, encode_cursor, keyset_next_cursor, keyset_walk
from dust.storage.models import Entity
from dust.storage.repositories import entities as repo
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import users as user_repo
from dust.storage.repositories.paging import creation_time

KIND = r"^[a-z][a-z0-9_\-]{0,63}$"
IN_BATCH = 10_000  # ids per IN (…) list: SQLite allows 32,766 parameters a statement
MAX_ATTRIBUTE_FILTERS = 16
MATCH_CUTOFF = 70.0  # rapidfuzz WRatio; "jnae doe" ~ "Jane Doe" scores 75, unrelated names stay under 60


class EntityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=KIND, description="What the entity is: patient, doctor, product, account…")
    name: Text = Field(max_length=512, description="Display name; not unique.")
    external_id: Text | None = Field(None, max_length=256, description="Outside identifier, unique per kind.")
    attributes: Attributes = Field(default_factory=dict, description="Free JSON attributes.")


class EntityUpdate(BaseModel):
    """Fields to change. ``attributes`` merges (RFC 7396): a key set to null is removed."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, max_length=512, json_schema_extra=not_null)  # refused: a name stays
    external_id: Text | None = Field(None, max_length=256)
    attributes: Attributes | None = None


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
    return create_many(session, [data])[0]


def create_many(session: Session, items: Sequence[EntityCreate]) -> list[EntityPublic]:
    """Entities in the order given, inserted by one statement (for importers); all or nothing.

    External ids must be free, as for ``create``, and distinct within ``items``.
    """
    if not items:
        return []
    _check_external_ids_free(session, items)
    who = access.principal(session)
    now = creation_time(session)  # the paging key: taken as stable paging needs (storage.repositories.paging)
    made = {"created_by": who.user_id if who else None, "created_at": now, "updated_at": now}
    fields = [{**data.model_dump(), **made, "id": uuid.uuid4()} for data in items]
    claimed = [data for data in items if data.external_id is not None]
    try:
        # Only an external id can clash; without one there is no constraint to trip and no SAVEPOINT to pay for.
        with session.begin_nested() if claimed else nullcontext():
            repo.add_many(session, fields)
    except IntegrityError:  # a concurrent create took an external id between our check and insert
        _check_external_ids_free(session, claimed)  # names the one taken
        raise _external_id_taken(claimed[0].kind, claimed[0].external_id) from None
    rows = [Entity(**f) for f in fields]  # not added to the session: only to present them
    audit.record_each(session, "create", "entity", [(row.id, [row.id]) for row in rows])
    _attributes_changed(session, [(row, {}) for row in rows if row.attributes])  # from nothing, at creation
    return [public(session, row) for row in rows]


def check_visible(session: Session, entity_ids: Collection[uuid.UUID]) -> None:
    """NotFound for the first of ``entity_ids`` that does not exist or the principal may not see."""
    wanted = list(dict.fromkeys(entity_ids))
    found: set[uuid.UUID] = set()
    visible = access.visible_ids(session)
    for start in range(0, len(wanted), IN_BATCH):
        found |= repo.existing_ids(session, wanted[start : start + IN_BATCH], within=visible)
    missing = next((entity_id for entity_id in wanted if entity_id not in found), None)
    if missing is not None:
        raise NotFound(f"entity {missing} does not exist")


def get(session: Session, entity_id: uuid.UUID, kind: str | None = None) -> EntityPublic:
    row = get_row(session, entity_id, kind, copy=True)
    audit.record(session, "read", "entity", row.id, [row.id])
    return public(session, row)


def read_first(session: Session, key: uuid.UUID) -> None:
    """A read's first query: the entity's row along with the cache epochs; ``get_row(copy=True)`` then takes it."""
    caches.read_along(session, repo.peek, key)


def get_row(
    session: Session, entity_id: uuid.UUID, kind: str | None = None, *, lock: bool = False, copy: bool = False
) -> Entity:
    """The entity, if it exists and the acting principal may see it (404 either way, so nothing leaks).

    ``lock`` (for a change) holds the row until commit, taken only once visibility is known so that nobody
    locks what they may not see; a delete that committed meanwhile makes it 404, not a failed UPDATE. ``copy``:
    a copy outside the session, for a read that changes nothing (``repo.peek``).
    """
    within = None if access.sees(session, entity_id) else access.visible_ids(session)
    row = (repo.peek if copy else repo.get)(session, entity_id, within=within)
    if row is None or (kind is not None and row.kind != kind):
        raise _missing(entity_id, kind)
    if lock and (row := repo.get(session, entity_id, lock=True)) is None:
        raise _missing(entity_id, kind)
    return row


def _missing(entity_id: uuid.UUID, kind: str | None) -> NotFound:
    return NotFound(f"{kind or 'entity'} {entity_id} does not exist")


def public(session: Session, row: Entity) -> EntityPublic:
    """The entity as the acting principal may read it (de-identified for analysts)."""
    return EntityPublic(**access.present(session, row))


def update(session: Session, entity_id: uuid.UUID, data: EntityUpdate, kind: str | None = None) -> EntityPublic:
    row = get_row(session, entity_id, kind, lock=True)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        raise InvalidInput("name cannot be null")
    if "external_id" in changes and changes["external_id"] not in (None, row.external_id):
        _check_external_id_free(session, row.kind, changes["external_id"])
    before = dict(row.attributes)
    if "attributes" in changes:
        changes["attributes"] = bounded_merge(row.attributes, changes["attributes"] or {})
    for field, value in changes.items():
        setattr(row, field, value)
    session.flush()
    audit.record(session, "update", "entity", row.id, [row.id])
    if "attributes" in changes:
        _attributes_changed(session, [(row, before)])
    return public(session, row)


def _attributes_changed(session: Session, changed: list[tuple[Entity, dict[str, Any]]]) -> None:
    """Trigger rules on attributes fire in the change's transaction."""
    from dust.engine import firing  # here: the trigger engine reaches this module through relations

    for row, before in changed:
        firing.on_attributes(session, row, before)


def _check_deletable(session: Session, entity_id: uuid.UUID) -> None:
    """A delete takes the entity's relations with it, so it must not decide anything the caller may not:
    no user may lose the entity their account is linked to, and no relation the caller could not delete
    themselves — one whose other end they cannot see, or of a granting type they may not write — may go."""
    who = access.principal(session)
    if who is None:
        return
    linked = user_repo.linked_to(session, entity_id)
    if linked:
        raise Conflict(
            f"user '{linked[0]}' is linked to entity {entity_id}; unlink the user first (PATCH /users/{{id}})"
        )
    hidden = relation_repo.count_touching(session, entity_id, outside=access.visible_ids(session))
    if hidden:
        raise Conflict(
            f"entity {entity_id} has {hidden} relation(s) to entities you cannot see; deleting it would delete "
            "those too, so ask an admin"
        )
    granting = [] if who.may_grant else relation_repo.types_touching(session, entity_id, who.grant_types)
    if granting:
        raise Conflict(
            f"entity {entity_id} has '{granting[0]}' relations, which decide who can see what: deleting it would "
            "change that, which only the roles named in DUST_GRANTING_ROLES can do; ask an admin"
        )


def bounded_merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``merge_patch``, refused if the result is over the size attributes may have."""
    merged = merge_patch(target, patch)
    too_big = oversized(merged)
    if too_big:
        raise InvalidInput(f"once merged, {too_big}")
    return merged


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: a null removes a key, an object merges into an object (or replaces)."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            merged[key] = value
    return merged


def delete(session: Session, entity_id: uuid.UUID, kind: str | None = None) -> None:
    """Delete the entity; its tensors and relations go with it (foreign keys cascade)."""
    get_row(session, entity_id, kind)
    _check_deletable(session, entity_id)
    caches.changed(session, caches.RELATIONS)  # its relations go with it
    repo.delete(session, entity_id)
    audit.record(session, "delete", "entity", entity_id, [entity_id])
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
    check_deidentified_filters(session, kind, q, attributes)
    visible = access.visible_ids(session)
    if q is not None and q.strip():
        found = _search(session, kind, q, attributes, visible, limit, cursor)
    else:
        walk = keyset_walk(cursor)
        rows, in_progress = repo.page(session, kind, attributes, visible, walk, limit + 1)
        found = EntityList(
            items=[public(session, r) for r in rows[:limit]],
            next_cursor=keyset_next_cursor(walk, rows, in_progress, limit),
        )
    if found.items:
        audit.record(session, "read", "entity", None, [e.id for e in found.items])
    return found


def check_deidentified_filters(
    session: Session, kind: str | None, q: str | None, attributes: Mapping[str, Any]
) -> None:
    """A de-identified reader may not find entities by what is hidden from them."""
    who = access.principal(session)
    if who is None or not who.deidentified:
        return
    if q:
        raise Forbidden("search by name or external id is not available to de-identified readers")
    hidden = access.sensitive_fields(session, kind)  # without a kind: sensitive for any kind
    for key in attributes:
        if key in hidden:
            raise Forbidden(f"attribute '{key}' is sensitive, so a de-identified reader cannot filter by it")


def _search(
    session: Session,
    kind: str | None,
    q: str,
    attributes: Mapping[str, Any],
    visible: Any,
    limit: int,
    cursor: str | None,
) -> EntityList:
    """Every match ranked, then the page after the cursor's place in that ranking.

    A match's place, (score, name, id), depends on the entity and the query alone, and the cursor is the place of
    the last one shown: entities created between pages land before or after it, and no other one moves, so none
    is skipped or shown twice (an offset into the ranking would shift with every match created before it).
    """
    after = _search_after(cursor)
    scored: list[tuple[float, str, str]] = []
    for chunk in repo.search_space(session, kind, attributes, visible):
        for score, entity_id, name in _score_chunk(q.strip(), chunk):
            place = (-score, name, str(entity_id))
            if after is None or place > after:
                scored.append(place)
    scored.sort()
    window = scored[:limit]
    items = [public(session, r) for r in repo.by_ids(session, [uuid.UUID(s[2]) for s in window])]
    last = window[-1] if len(scored) > limit else None
    return EntityList(items=items, next_cursor=encode_cursor(OFFSET, [-last[0], *last[1:]]) if last else None)


def _search_after(cursor: str | None) -> tuple[float, str, str] | None:
    """The place (negated score, name, id) of the last match a search page showed."""
    if not cursor:
        return None
    place = decode_cursor(cursor, OFFSET)
    if not (
        isinstance(place, list)
        and len(place) == 3
        and type(place[0]) in (int, float)
        and math.isfinite(place[0])
        and all(isinstance(v, str) for v in place[1:])
    ):
        raise InvalidInput(f"{FORGED} (a search position is [score, name, id])")
    return -float(place[0]), place[1], place[2]


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


def _check_external_ids_free(session: Session, items: Sequence[EntityCreate]) -> None:
    """Conflict for the first external id in ``items`` that is taken, or given twice: one query per kind."""
    wanted: dict[str, dict[str, None]] = {}  # kind: its external ids, in order
    for data in items:
        if data.external_id is None:
            continue
        if data.external_id in wanted.setdefault(data.kind, {}):
            raise _external_id_taken(data.kind, data.external_id)
        wanted[data.kind][data.external_id] = None
    for kind, external_ids in wanted.items():
        ordered = list(external_ids)
        taken: set[str] = set()
        for start in range(0, len(ordered), IN_BATCH):
            taken |= repo.taken_external_ids(session, kind, ordered[start : start + IN_BATCH])
        first = next((external_id for external_id in ordered if external_id in taken), None)
        if first is not None:
            raise _external_id_taken(kind, first)


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
        filters[key] = _filter_value(name, raw)
    if len(filters) > MAX_ATTRIBUTE_FILTERS:  # each is a condition in one SQL statement; SQLite's nest 1,000 deep
        raise InvalidInput(
            f"a request may carry at most {MAX_ATTRIBUTE_FILTERS} attr.<key> filters; this one has {len(filters)}"
        )
    return filters


def _filter_value(name: str, raw: str) -> Any:
    """A JSON number or boolean as such, anything else as text; a number must be a finite float64, since that
    is what the stored value is compared as (a bigger one overflows the comparison)."""
    at = bad_value_char(raw)
    if at is not None:
        raise InvalidInput(
            f"attribute filter '{name}': the value must not contain {describe(raw[at])}; no attribute holds a "
            "control character other than tab and line breaks, or a lone surrogate"
        )
    try:
        value = json.loads(raw, parse_constant=str)  # NaN and Infinity are not JSON numbers: compare them as text
    except json.JSONDecodeError:
        return raw
    except ValueError:  # an integer of over 4300 digits
        value = math.inf
    if not isinstance(value, bool | int | float):
        return raw
    if not isinstance(value, bool) and not _finite(value):
        raise InvalidInput(
            f"attribute filter '{name}': {raw[:20]}{'…' if len(raw) > 20 else ''} is beyond the numbers an "
            f"attribute can hold; a number must be finite and within ±{sys.float_info.max:.6g} (float64)"
        )
    return value


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer past float64, e.g. 1 followed by 400 zeros
        return False
