"""Scans with the detectors that judge many series at once, flagged into the same ``anomalies`` table as the
streaming detectors (so GET /anomalies lists them, under the same access policy):

- ``multivariate`` (``dust.anomalies.multivariate``): every label of a tensor at each step, against the steps
  before it; the row's label is the label that contributes most;
- ``relational`` (``dust.anomalies.relational``): one label of each entity at each step, against the entities it
  is related to at that same absolute time (tensors of different origins line up on the schema's grid, as in
  ``dust.engine.insights``), over relations valid then.

Each scan replaces what its detector flagged before in the tensors and window it scans. It reads only what the
caller may see: a clinician's relational scan neither judges nor compares with entities beyond their reach.
The same detectors also score values as they are written, by rule: ``dust.engine.anomaly_joint``.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.anomalies.multivariate import JointScore, Multivariate
from dust.anomalies.relational import Judged, Relational
from dust.core.errors import InvalidInput
from dust.engine import access, audit, insights, schemas
from dust.engine.anomalies import (
    MAX_REASON,
    SCAN_STEPS,
    ScanRequest,
    ScanResult,
    cell_name,
    scan_window,
    scanned_tensors,
    stored_values,
    tensor_grid,
)
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import as_utc
from dust.storage.models import Tensor, utcnow
from dust.storage.repositories import anomalies as repo
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import tensors as tensor_repo

MAX_LABELS = 64  # cells of a tensor a multivariate scan judges together: beyond, its covariance means little
MAX_STEPS = 10_000  # steps of the schema a relational scan may span


def scan(session: Session, request: ScanRequest) -> ScanResult:
    """A scan by ``request.detector``: multivariate or relational."""
    if request.detector == "multivariate":
        return multivariate(session, request)
    return relational(session, request)


def _made(cls: Any, request: ScanRequest, *args: Any) -> Any:
    """The detector with the request's settings; settings it does not take are the request's fault (422)."""
    try:
        return cls(*args, **request.settings)
    except (TypeError, ValueError) as problem:
        raise InvalidInput(f"settings are not accepted by detector '{cls.name}' ({problem})") from None


# --- multivariate -----------------------------------------------------------------------------------------


def multivariate(session: Session, request: ScanRequest) -> ScanResult:
    """Every tensor asked for (one, or each of a schema that the caller may see) scored step by step over all
    its labels; the steps before ``from`` (up to the detector's window) warm the detector up."""
    _made(Multivariate, request, [])  # bad settings are refused whether or not a tensor has values
    rows = scanned_tensors(session, request)
    scored = flagged = 0
    for row in rows.values():
        sdef = schemas.get_def(session, row.schema_name, row.schema_version)
        window = scan_window(row, sdef, request)
        if window is not None:
            counts = _scan_tensor(session, row, sdef, window, request)
            scored, flagged = scored + counts[0], flagged + counts[1]
    audit.record_each(session, "update", "anomaly", [(row.id, [row.entity_id]) for row in rows.values()])
    return ScanResult(scored=scored, flagged=flagged)


def cell_labels(sdef: SchemaDef) -> list[tuple[str, str]]:
    """(label of the first axis, name) of each cell: ``heart_rate``, or ``heart_rate (position=sit)``."""
    first = np.unravel_index(np.arange(math.prod(sdef.shape)), sdef.shape)[0]
    labels = [sdef.axes[0].labels[int(i)] for i in first]
    return [(label, cell_name(sdef, cell, label)) for cell, label in enumerate(labels)]


def _scan_tensor(
    session: Session, row: Tensor, sdef: SchemaDef, window: tuple[int, int], request: ScanRequest
) -> tuple[int, int]:
    labels = cell_labels(sdef)
    if len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"schema '{sdef.name}' has {len(labels)} cells a step; a multivariate scan judges at most {MAX_LABELS}"
        )
    detector: Multivariate = _made(Multivariate, request, [name for _, name in labels])
    first, last = window
    start = max(first - detector.window, row.time_min or 0)
    repo.drop_detected(session, row.id, Multivariate.name, first, last)
    grid, cells, now = tensor_grid(row, sdef), np.arange(len(labels)), utcnow()
    flagged: list[dict[str, Any]] = []
    scored, taken, pushed_out = 0, None, None
    for at in range(start, last + 1, SCAN_STEPS):
        values = stored_values(session, row, sdef, cells, at, min(at + SCAN_STEPS - 1, last))
        for i in np.flatnonzero(~np.isnan(values).all(axis=1)).tolist():
            pushed_out = detector.past[0] if len(detector.past) == detector.window else None
            judged, t = detector.update(values[i]), at + i
            taken = t
            if t < first:
                continue  # a step of the warm-up, before the window: judged only to be taken in
            scored += 1
            if judged.score >= request.threshold:
                step = (t, grid.timestamp(t))
                flagged.append(multivariate_flag(row, sdef, labels, step, values[i], judged) | {"created_at": now})
    repo.add(session, flagged)
    if start == row.time_min and last == row.time_max and taken is not None:  # it has seen the whole history
        from dust.engine import anomaly_joint  # it builds on this module

        anomaly_joint.carry_on(session, row, request.settings, detector, taken, pushed_out)
    return scored, len(flagged)


def multivariate_flag(
    row: Tensor,
    sdef: SchemaDef,
    labels: list[tuple[str, str]],
    step: tuple[int, datetime],
    values: np.ndarray,
    judged: JointScore,
) -> dict[str, Any]:
    """A flagged step, under the label contributing most and with its value; but for its creation time."""
    top = judged.top[0]
    reason = (judged.reason or f"scored {judged.score:.2f} by multivariate")[:MAX_REASON]
    flag = _flag(row, sdef, (top, labels[top][0]), step, values[top], judged.score, reason)
    return flag | {"detector": Multivariate.name}


def _flag(
    row: Tensor,
    sdef: SchemaDef,
    cell: tuple[int, str],
    step: tuple[int, datetime],
    value: float,
    score: float,
    reason: str,
) -> dict[str, Any]:
    """An ``anomalies`` row, but for its detector and creation time; ``reason`` keeps ``{entity}``."""
    return {
        "tensor_id": row.id,
        "entity_id": row.entity_id,
        "schema_name": sdef.name,
        "label": cell[1],
        "cell": cell[0],
        "time_index": step[0],
        "at": step[1],
        "value": float(value),
        "score": float(score),
        "reason": reason,
    }


# --- relational -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One recorded value of the label, in one tensor and cell, at one step of it."""

    row: Tensor
    sdef: SchemaDef
    cell: int
    time_index: int
    value: float


def relational(session: Session, request: ScanRequest) -> ScanResult:
    """Each entity's value of ``label`` at each step from ``from`` to ``to``, against the values at the same
    step of the entities related to it (or, ``via``, sharing a related entity with it) over ``relation``."""
    assert request.schema_name and request.label and request.relation  # ScanRequest checks them
    sdef = schemas.get_def(session, request.schema_name)
    position, _ = insights.locate(sdef, request.label)
    detector: Relational = _made(Relational, request)
    window = _relational_window(sdef, request)
    visible = access.visible_ids(session)
    rows = list(tensor_repo.lock(session, repo.tensors_of_schema(session, sdef.name, visible), within=visible).values())
    steps = _values_by_step(session, rows, request.label, position, window)
    graph = Graph(relation_repo.all_edges(session, [request.relation], visible))  # both ends visible
    kinds = {key: e.kind for key, e in repo.entities(session, {r.entity_id for r in rows}).items()}
    scored, now = 0, utcnow()
    flagged: list[dict[str, Any]] = []
    for (when, _), values in steps.items():
        of: dict[uuid.UUID, list[Value]] = defaultdict(list)
        for value in values:
            of[value.row.entity_id].append(value)
        around = neighbours_at(graph, when, request.direction, request.via, set(of))
        by_entity = {e: statistics.median(v.value for v in mine) for e, mine in of.items()}
        for entity, judged in detector.judge_all(by_entity, around).items():
            scored += len(of[entity])
            if judged.score >= request.threshold:
                compared = [kinds.get(n) for n in around[entity] if n in by_entity]
                words = cohort(judged, request.relation, request.via, compared)
                flagged += [relational_flag(v, request.label, judged, words) | {"created_at": now} for v in of[entity]]
    _drop_relational(session, rows, request.label, position, window)
    repo.add(session, flagged)
    audit.record_each(session, "update", "anomaly", [(row.id, [row.entity_id]) for row in rows])
    return ScanResult(scored=scored, flagged=len(flagged))


def _relational_window(sdef: SchemaDef, request: ScanRequest) -> tuple[datetime, datetime]:
    """(from, to) in UTC: ``to`` defaults to ``from`` (one step), and the span is bounded."""
    assert isinstance(request.start, datetime) and (request.end is None or isinstance(request.end, datetime))
    start = as_utc(request.start, "from")
    end = start if request.end is None else as_utc(request.end, "to")
    if end < start:
        raise InvalidInput("from is after to; both ends are inclusive")
    if (end - start).total_seconds() / sdef.time.seconds >= MAX_STEPS:
        raise InvalidInput(
            f"a relational scan spans at most {MAX_STEPS:,} steps of schema '{sdef.name}'; narrow from/to"
        )
    return start, end


def label_cells(sdef: SchemaDef, label: str, position: int) -> np.ndarray:
    """The cells of a tensor of this version holding ``label`` on axis ``position`` (none if it lacks it)."""
    labels = sdef.axes[position].labels
    if label not in labels:
        return np.empty(0, np.int64)
    along = np.unravel_index(np.arange(math.prod(sdef.shape)), sdef.shape)[position]
    return np.flatnonzero(along == labels.index(label))


def _span(row: Tensor, sdef: SchemaDef, window: tuple[datetime, datetime]) -> tuple[int, int] | None:
    """The tensor's recorded steps holding the window's ends and those between; None if they do not meet."""
    if row.time_min is None or row.time_max is None:
        return None
    grid = tensor_grid(row, sdef)
    try:
        first, last = max(grid.step_of(window[0]), row.time_min), min(grid.step_of(window[1]), row.time_max)
    except OverflowError:  # a step next to an end would fall outside the years 1..9999: far from any value
        return None
    return (first, last) if first <= last else None


def _values_by_step(
    session: Session, rows: list[Tensor], label: str, position: int, window: tuple[datetime, datetime]
) -> dict[tuple[datetime, str], list[Value]]:
    """The recorded values of ``label`` in the window, by (start of the step, cell name): the same absolute
    step of tensors of different origins shares a key, as does the same cell across schema versions."""
    found: dict[tuple[datetime, str], list[Value]] = defaultdict(list)
    for row in rows:
        sdef = schemas.get_def(session, row.schema_name, row.schema_version)
        cells, span = label_cells(sdef, label, position), _span(row, sdef, window)
        if span is None or not cells.size:
            continue
        grid = tensor_grid(row, sdef)
        values = stored_values(session, row, sdef, cells, *span)
        for i, k in zip(*np.nonzero(~np.isnan(values)), strict=True):
            t, cell = span[0] + int(i), int(cells[k])
            key = (grid.timestamp(t), cell_name(sdef, cell, label))
            found[key].append(Value(row, sdef, cell, t, float(values[i, k])))
    return found


Adjacency = tuple[dict[uuid.UUID, set[uuid.UUID]], dict[uuid.UUID, set[uuid.UUID]]]  # (out, into)


class Graph:
    """The relations of one type, as adjacency at a time: built once per distinct time, or once for all when no
    relation has a validity bound (the usual case), not once per step and label."""

    def __init__(self, edges: list[relation_repo.EdgeRow]) -> None:
        self.edges = edges
        self.timeless = all(e.valid_from is None and e.valid_to is None for e in edges)
        self.built: dict[datetime | None, Adjacency] = {}

    def at(self, when: datetime) -> Adjacency:
        key = None if self.timeless else when
        if key not in self.built:
            out: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
            into: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
            for e in self.edges:
                if (e.valid_from is None or e.valid_from <= when) and (e.valid_to is None or when < e.valid_to):
                    out[e.source_id].add(e.target_id)
                    into[e.target_id].add(e.source_id)
            self.built[key] = (out, into)
        return self.built[key]


def neighbours_at(
    graph: Graph, when: datetime, direction: str, via: bool, entities: set[uuid.UUID]
) -> dict[uuid.UUID, set[uuid.UUID]]:
    """Each of ``entities``' neighbours over the relations valid at ``when``: the entities it relates to in
    ``direction``, or, ``via``, those the entities it relates to relate to in the opposite one (patient ←
    treats ← doctor → treats → patient), itself left out."""
    out, into = graph.at(when)
    forward = {"out": [out], "in": [into], "both": [out, into]}[direction]
    back = {"out": [into], "in": [out], "both": [out, into]}[direction]

    def hop(ids: Iterable[uuid.UUID], ways: list[dict[uuid.UUID, set[uuid.UUID]]]) -> set[uuid.UUID]:
        return {n for i in ids for way in ways for n in way.get(i, ())}

    return {e: (hop(hop([e], forward), back) if via else hop([e], forward)) - {e} for e in entities}


def cohort(judged: Judged, relation: str, via: bool, kinds: list[str | None]) -> str:
    """What the neighbours are, in words: "the 6 patients {entity} is related to by treats"."""
    noun = f"{kinds[0]}s" if kinds and len(set(kinds)) == 1 and kinds[0] else "entities"
    if via:
        return f"the {judged.neighbours} other {noun} related by {relation} to the same entities as {{entity}}"
    return f"the {judged.neighbours} {noun} {{entity}} is related to by {relation}"


def relational_flag(value: Value, label: str, judged: Judged, cohort: str) -> dict[str, Any]:
    name = cell_name(value.sdef, value.cell, label)
    reason = (judged.reason or "").replace("{label}", name).replace("{neighbours}", cohort)[:MAX_REASON]
    step = (value.time_index, tensor_grid(value.row, value.sdef).timestamp(value.time_index))
    row = _flag(value.row, value.sdef, (value.cell, label), step, value.value, judged.score, reason)
    return row | {"detector": Relational.name}


def _drop_relational(
    session: Session, rows: list[Tensor], label: str, position: int, window: tuple[datetime, datetime]
) -> None:
    """What earlier relational scans flagged of ``label`` in the window, in the tensors this one scanned."""
    for row in rows:
        sdef = schemas.get_def(session, row.schema_name, row.schema_version)
        span = _span(row, sdef, window)
        if span is not None:
            repo.drop_detected(session, row.id, Relational.name, *span, label_cells(sdef, label, position).tolist())
