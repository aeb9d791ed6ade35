"""Thin compositions of engine calls that the pages need and the engine does not offer in one call yet. Each runs
on a signed-in session, so the access policy holds as for every engine call."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.engine import access, anomalies, audit, tensors, triggers
from dust.engine.tensors import TensorPublic
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import users as user_repo
from dust.storage.repositories import vocabulary
from dust.ui.components.charts import Grid, Mark, Threshold, grid_of

RECENT_STEPS = 366  # what the entity page draws of a tensor: its last year of daily steps
CHUNK = 5_000  # ids per IN (…) list: SQLite allows 32,766 parameters a statement
MARKS = 500  # anomalies marked on a tensor's lines, newest first
ATTRIBUTE_SAMPLE = 500  # entities of a kind whose attribute keys the training form offers as targets


@dataclass(frozen=True)
class TensorParts:
    """What the entity page draws of one tensor."""

    meta: TensorPublic
    grid: Grid
    values: np.ndarray  # as read: (*axes, time)
    marks: list[Mark]
    thresholds: list[Threshold]

    @property
    def fingerprint(self) -> str:
        """Changes when a value, an anomaly or a threshold does: the page redraws only then."""
        digest = hashlib.blake2b(self.values.tobytes(), digest_size=12)
        digest.update(repr((self.grid.times[-1:], self.marks[:1], len(self.marks), self.thresholds)).encode())
        return digest.hexdigest()


def tensor_parts(session: Session, meta: TensorPublic, *, steps: int = RECENT_STEPS) -> TensorParts:
    """The tensor's recent values, its anomalies and the trigger thresholds on its labels."""
    start = None if meta.time.end is None else max(meta.time.start or 0, meta.time.end - steps + 1)
    view = tensors.read(session, meta.id, start=start)
    grid = grid_of(view)
    found = anomalies.list_anomalies(session, tensor_id=meta.id, limit=MARKS).items
    marks = [Mark(a.time, _row_of(grid, a.label), a.value, a.score) for a in found]
    entity = entity_repo.get(session, meta.entity_id)
    drawn = thresholds(session, meta.schema_name, entity.kind if entity is not None else None)
    return TensorParts(meta, grid, np.asarray(view.values, dtype=float), marks, drawn)


def _row_of(grid: Grid, label: str) -> str:
    """The row an anomaly's label is on: the label itself, or the row whose last part it is."""
    if label in grid.rows:
        return label
    return next((row for row in grid.rows if row.split(" · ")[-1] == label), label)


def thresholds(session: Session, schema: str, kind: str | None = None) -> list[Threshold]:
    """The thresholds of the enabled value rules on ``schema``'s labels that apply to entities of ``kind``: a
    fixed value (``op``/``value``, alone or counted over steps) or the bounds of ``between``/``outside``; rules
    on a change or a rate have no line to draw. Drawn for whoever may read the tensor (a clinician sees the
    fever line on their patient's temperature): a rule's when is no one's data, and the rules themselves stay
    for admins to read and change (GET /triggers)."""
    found = []
    for label, rules in triggers.index(session).values.get(schema, {}).items():
        for rule in rules:
            when = rule.when
            if (when.kind is not None and when.kind != kind) or when.change is not None or when.rate is not None:
                continue
            if when.op is not None and isinstance(when.value, int | float) and not isinstance(when.value, bool):
                found.append(Threshold(label, when.op, float(when.value), rule.name))
            for bounds, ops in ((when.between, (">=", "<=")), (when.outside, ("<", ">"))):
                if bounds is not None:
                    found += [Threshold(label, op, float(v), rule.name) for op, v in zip(ops, bounds, strict=True)]
    return sorted(found, key=lambda t: (t.row, t.value, t.name))


def presented(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """Entities by id as the principal may read them (de-identified for analysts), those they may not see left
    out — what ``relations.neighbourhood`` does for its nodes, for the ids of a master tensor."""
    visible = access.visible_ids(session)
    found: dict[uuid.UUID, dict[str, Any]] = {}
    for at in range(0, len(ids), CHUNK):
        part = ids[at : at + CHUNK]
        allowed = part if visible is None else list(entity_repo.existing_ids(session, part, within=visible))
        for row in entity_repo.by_ids(session, allowed):
            found[row.id] = access.present(session, row)
    if found:
        audit.record(session, "read", "entity", None, list(found))
    return found


def kinds_and_types(session: Session) -> tuple[list[str], list[str]]:
    """Every kind of entity and every relation type in use: the training form's choices (names, as the Ask
    page's vocabulary has them)."""
    return vocabulary.kinds(session), vocabulary.relation_types(session)


def label_attributes(session: Session, kind: str | None) -> list[str]:
    """The attributes holding a text, a number or a boolean (what a model can learn classes from) among a
    sample of the entities of ``kind`` the principal may see: cheap, and enough to offer the usual targets."""
    if not kind:
        return []
    samples = vocabulary.attribute_sample(session, kind, access.visible_ids(session), ATTRIBUTE_SAMPLE)
    scalar = (str, int, float, bool)
    return sorted({key for attributes in samples for key, value in attributes.items() if isinstance(value, scalar)})


def usernames(session: Session, ids: list[str | None]) -> dict[str, str]:
    """Users' names by id (the models' ``created_by``), for saying who trained a model."""
    found = {}
    for user_id in {i for i in ids if i}:
        row = user_repo.get(session, uuid.UUID(user_id))
        if row is not None:
            found[user_id] = row.username
    return found
