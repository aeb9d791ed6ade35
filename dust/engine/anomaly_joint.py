"""The multivariate and relational detectors as values are written, by rule, as ``score_written`` scores the others.

Their rules are put like any other, with two differences in what they are put on:

- ``multivariate`` goes on the label ``*`` of a schema (``PUT /anomalies/rules/vitals/*``): it judges the whole
  step of a tensor — every cell, as a multivariate scan does — not one label. Its state, one per tensor (cell
  ``WHOLE_STEP`` of ``anomaly_states``), is the detector's window of past steps. Each written step after the last
  one judged is judged from it, in time order, then taken in; earlier steps (a backfill) are left to a scan, as
  for the other detectors. The last step judged is judged again when a write adds to it or corrects it — a
  tensor's labels often arrive in separate writes for one step — from the window as it was before that step
  (the state keeps the step that step pushed out), so a step is judged on all its labels, as by a scan.
- ``relational`` goes on a label, with its relation in the settings (``relation``, ``direction``, ``via``, as a
  relational scan takes them), beside the detector's own. It keeps no state: each written value of the label is
  judged against the values its related entities have at the same step when it is written; values they are
  given later are not waited for (no look-ahead), and a value written again is judged again. At most
  ``MAX_NEIGHBOURS`` related entities are read (the first by id): a write reads the relations of the entity
  (and, ``via``, of those it is related to) and one block per neighbour tensor and step, whatever the cohort.

Both flag as their scans do (detector, label, value and reason), and read only what the writer may see, as a scan
reads only what the caller may.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy.orm import Session

from dust.anomalies.multivariate import Multivariate, as_json
from dust.anomalies.relational import Relational
from dust.core.errors import InvalidInput
from dust.engine import access, insights, schemas
from dust.engine import anomalies as streaming
from dust.engine import blocks as codec
from dust.engine.anomaly_scans import (
    MAX_LABELS,
    Graph,
    Value,
    cell_labels,
    cohort,
    label_cells,
    multivariate_flag,
    neighbours_at,
    relational_flag,
)
from dust.engine.relations import TYPE_NAME
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import TimeGrid
from dust.storage.models import Tensor, utcnow
from dust.storage.repositories import anomalies as repo
from dust.storage.repositories import relations as relation_repo

JOINT = "*"  # the label of a multivariate rule: every label of a step
WHOLE_STEP = -1  # the cell of a tensor's multivariate state in anomaly_states: no cell, the whole step
MAX_NEIGHBOURS = 100  # related entities whose values a written value is compared with, at most
_COHORT = ("relation", "direction", "via")  # a relational rule's settings that say who the neighbours are
_BACK = {"out": "in", "in": "out", "both": "both"}


class Written(streaming.Written, Protocol):
    """A written tensor's part of a batch, with its touched blocks as merged (``dust.engine.tensors._Write``)."""

    merged: dict[int, np.ndarray]


# --- rules ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Who a relational rule compares a value with: the entities related to it by ``relation`` (``direction``),
    or, ``via``, those sharing a related entity with it."""

    relation: str
    direction: str
    via: bool


def check_rule(sdef: SchemaDef, label: str, detector: str, settings: dict[str, Any]) -> None:
    """A multivariate rule on ``*``, or a relational one on a label, with settings the detector takes; 422 else."""
    if detector == Multivariate.name:
        if label != JOINT:
            raise InvalidInput(
                f"a multivariate rule judges every label of a step together: put it on label '{JOINT}' "
                f"(PUT /anomalies/rules/{sdef.name}/{JOINT}), not on '{label}'"
            )
        labels = cell_labels(sdef)
        if len(labels) > MAX_LABELS:
            raise InvalidInput(
                f"schema '{sdef.name}' has {len(labels)} cells a step; a multivariate rule judges at most {MAX_LABELS}"
            )
        _made(Multivariate, settings, [name for _, name in labels])
    else:
        insights.locate(sdef, label)  # 422 for a label not in the schema, or on several axes
        _made(Relational, cohort_of(settings)[1])


def cohort_of(settings: dict[str, Any]) -> tuple[Cohort, dict[str, Any]]:
    """A relational rule's settings: who the neighbours are, and the detector's own keyword arguments."""
    relation, direction, via = settings.get("relation"), settings.get("direction", "both"), settings.get("via", False)
    if not isinstance(relation, str) or not TYPE_NAME.fullmatch(relation):
        raise InvalidInput(
            "a relational rule needs settings.relation: the relation type whose entities a value is compared with "
            '(e.g. "treats"; lowercase letters, digits, _ and -), with direction (out, in or both) and via (a boolean)'
        )
    if direction not in ("out", "in", "both"):
        raise InvalidInput(f"settings.direction must be out, in or both, not {json.dumps(direction)[:40]}")
    if not isinstance(via, bool):
        raise InvalidInput(f"settings.via must be true or false, not {json.dumps(via)[:40]}")
    return Cohort(relation, direction, via), {k: v for k, v in settings.items() if k not in _COHORT}


def _made(cls: Any, settings: dict[str, Any], *args: Any) -> Any:
    """The detector made with ``settings`` and tried once, as ``put_rule`` tries the others: a setting is often
    only used then, and a write must not be what finds it wrong."""
    try:
        detector = cls(*args, **settings)
        if isinstance(detector, Multivariate):
            for _ in range(3):
                detector.update(np.zeros(len(detector.names)))
            json.dumps(detector.state(), allow_nan=False)
        else:
            detector.judge(1.0, np.array([0.0, 1.0, 2.0]))
        return detector
    except (TypeError, ValueError, OverflowError) as problem:
        takes = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "names")]
        takes = [*_COHORT, *takes] if cls is Relational else takes
        raise InvalidInput(
            f"settings {json.dumps(settings)[:200]} are not accepted by detector '{cls.name}' ({problem}); "
            f"it takes: {', '.join(takes)}"
        ) from None


# --- scoring ----------------------------------------------------------------------------------------------


def score(session: Session, write: Written, rules: list[streaming.Rule]) -> list[dict[str, Any]]:
    """Score one tensor's part of a write by its schema's multivariate and relational rules; the rows flagged."""
    flagged: list[dict[str, Any]] = []
    for rule in rules:
        if rule.detector == Multivariate.name:
            flagged += _multivariate(session, write, rule)
        else:
            flagged += _relational(session, write, rule)
    return flagged


def _multivariate(session: Session, write: Written, rule: streaming.Rule) -> list[dict[str, Any]]:
    row, sdef = write.row, write.sdef
    labels = cell_labels(sdef)
    if len(labels) > MAX_LABELS:  # a later version grew past what the rule was accepted for: not judged
        return []
    stored = repo.states(session, row.id, [WHOLE_STEP]).get((WHOLE_STEP, rule.detector))
    usable = stored if stored is not None and stored.rule == rule.made_by else None  # else start afresh
    steps = np.unique(write.times)
    if usable is not None:
        steps = steps[steps >= usable.last_time]
    if not steps.size:
        return []
    names = [name for _, name in labels]
    detector = Multivariate(names, **rule.settings)
    pushed_out: np.ndarray | None = None  # the step the last one judged pushed out of the window
    if usable is not None:
        detector = Multivariate.restore(usable.state["window"], names, **rule.settings)
        if usable.state["before"] is not None:
            kept = {"names": usable.state["window"]["names"], "past": [usable.state["before"]]}
            pushed_out = Multivariate.restore(kept, names, **rule.settings).past[0]
    grid, now, last = streaming.tensor_grid(row, sdef), utcnow(), None
    flagged: list[dict[str, Any]] = []
    for t, vector in zip(steps.tolist(), _vectors(session, write, steps), strict=True):
        if np.isnan(vector).all():
            continue
        if usable is not None and t == usable.last_time:  # judged before on what it had then: judge it again
            detector.past.pop()
            if pushed_out is not None:
                detector.past.appendleft(pushed_out)
            repo.drop_detected(session, row.id, Multivariate.name, t, t)
        pushed_out = detector.past[0] if len(detector.past) == detector.window else None
        judged, last = detector.update(vector), t
        if judged.score >= rule.threshold:
            flagged.append(multivariate_flag(row, sdef, labels, (t, grid.timestamp(t)), vector, judged))
    if last is not None:
        saved = _window_row(row, rule, detector, last, pushed_out)
        repo.save_states(session, [saved] if stored is None else [], [] if stored is None else [saved])
    flagged = [f | {"created_at": now} for f in flagged]
    repo.add(session, flagged)
    return flagged


def _window_row(
    row: Tensor, rule: streaming.Rule, detector: Multivariate, last: int, pushed_out: np.ndarray | None
) -> dict[str, Any]:
    """A tensor's multivariate state: the window, and the step the last one judged pushed out of it."""
    state = {"window": detector.state(), "before": None if pushed_out is None else as_json(pushed_out)}
    saved = {"tensor_id": row.id, "cell": WHOLE_STEP, "detector": rule.detector, "label": rule.label}
    return saved | {"rule": rule.made_by, "state": state, "last_time": last}


def carry_on(
    session: Session,
    row: Tensor,
    settings: dict[str, Any],
    detector: Multivariate,
    last: int,
    pushed_out: np.ndarray | None,
) -> None:
    """A multivariate scan of a tensor's whole history leaves its window for the schema's rule on ``*`` to carry
    on from, if the rule has the scan's settings: as a scan by a label's rule leaves its series' states."""
    rule = streaming.rules_of(session, row.schema_name).get(JOINT)
    if rule is None or rule.detector != Multivariate.name or rule.settings != settings:
        return
    repo.drop_states(session, row.id, [WHOLE_STEP])
    repo.save_states(session, [_window_row(row, rule, detector, last, pushed_out)], [])


def _vectors(session: Session, write: Written, steps: np.ndarray) -> list[np.ndarray]:
    """Every cell at each of ``steps``, as now stored: from the blocks the write merged, else from storage."""
    block, merged = write.row.block_steps, getattr(write, "merged", {})
    cells = np.arange(math.prod(write.sdef.shape))
    found = []
    for t in steps.tolist():
        values = merged.get(t // block)
        if values is None:
            found.append(streaming.stored_values(session, write.row, write.sdef, cells, t, t)[0])
        else:
            found.append(np.array(values[t % block], dtype=np.float64))
    return found


def _relational(session: Session, write: Written, rule: streaming.Rule) -> list[dict[str, Any]]:
    row, sdef = write.row, write.sdef
    cells = _cells_of(sdef, rule.label)
    mine = np.isin(write.cells, cells)
    if not mine.any():
        return []
    who, own = cohort_of(rule.settings)
    detector = Relational(**own)
    times, flat, numbers = write.times[mine], write.cells[mine], write.numbers[mine]
    grid = streaming.tensor_grid(row, sdef)
    distinct = np.unique(times)
    starts = grid.timestamps(distinct)
    around = _around(Graph(_edges(session, row.entity_id, who)), row.entity_id, who, starts)
    read = sorted(set().union(*around))[:MAX_NEIGHBOURS]
    column = {entity: k for k, entity in enumerate(read)}
    compared = [np.array(sorted(column[e] for e in them if e in column), dtype=np.int64) for them in around]
    values = _values_at(session, sdef.name, rule.label, read, starts)
    names = {cell: streaming.cell_name(sdef, cell, rule.label) for cell in cells.tolist()}
    now, flagged, kinds = utcnow(), [], _Kinds(session)
    for t, cell, value in zip(times.tolist(), flat.tolist(), numbers.tolist(), strict=True):
        k = int(np.searchsorted(distinct, t))
        theirs = values.get(names[cell])
        if theirs is None:  # no neighbour has this cell at any step written
            continue
        at = theirs[k, compared[k]]
        judged = detector.judge(value, at)
        if judged is not None and judged.score >= rule.threshold:
            with_value = [read[c] for c, v in zip(compared[k].tolist(), at.tolist(), strict=True) if not math.isnan(v)]
            words = cohort(judged, who.relation, who.via, kinds.of(with_value))
            flag = relational_flag(Value(row, sdef, cell, t, value), rule.label, judged, words)
            flagged.append(flag | {"created_at": now})
    for cell in np.unique(flat).tolist():  # what was flagged at values written again is judged anew
        repo.drop_detected_at(session, row.id, Relational.name, cell, np.unique(times[flat == cell]).tolist())
    repo.add(session, flagged)
    return flagged


def _around(graph: Graph, entity: uuid.UUID, who: Cohort, starts: np.ndarray) -> list[set[uuid.UUID]]:
    """The neighbours of ``entity`` at each of ``starts``: worked out once when no relation has a validity bound."""
    instants = [datetime.fromisoformat(str(start)).replace(tzinfo=UTC) for start in starts]
    if graph.timeless:
        return [neighbours_at(graph, instants[0], who.direction, who.via, {entity})[entity]] * len(instants)
    return [neighbours_at(graph, at, who.direction, who.via, {entity})[entity] for at in instants]


def _cells_of(sdef: SchemaDef, label: str) -> np.ndarray:
    """The cells of this version holding ``label`` (none if it lacks it)."""
    for position, axis in enumerate(sdef.axes):
        if label in axis.labels:
            return label_cells(sdef, label, position)
    return np.empty(0, np.int64)


def _edges(session: Session, entity: uuid.UUID, who: Cohort) -> list[relation_repo.EdgeRow]:
    """The relations of ``who`` that lead from ``entity`` to its neighbours, between entities the writer may see."""
    visible = access.visible_ids(session)

    def touching(ids: set[uuid.UUID], direction: str) -> list[relation_repo.EdgeRow]:
        if visible is None:  # every entity: a statement built once
            return [relation_repo.EdgeRow(*row) for row in repo.related(session, ids, direction, who.relation)]
        return relation_repo.touching(session, ids, direction, [who.relation], None, visible)

    first = touching({entity}, who.direction)
    if not who.via:
        return first
    middle = {e.target_id if e.source_id == entity else e.source_id for e in first}
    return first + touching(middle, _BACK[who.direction]) if middle else first


def _values_at(
    session: Session, schema: str, label: str, entities: list[uuid.UUID], starts: np.ndarray
) -> dict[str, np.ndarray]:
    """The values of ``label`` of ``entities``' tensors of ``schema`` at the steps starting at ``starts``
    (datetime64, UTC), by cell name, as (step, entity) arrays, NaN where none: an entity's value is the median of
    its tensors', as a relational scan takes them. One read of the blocks holding them."""
    column = {entity: k for k, entity in enumerate(entities)}
    plans: list[tuple[Any, SchemaDef, np.ndarray, np.ndarray, np.ndarray]] = []
    for row in repo.tensors_of_entities(session, schema, entities):
        sdef = schemas.get_def(session, row.schema_name, row.schema_version)
        cells = _cells_of(sdef, label)
        if not cells.size or row.time_min is None or row.time_max is None:
            continue
        steps, exact = _steps_at(streaming.tensor_grid(row, sdef), starts)
        inside = exact & (steps >= row.time_min) & (steps <= row.time_max)
        if inside.any():
            plans.append((row, sdef, cells, steps, inside))
    numbers = {int(b) for row, _, _, steps, inside in plans for b in np.unique(steps[inside] // row.block_steps)}
    stored = repo.blocks_among(session, [row.id for row, *_ in plans], numbers)
    found: dict[str, dict[int, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for row, sdef, cells, steps, inside in plans:
        size, values = row.block_steps, np.full((starts.size, cells.size), np.nan)
        for number in np.unique(steps[inside] // size).tolist():
            if (row.id, number) in stored:
                shape, data = stored[(row.id, number)]
                block = codec.decode(shape, data, None, sdef.shape)[0].reshape(size, -1)
                here = inside & (steps // size == number)
                values[here] = block[steps[here] % size][:, cells]
        for k, cell in enumerate(cells.tolist()):
            found[streaming.cell_name(sdef, cell, label)][column[row.entity_id]].append(values[:, k])
    by_name = {}
    for name, of in found.items():
        matrix = np.full((starts.size, len(entities)), np.nan)
        for k, series in of.items():
            matrix[:, k] = series[0] if len(series) == 1 else _medians(series)
        by_name[name] = matrix
    return by_name


def _steps_at(grid: TimeGrid, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step of ``grid`` holding each of ``starts`` (datetime64, UTC), and whether it starts there: the same
    step of a tensor of another origin, not one across it."""
    if grid.zone == "UTC":
        offset = (starts - np.datetime64(grid.origin.replace(tzinfo=None), "us")).astype(np.int64)
        return offset // grid.step_us, offset % grid.step_us == 0
    steps, exact = np.zeros(starts.size, dtype=np.int64), np.zeros(starts.size, dtype=bool)
    for k, start in enumerate(starts):
        at = datetime.fromisoformat(str(start)).replace(tzinfo=UTC)
        try:
            steps[k] = grid.step_of(at)
            exact[k] = grid.timestamp(int(steps[k])) == at
        except OverflowError:  # a step next to it would fall outside the years 1..9999: no value there
            continue
    return steps, exact


def _medians(series: list[np.ndarray]) -> np.ndarray:
    """Per step, the median of the values the series have (NaN if none), as ``statistics.median`` takes it."""
    rows = np.array(series).T
    return np.array([statistics.median(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.nan for r in rows])


class _Kinds:
    """Entities' kinds, read when a flag names them."""

    def __init__(self, session: Session) -> None:
        self.session, self.known = session, dict[uuid.UUID, str]()

    def of(self, ids: list[uuid.UUID]) -> list[str | None]:
        missing = set(ids) - set(self.known)
        self.known |= {key: e.kind for key, e in repo.entities(self.session, missing).items()}
        return [self.known.get(i) for i in ids]
