"""Alerts: what trigger rules raised, listed and handled under the access policy.

A rule raises an alert on an entity (``entity``): the one whose value or attribute fired it (``subject``), or
one reached from it over relations (the doctor who treats the patient). Whoever may see the alert's entity
sees the alert, and may acknowledge or resolve it if they may write: a clinician sees the alerts on their own
doctor entity and on their patients, and no others (those answer 404, as a missing one does).

A message is stored with ``{entity.name}`` (the subject's name) and ``{target.name}`` (the name of the entity
the alert is on) left in, and they are filled as each reader may see those entities: a pseudonym for
de-identified readers, and a neutral text for an entity the reader may not see.

States move forward only: open -> acknowledged -> resolved, or open -> resolved at once. Resolved is final; a
rule that fires again raises a new alert.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, Forbidden, InvalidInput, NotFound, did_you_mean
from dust.core.security import Permission
from dust.engine import access, audit
from dust.engine.fields import Text, excerpt
from dust.engine.paging import MAX_OFFSET, id_next_cursor, id_walk
from dust.engine.timegrid import as_utc
from dust.storage.models import Alert, Entity
from dust.storage.repositories import Visible
from dust.storage.repositories import alerts as repo
from dust.storage.repositories import anomalies as anomaly_repo

Severity = Literal["info", "low", "medium", "high", "critical"]
State = Literal["open", "acknowledged", "resolved"]
SEVERITIES: tuple[str, ...] = get_args(Severity)  # in rising order
STATES: tuple[str, ...] = get_args(State)
# Where each state may go; staying put is always allowed (a repeated PATCH changes nothing).
NEXT = {"open": ("acknowledged", "resolved"), "acknowledged": ("resolved",), "resolved": ()}
MAX_NOTE = 1000
ANOTHER = "another entity"  # stands in for an entity the reader may not see
DELETED = "a deleted entity"  # for readers who see every entity: the subject is gone (alerts outlive it)
_PLACEHOLDER = re.compile(r"\{(entity|target)\.name\}")


# --- models -----------------------------------------------------------------------------------------------


class EntityRef(BaseModel):
    """An entity as the reader may see it. ``id`` and ``kind`` are null for one they may not see (or that was
    deleted), whose ``name`` is then a neutral text."""

    id: uuid.UUID | None
    kind: str | None
    name: str


class AlertPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    entity: EntityRef = Field(description="The entity the alert is on.")
    subject: EntityRef = Field(description="The entity whose value or attribute fired the rule.")
    trigger_id: uuid.UUID | None = Field(description="The rule that raised it; null once the rule is deleted.")
    firing_id: int | None
    severity: Severity
    message: str
    state: State
    note: str | None = Field(description="The last note given with a change of state.")
    schema_name: str | None = Field(serialization_alias="schema")
    label: str | None
    value: float | None
    time_index: int | None
    time: datetime | None = Field(description="The start of the time step of the value that fired the rule.")
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(description="The username of whoever changed its state last.")


class AlertList(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


class AlertUpdate(BaseModel):
    """A change of state: forward only (open -> acknowledged -> resolved, or open -> resolved)."""

    model_config = ConfigDict(extra="forbid")

    state: State
    note: Text | None = Field(None, max_length=MAX_NOTE, description="Why, or what was done (kept with the alert).")


# --- reading ----------------------------------------------------------------------------------------------


def list_alerts(
    session: Session,
    *,
    entity_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    trigger_id: uuid.UUID | None = None,
    severity: str | Sequence[str] | None = None,
    min_severity: str | None = None,
    state: str | Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AlertList:
    """Alerts on the entities the principal may see, newest first. ``severity`` and ``state``: one, a comma
    list or a list (any of them); ``min_severity``: that severity or above; ``start``/``end``: raised at or
    after / at or before (``created_at``)."""
    walk = id_walk(cursor)
    filters = repo.Filters(
        entity_id=entity_id,
        subject_id=subject_id,
        trigger_id=trigger_id,
        severities=_severities(severity, min_severity),
        states=_choices(state, STATES, "state"),
        start=None if start is None else as_utc(start, "from"),
        end=None if end is None else as_utc(end, "to"),
    )
    for named in (entity_id, subject_id):
        if named is not None:
            access.require_visible(session, named)
    visible = access.visible_ids(session)
    rows, in_progress = repo.page(session, filters, walk, limit + 1, visible, _hidden_schemas(session))
    shown = rows[:limit]
    audit.record_each(session, "read", "alert", [(r.id, _concerns(r)) for r in shown])
    return AlertList(
        items=_present(session, shown, visible), next_cursor=id_next_cursor(walk, rows, in_progress, limit)
    )


def get_alert(session: Session, alert_id: int) -> AlertPublic:
    """One alert; 404 if it does not exist or is on an entity the principal may not see."""
    row = _row(session, alert_id)
    audit.record(session, "read", "alert", row.id, _concerns(row))
    return _present(session, [row], access.visible_ids(session))[0]


def _row(session: Session, alert_id: int, *, lock: bool = False) -> Alert:
    missing = NotFound(f"alert {alert_id} does not exist")
    if not 1 <= alert_id <= MAX_OFFSET:  # no such id can be stored (PostgreSQL's integer)
        raise missing
    visible = access.visible_ids(session)
    row = repo.get(session, alert_id, within=visible)
    if row is None or (lock and (row := repo.get(session, alert_id, lock=True)) is None):
        raise missing
    if row.schema_name in _hidden_schemas(session):
        raise Forbidden(
            f"alert {alert_id} is about schema '{row.schema_name}', which is sensitive: de-identified readers "
            "get aggregates only"
        )
    return row


def _hidden_schemas(session: Session) -> set[str]:
    """The schemas whose alerts the principal does not get (their values): the sensitive ones, for analysts."""
    who = access.principal(session)
    return anomaly_repo.sensitive_schemas(session) if who is not None and who.deidentified else set()


def _concerns(row: Alert) -> list[uuid.UUID | None]:
    """The entities an alert tells about, for the audit trail: the one it is on, and whose value fired it."""
    return [row.entity_id] if row.subject_id == row.entity_id else [row.entity_id, row.subject_id]


# --- changing state ---------------------------------------------------------------------------------------


def update_alert(session: Session, alert_id: int, data: AlertUpdate) -> AlertPublic:
    """Acknowledge or resolve an alert (with an optional note). Repeating its current state changes nothing,
    but for a new note on an alert that is not resolved; a step back is 409."""
    access.require(session, Permission.write)
    row = _row(session, alert_id, lock=True)
    if data.state == row.state and data.note in (None, row.note):
        audit.record(session, "read", "alert", row.id, _concerns(row))
        return _present(session, [row], access.visible_ids(session))[0]
    _check_step(row, data.state)
    who = access.principal(session)
    note = row.note if data.note is None else data.note  # a step without a note keeps the last one said
    repo.update_state(session, row, data.state, note, None if who is None else who.username)
    audit.record(session, "update", "alert", row.id, _concerns(row))
    return _present(session, [row], access.visible_ids(session))[0]


def _check_step(row: Alert, state: str) -> None:
    if row.state == "resolved":
        what = "its note cannot change" if state == "resolved" else f"it cannot become '{state}' again"
        raise Conflict(
            f"alert {row.id} is resolved, which is final: {what}; a rule that fires again raises a new alert"
        )
    if state != row.state and state not in NEXT[row.state]:
        raise Conflict(
            f"alert {row.id} is {row.state} and cannot go back to '{state}'; from {row.state} it may become: "
            f"{', '.join(NEXT[row.state])}"
        )


# --- presenting -------------------------------------------------------------------------------------------


def _present(session: Session, rows: list[Alert], visible: Visible | None) -> list[AlertPublic]:
    """``rows`` as the principal may read them: entities presented per the policy, messages filled in."""
    refs = _refs(session, rows, visible)
    return [_public(row, refs[row.entity_id], refs[row.subject_id]) for row in rows]


def _refs(session: Session, rows: list[Alert], visible: Visible | None) -> dict[uuid.UUID, EntityRef]:
    """Each entity the rows name, as the reader may see it. The alert's own entity is visible (the rows were
    chosen so); a subject may not be, or may have been deleted (no foreign key: alerts outlive it)."""
    ids = {r.entity_id for r in rows} | {r.subject_id for r in rows}
    found = repo.entities(session, ids)
    seen = ids if visible is None else {r.entity_id for r in rows} | repo.among(session, ids, visible)
    return {i: _ref(session, found.get(i), i, i in seen, visible is None) for i in ids}


def _ref(session: Session, row: Entity | None, entity_id: uuid.UUID, seen: bool, sees_all: bool) -> EntityRef:
    if row is not None and seen:
        shown = access.present(session, row)
        return EntityRef(id=row.id, kind=row.kind, name=shown["name"])
    if sees_all:  # whoever sees every entity may know that this one is gone
        return EntityRef(id=entity_id, kind=None, name=DELETED)
    return EntityRef(id=None, kind=None, name=ANOTHER)


def _public(row: Alert, entity: EntityRef, subject: EntityRef) -> AlertPublic:
    # One pass, so that a name holding "{target.name}" is not filled in again.
    names = {"entity": subject.name, "target": entity.name}
    return AlertPublic(
        id=row.id,
        entity=entity,
        subject=subject,
        trigger_id=row.trigger_id,
        firing_id=row.firing_id,
        severity=cast(Severity, row.severity),
        message=_PLACEHOLDER.sub(lambda m: names[m.group(1)], row.message),
        state=cast(State, row.state),
        note=row.note,
        schema_name=row.schema_name,
        label=row.label,
        value=row.value,
        time_index=row.time_index,
        time=row.at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


# --- filters ----------------------------------------------------------------------------------------------


def _severities(severity: str | Sequence[str] | None, min_severity: str | None) -> list[str] | None:
    """The severities asked for: those named, of those at least ``min_severity`` (None: any)."""
    named = _choices(severity, SEVERITIES, "severity")
    if min_severity is None:
        return named
    if min_severity not in SEVERITIES:
        raise InvalidInput(_unknown(min_severity, SEVERITIES, "min_severity"))
    at_least = SEVERITIES[SEVERITIES.index(min_severity) :]
    return [s for s in at_least if named is None or s in named]


def _choices(value: str | Sequence[str] | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    """One of ``allowed``, a comma list or a list of them, checked; None: any."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"{what} must be one of {', '.join(allowed)}, a comma list or a list of them")
    names = [item.strip() for item in items if item.strip()]
    for name in names:
        if name not in allowed:
            raise InvalidInput(_unknown(name, allowed, what))
    return names or None


def _unknown(name: str, allowed: tuple[str, ...], what: str) -> str:
    return f"{what} '{excerpt(name)}' is not one of {', '.join(allowed)}{did_you_mean(name, allowed)}"
