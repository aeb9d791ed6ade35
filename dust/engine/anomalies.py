"""Anomaly scoring: the values of a labelled series scored as they are written, from state kept per series.

A rule names, for one label of a schema, the detector that scores its values (``dust.anomalies.base``), the
detector's settings and the score from which a value is flagged. Scoring is opt-in per label: it costs ingest
time, and a write to a schema without rules costs a dictionary lookup (the rules are read once per transaction,
and by the API only when a rule has changed since: ``_known``).

Each series (one cell of one tensor: the label, with one label of every other axis) has its detector's state
and the last time index it scored in ``anomaly_states``. A write scores its values in the write's own
transaction (a rejected write scores nothing), and carries on from that state, never from history, so scoring
after a restart is as if there had been none.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from dust.anomalies.base import Detector, Score
from dust.core.errors import Forbidden, InvalidInput, NotFound, did_you_mean
from dust.engine import access, audit, caches, schemas
from dust.engine import blocks as codec
from dust.engine.fields import Attributes, Integer, Timestamp
from dust.engine.paging import id_next_cursor, id_walk
from dust.engine.relations import TYPE, Direction
from dust.engine.schemas import NAME, SchemaDef
from dust.engine.timegrid import TimeGrid, grid_of
from dust.plugins import registry
from dust.storage.models import AnomalyRule, Tensor, utcnow
from dust.storage.repositories import anomalies as repo
from dust.storage.repositories import tensors as tensor_repo

# Where the built-in detectors flag and give a reason: a value ``flag_at`` units out scores 0.5.
DEFAULT_THRESHOLD = 0.5
MAX_SETTINGS = 4096  # characters of a rule's settings as JSON
MAX_REASON = 1000
SCAN_STEPS = 64 * 1024  # time steps a scan reads at a time
RULES_EPOCH = "anomaly_rules"  # cache_epochs: raised by every change of a rule
_RULES = "dust.anomaly_rules"  # session.info: the rules this transaction scores by
_CHANGED = "dust.anomaly_rules_changed"  # session.info: this transaction changed a rule


# --- models -----------------------------------------------------------------------------------------------


class RuleSet(BaseModel):
    """How one label of a schema is scored as it is written (``*``: every label of a step, by ``multivariate``)."""

    model_config = ConfigDict(extra="forbid")

    detector: str = Field(
        max_length=64,
        description="A detector's name, as GET /plugins lists them; or multivariate (on the label *: every label "
        "of a step) or relational (settings.relation: the relation type of the entities compared with).",
    )
    settings: Attributes = Field(default_factory=dict, description="Keyword arguments of the detector.")
    threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, le=1, allow_inf_nan=False, description="Values scoring at least this are flagged."
    )


class RulePublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_name: str = Field(serialization_alias="schema")
    label: str
    detector: str
    settings: dict[str, Any]
    threshold: float
    updated_at: datetime


class RuleList(BaseModel):
    items: list[RulePublic]


class AnomalyPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    entity_id: uuid.UUID
    tensor_id: uuid.UUID
    schema_name: str = Field(serialization_alias="schema")
    time: datetime = Field(description="The start of the time step of the value.")
    time_index: int
    label: str
    value: float
    score: float = Field(description="In [0, 1]; at least the rule's threshold.")
    detector: str
    reason: str | None
    created_at: datetime


class AnomalyList(BaseModel):
    items: list[AnomalyPublic]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


TimeRef = Integer | Timestamp  # a time index of each tensor, or a timestamp


SCANS = ("multivariate", "relational")  # detectors over many series at once, run by scans only
_JOINT_ONLY = ("relation", "direction", "via", "settings", "threshold")


class ScanRequest(BaseModel):
    """Score stored values again: one tensor's, or every tensor's of a schema (that the caller may see), with the
    label's rule; or score them with a detector over many series at once (``detector``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    detector: Literal["multivariate", "relational"] | None = Field(
        None,
        description="multivariate: all labels of a tensor at each step; relational: each entity against the "
        "entities it is related to at the same step. Default: the label's rule.",
    )
    tensor_id: uuid.UUID | None = None
    schema_name: str | None = Field(None, alias="schema", pattern=NAME)
    label: str | None = Field(None, min_length=1, max_length=128)
    start: TimeRef | None = Field(None, alias="from", description="First time scored (inclusive); default the first.")
    end: TimeRef | None = Field(None, alias="to", description="Last time scored (inclusive); default the last.")
    relation: str | None = Field(None, pattern=TYPE, description="relational: the relation type.")
    direction: Direction = Field("both", description="relational: which way the relations are followed.")
    via: bool = Field(False, description="relational: neighbours share a related entity (a patient's doctor).")
    settings: Attributes = Field(default_factory=dict, description="Keyword arguments of the detector.")
    threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, le=1, allow_inf_nan=False, description="Values scoring at least this are flagged."
    )

    @model_validator(mode="after")
    def _one_target(self) -> ScanRequest:
        given = self.model_fields_set
        if self.detector == "relational":
            return self._relational()
        if (self.tensor_id is None) == (self.schema_name is None):
            raise ValueError("give either tensor_id or schema (every tensor of it), not both or neither")
        if self.detector is None:
            if self.label is None:
                raise ValueError("give the label to scan (its rule says how), or a detector: multivariate, relational")
            _refuse(given, _JOINT_ONLY, "are for the multivariate and relational detectors")
        else:
            _refuse(given, ("label", "relation", "direction", "via"), "are not for the multivariate detector")
        return self

    def _relational(self) -> ScanRequest:
        _refuse(self.model_fields_set, ("tensor_id",), "is not for the relational detector: give schema")
        missing = [name for name in ("schema_name", "label", "relation", "start") if getattr(self, name) is None]
        if missing:
            names = ", ".join("schema" if m == "schema_name" else "from" if m == "start" else m for m in missing)
            raise ValueError(f"the relational detector needs schema, label, relation and from (missing: {names})")
        if not all(isinstance(t, datetime) for t in (self.start, self.end) if t is not None):
            raise ValueError("the relational detector takes from and to as timestamps: tensors' time indices differ")
        return self


def _refuse(given: set[str], names: tuple[str, ...], why: str) -> None:
    extra = [("from" if n == "start" else n) for n in names if n in given]
    if extra:
        raise ValueError(f"{', '.join(extra)} {why}")


class ScanResult(BaseModel):
    scored: int = Field(description="Values scored.")
    flagged: int = Field(description="Values flagged.")


# --- rules ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    label: str
    detector: str
    settings: dict[str, Any]
    threshold: float

    @cached_property
    def made_by(self) -> str:
        """A digest of the detector and settings: what a stored state is good for."""
        return hashlib.sha256(json.dumps([self.detector, self.settings], sort_keys=True).encode()).hexdigest()[:32]


def put_rule(session: Session, schema: str, label: str, data: RuleSet) -> RulePublic:
    """Score ``label`` of ``schema`` as it is written. A new detector or new settings start every series of the
    label afresh (a state is only good for the settings that made it); a new threshold keeps them."""
    sdef = schemas.get_def(session, schema)
    if data.detector in SCANS:  # over many series at once: dust.engine.anomaly_joint
        from dust.engine import anomaly_joint

        _check_size(data.settings)
        anomaly_joint.check_rule(sdef, label, data.detector, data.settings)
    else:
        _check_label(sdef, label)
        _check_settings(_detector_class(data.detector), data.detector, data.settings)
    before = repo.rule(session, sdef.name, label)
    same = before is not None and (before.detector, before.settings) == (data.detector, data.settings)
    if before is not None and not same:
        repo.drop_rule_states(session, sdef.name, label)
    row = repo.put_rule(session, sdef.name, label, data.detector, data.settings, data.threshold)
    _changed(session)
    return _rule_public(row)


def get_rules(session: Session) -> RuleList:
    return RuleList(items=[_rule_public(row) for row in repo.rules(session)])


def delete_rule(session: Session, schema: str, label: str) -> None:
    """Stop scoring ``label``: its series' states go; what was flagged stays."""
    if not repo.delete_rule(session, schema, label):
        raise NotFound(f"no anomaly rule for label '{label}' of schema '{schema}'")
    repo.drop_rule_states(session, schema, label)
    _changed(session)


def forget_schema(session: Session, schema: str) -> None:
    """A schema is deleted (it has no tensors, so no series states or flags left): its rules go with it, so the
    name can come back with other labels and no stale rule."""
    if repo.delete_schema_rules(session, schema):
        _changed(session)


def _rule_public(row: AnomalyRule) -> RulePublic:
    return RulePublic.model_validate(row, from_attributes=True)


def _check_label(sdef: SchemaDef, label: str) -> None:
    labels = [name for axis in sdef.axes for name in axis.labels]
    if label not in labels:
        raise InvalidInput(f"label '{label}' is not in schema '{sdef.name}'{did_you_mean(label, labels)}")


def _detector_class(name: str) -> type[Detector]:
    found = registry.detectors()
    if name not in found:
        raise InvalidInput(
            f"detector '{name}' does not exist{did_you_mean(name, found)}; detectors: {', '.join(sorted(found))}"
        )
    return found[name]


def _check_settings(cls: type[Detector], name: str, settings: dict[str, Any]) -> None:
    """The settings as the detector takes them: it is made with them and scores a value, since a setting is
    often only used then (a window of 0 divides by it), and its state must be JSON. Any exception counts: a
    detector may be a plugin's, and whatever it raises on these settings, the rule is what is wrong."""
    _check_size(settings)
    try:
        detector = cls(**settings)
        detector.update(0.0, 0.0)
        json.dumps(detector.state(), allow_nan=False)
    except Exception as problem:
        takes = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise InvalidInput(
            f"settings {json.dumps(settings)[:200]} are not accepted by detector '{name}' ({problem}); "
            f"it takes: {', '.join(takes)}"
        ) from None


def _check_size(settings: dict[str, Any]) -> None:
    if len(json.dumps(settings)) > MAX_SETTINGS:
        raise InvalidInput(f"settings must be at most {MAX_SETTINGS} characters as JSON")


@dataclass(frozen=True)
class _Cells:
    """Which rule scores each cell of a schema version: ``rule_of[cell]`` indexes ``rules``, -1 for none.
    A cell whose labels on several axes have rules is scored by the first axis's. ``joint``: the rules of the
    detectors over many series at once (multivariate, relational), which score a write as a whole."""

    rule_of: np.ndarray
    rules: list[Rule]
    joint: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class _Known:
    """Every rule, by schema and label, and which rule scores each cell of each schema version seen so far."""

    rules: dict[str, dict[str, Rule]]
    cells: dict[tuple[str, int], _Cells] = field(default_factory=dict)


# The rules as last read, per app (its Caches): a write takes them from here while the rules epoch
# (dust.engine.caches) is the one they were read under, so a write to a schema without rules costs no query of
# its own; the API reads the epochs for every request anyway. Sessions without caches (embedded use, the CLI)
# read the rules once per transaction.
_SHARED: weakref.WeakKeyDictionary[caches.Caches, tuple[tuple[int, int], _Known]] = weakref.WeakKeyDictionary()


def _known(session: Session) -> _Known:
    """The rules this transaction scores by: read once per transaction at most, and not at all while no rule
    has changed since another request of this app read them."""
    known: _Known | None = session.info.get(_RULES)
    if known is not None:
        return known
    app = caches.of(session)
    epoch = (0, 0) if app is None else caches.under(session, RULES_EPOCH)  # first: a change after it makes it stale
    shared = None if app is None else _SHARED.get(app)
    if shared is not None and shared[0] == epoch and not session.info.get(_CHANGED):  # not after its own change
        known = shared[1]
    else:
        known = _Known(_read_rules(session))
        if app is not None and not session.info.get(_CHANGED):  # its changes may yet roll back
            _SHARED[app] = (epoch, known)
    session.info[_RULES] = known
    return known


def _read_rules(session: Session) -> dict[str, dict[str, Rule]]:
    found: dict[str, dict[str, Rule]] = {}
    for schema, label, detector, settings, threshold in repo.rule_rows(session):
        found.setdefault(schema, {})[label] = Rule(label, detector, settings, threshold)
    return found


def _rules(session: Session) -> dict[str, dict[str, Rule]]:
    return _known(session).rules


def rules_of(session: Session, schema: str) -> dict[str, Rule]:
    """The rules of ``schema``, by label, as this transaction scores by them."""
    return _rules(session).get(schema, {})


def _changed(session: Session) -> None:
    """A rule changed in this transaction: every process reads the rules again once it commits."""
    caches.changed(session, RULES_EPOCH)
    session.info[_CHANGED] = True
    session.info.pop(_RULES, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_rules(session: Session, transaction: SessionTransaction) -> None:
    """The next transaction takes the rules afresh; a rolled-back savepoint may have changed them."""
    session.info.pop(_RULES, None)
    if transaction.parent is None:
        session.info.pop(_CHANGED, None)


def _cells(session: Session, sdef: SchemaDef) -> _Cells:
    known = _known(session)
    key = (sdef.name, sdef.version)
    if key not in known.cells:  # two threads may both work it out: the same either way
        rules = known.rules.get(sdef.name, {})
        width = math.prod(sdef.shape)
        coords = np.unravel_index(np.arange(width), sdef.shape)
        rule_of = np.full(width, -1, dtype=np.int64)
        ordered: list[Rule] = []
        for axis, along in zip(sdef.axes, coords, strict=True):
            for index, label in enumerate(axis.labels):
                if label in rules and rules[label].detector not in SCANS:
                    rule_of[(along == index) & (rule_of < 0)] = len(ordered)
                    ordered.append(rules[label])
        joint = [rule for rule in rules.values() if rule.detector in SCANS]
        known.cells[key] = _Cells(rule_of, ordered, joint)
    return known.cells[key]


# --- streaming --------------------------------------------------------------------------------------------


class Written(Protocol):
    """One tensor's part of a write: (time, flat cell, value) triples, one per (time, cell), in time order."""

    row: Tensor
    sdef: SchemaDef
    times: np.ndarray
    cells: np.ndarray
    numbers: np.ndarray


def score_written(session: Session, writes: Sequence[Written]) -> list[dict[str, Any]]:
    """Score the values a batch writes whose label has a rule, in time order, each series from its stored state,
    and flag those scoring at least the rule's threshold; called by the write, in its transaction. Returns the
    values flagged (for trigger rules on anomalies).

    Only values after the last time a series scored are scored: older ones (a backfill, a correction) would
    have to go back into a state that has moved on. ``scan`` scores those, from the stored history. The
    multivariate and relational rules score the write as a whole: ``dust.engine.anomaly_joint``.
    """
    rules = _rules(session)
    flagged: list[dict[str, Any]] = []
    for write in writes:
        if write.sdef.name in rules and write.times.size:
            cells = _cells(session, write.sdef)
            flagged += _score_write(session, write, cells)
            if cells.joint:
                from dust.engine import anomaly_joint  # it builds on this module's and the scans' flagging

                flagged += anomaly_joint.score(session, write, cells.joint)  # type: ignore[arg-type]
    return flagged


def _score_write(session: Session, write: Written, cells: _Cells) -> list[dict[str, Any]]:
    ruled = cells.rule_of[write.cells] >= 0
    if not ruled.any():
        return []
    times, flat, numbers = write.times[ruled], write.cells[ruled], write.numbers[ruled]
    series = np.unique(flat).tolist()
    stored = repo.states(session, write.row.id, series)
    grid = tensor_grid(write.row, write.sdef)
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    for cell in series:
        rule = cells.rules[cells.rule_of[cell]]
        before = stored.get((cell, rule.detector))
        usable = before if before is not None and before.rule == rule.made_by else None  # else start afresh
        at = flat == cell
        fresh = times[at] > (-math.inf if usable is None else usable.last_time)
        if not fresh.any():
            continue
        detector = _detector(rule, None if usable is None else usable.state)
        cell_times, cell_numbers = times[at][fresh], numbers[at][fresh]
        flagged += _run(detector, rule, _Series(write.row, write.sdef, cell, grid), cell_times, cell_numbers)
        state = _state_row(write.row.id, cell, rule, detector, int(cell_times[-1]))
        (new if before is None else changed).append(state)
    repo.save_states(session, new, changed)
    repo.add(session, flagged)
    return flagged


def _detector(rule: Rule, state: dict[str, Any] | None) -> Detector:
    cls = _detector_class(rule.detector)
    return cls(**rule.settings) if state is None else cls.restore(state, **rule.settings)


def _state_row(tensor_id: uuid.UUID, cell: int, rule: Rule, detector: Detector, last: int) -> dict[str, Any]:
    return {
        "tensor_id": tensor_id,
        "cell": cell,
        "detector": rule.detector,
        "label": rule.label,
        "rule": rule.made_by,
        "state": detector.state(),
        "last_time": last,
    }


@dataclass(frozen=True)
class _Series:
    """One cell of one tensor, and the tensor's time grid."""

    row: Tensor
    sdef: SchemaDef
    cell: int
    grid: TimeGrid


def _run(
    detector: Detector, rule: Rule, series: _Series, times: np.ndarray, numbers: np.ndarray
) -> list[dict[str, Any]]:
    """Feed the detector one series' values in time order; the rows of those it flags."""
    seconds = series.grid.timestamps(times).astype("datetime64[us]").astype(np.int64) / 1e6
    flagged = []
    now = utcnow()
    for t, when, value in zip(times.tolist(), seconds.tolist(), numbers.tolist(), strict=True):
        score = detector.update(when, value)
        if score.score >= rule.threshold:
            flagged.append(_flag(series, rule, t, value, score, now))
    return flagged


def _flag(series: _Series, rule: Rule, t: int, value: float, score: Score, now: datetime) -> dict[str, Any]:
    reason = score.reason or f"{{label}} {value:.4g} scored {score.score:.2f} by {rule.detector}"
    return {
        "tensor_id": series.row.id,
        "entity_id": series.row.entity_id,
        "schema_name": series.sdef.name,
        "label": rule.label,
        "cell": series.cell,
        "time_index": t,
        "at": series.grid.timestamp(t),
        "value": value,
        "score": float(score.score),
        "detector": rule.detector,
        # {entity} is filled in as each reader may see it (a pseudonym for de-identified readers)
        "reason": reason.replace("{label}", cell_name(series.sdef, series.cell, rule.label))[:MAX_REASON],
        "created_at": now,
    }


def cell_name(sdef: SchemaDef, cell: int, label: str) -> str:
    """``heart_rate``, or on a schema of several axes ``heart_rate (position=sitting)``."""
    coords = np.unravel_index(cell, sdef.shape)
    others = [
        f"{a.name}={a.labels[int(i)]}" for a, i in zip(sdef.axes, coords, strict=True) if a.labels[int(i)] != label
    ]
    return f"{label} ({', '.join(others)})" if others else label


def renumber(session: Session, tensor_id: uuid.UUID, before: SchemaDef, after: SchemaDef) -> None:
    """A tensor moves to a later schema version: the flat cells of its scored series and flagged values as the
    new version numbers them. Labels are only appended, so only labels added to an axis after the first move
    cells (``heart_rate × sit`` is cell 1 of 2 × 2, cell 2 of 2 × 3), and every cell moves up, never onto
    one not yet moved when they are moved highest first."""
    if before.shape[1:] == after.shape[1:]:
        return
    old = [cell for cell in repo.cells_of(session, tensor_id) if cell >= 0]  # -1: a multivariate state, by name
    moved = np.ravel_multi_index(np.unravel_index(np.array(old, dtype=np.int64), before.shape), after.shape)
    repo.renumber(session, tensor_id, sorted(zip(old, moved.tolist(), strict=True), reverse=True))


def tensor_grid(row: Tensor, sdef: SchemaDef) -> TimeGrid:
    return grid_of(row.origin, sdef.time.seconds, sdef.time.zone)


# --- scans ------------------------------------------------------------------------------------------------


def scan(session: Session, request: ScanRequest) -> ScanResult:
    """Score the stored values of ``label`` from ``start`` to ``end`` with a fresh detector per series, in
    place of what was flagged there; a scan that reaches a series' last recorded time also replaces its
    stored state, so streaming carries on from it. The tensors are locked meanwhile, as by a write.

    With ``detector`` (multivariate, relational), a scan of many series at once: ``dust.engine.anomaly_scans``."""
    if request.detector is not None:
        from dust.engine import anomaly_scans  # it builds on this module's reading and flagging

        return anomaly_scans.scan(session, request)
    assert request.label is not None  # ScanRequest requires it without a detector
    rows = scanned_tensors(session, request)
    schema = request.schema_name or next(iter(rows.values())).schema_name  # else the one tensor asked for
    rule = _rule_of(session, schema, request.label)
    if rule.detector in SCANS:
        raise InvalidInput(
            f"the rule of label '{request.label}' of schema '{schema}' is {rule.detector}: scan with "
            f"detector '{rule.detector}' and its settings"
        )
    scored = flagged = 0
    for row in rows.values():
        sdef = schemas.get_def(session, row.schema_name, row.schema_version)
        cells = _cells(session, sdef)
        ruled = cells.rule_of == (cells.rules.index(rule) if rule in cells.rules else -2)  # -2: none
        window = scan_window(row, sdef, request)
        if window is not None and ruled.any():
            counts = _scan_series(session, row, sdef, rule, np.flatnonzero(ruled), window)
            scored, flagged = scored + counts[0], flagged + counts[1]
    audit.record_each(session, "update", "anomaly", [(row.id, [row.entity_id]) for row in rows.values()])
    return ScanResult(scored=scored, flagged=flagged)


def scanned_tensors(session: Session, request: ScanRequest) -> dict[uuid.UUID, Tensor]:
    """The tensors a scan scores — the one asked for, or each of the schema the caller may see — locked, as by a
    write; 404 for an unknown schema or a tensor one may not see."""
    visible = access.visible_ids(session)
    if request.tensor_id is not None:
        ids = [request.tensor_id]
    else:
        assert request.schema_name is not None  # ScanRequest holds one or the other
        schemas.get_def(session, request.schema_name)  # 404, with did-you-mean, for an unknown schema
        ids = repo.tensors_of_schema(session, request.schema_name, visible)
    rows = tensor_repo.lock(session, ids, within=visible)
    if request.tensor_id is not None and request.tensor_id not in rows:
        raise NotFound(f"tensor {request.tensor_id} does not exist")
    return rows


def _rule_of(session: Session, schema: str, label: str) -> Rule:
    rule = _rules(session).get(schema, {}).get(label)
    if rule is None:
        _check_label(schemas.get_def(session, schema), label)
        raise InvalidInput(
            f"label '{label}' of schema '{schema}' has no anomaly rule; PUT /anomalies/rules/{schema}/{label} first"
        )
    return rule


def _scan_series(
    session: Session, row: Tensor, sdef: SchemaDef, rule: Rule, cells: np.ndarray, window: tuple[int, int]
) -> tuple[int, int]:
    """Score ``cells`` of one tensor over ``window``, ``SCAN_STEPS`` time steps at a time (memory follows the
    chunk, not the series); (values scored, values flagged)."""
    first, last = window
    repo.drop(session, row.id, cells.tolist(), first, last, keep=SCANS)  # theirs are replaced by their scans
    grid = tensor_grid(row, sdef)
    detectors = [_detector(rule, None) for _ in cells.tolist()]
    scored_up_to: list[int | None] = [None] * cells.size
    flagged: list[dict[str, Any]] = []
    scored = 0
    for start in range(first, last + 1, SCAN_STEPS):
        values = stored_values(session, row, sdef, cells, start, min(start + SCAN_STEPS - 1, last))
        for k, cell in enumerate(cells.tolist()):
            recorded = np.flatnonzero(~np.isnan(values[:, k]))
            series = _Series(row, sdef, cell, grid)
            flagged += _run(detectors[k], rule, series, recorded + start, values[recorded, k])
            scored += recorded.size
            if recorded.size:
                scored_up_to[k] = int(recorded[-1]) + start
    if last >= (row.time_max or 0):  # the states have seen the whole series: streaming may carry on
        repo.drop_states(session, row.id, cells.tolist())
        states = zip(cells.tolist(), detectors, scored_up_to, strict=True)
        repo.save_states(session, [_state_row(row.id, c, rule, d, t) for c, d, t in states if t is not None], [])
    repo.add(session, flagged)
    return scored, len(flagged)


def scan_window(row: Tensor, sdef: SchemaDef, request: ScanRequest) -> tuple[int, int] | None:
    """The recorded time range within ``request``'s from..to; None if they do not meet."""
    if row.time_min is None or row.time_max is None:
        return None
    grid = tensor_grid(row, sdef)
    first = row.time_min if request.start is None else max(grid.index(request.start, "from"), row.time_min)
    last = row.time_max if request.end is None else min(grid.index(request.end, "to"), row.time_max)
    return (first, last) if first <= last else None


def stored_values(
    session: Session, row: Tensor, sdef: SchemaDef, cells: np.ndarray, first: int, last: int
) -> np.ndarray:
    """The stored values of ``cells`` at times ``first..last``, as (time, cell); NaN where none."""
    block = row.block_steps
    b0, b1 = first // block, last // block
    values = np.full(((b1 - b0 + 1) * block, cells.size), np.nan)
    for number, shape, data, _ in tensor_repo.blocks(session, row.id, b0, b1):
        decoded, _ = codec.decode(shape, data, None, sdef.shape)
        at = (number - b0) * block
        values[at : at + block] = decoded.reshape(block, -1)[:, cells]
    return values[first - b0 * block : last - b0 * block + 1]


# --- listing ----------------------------------------------------------------------------------------------


def list_anomalies(
    session: Session,
    *,
    entity_id: uuid.UUID | None = None,
    tensor_id: uuid.UUID | None = None,
    schema: str | None = None,
    label: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    min_score: float | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AnomalyList:
    """Flagged values, newest first, of the entities the principal may see. De-identified readers get none of
    a sensitive schema (asking for one is 403, as reading its tensors is); entity names in reasons are as the
    reader may see them."""
    walk = id_walk(cursor)
    who = access.principal(session)
    hidden = repo.sensitive_schemas(session) if who is not None and who.deidentified else set()
    visible = access.visible_ids(session)
    if entity_id is not None:
        access.require_visible(session, entity_id)
    if tensor_id is not None:
        tensor = tensor_repo.get(session, tensor_id, within=visible)
        if tensor is None:
            raise NotFound(f"tensor {tensor_id} does not exist")
        _readable(tensor.schema_name, hidden)
    if schema is not None:
        _readable(schema, hidden)
    filters = repo.Filters(entity_id, tensor_id, schema, label, start, end, min_score)
    rows, in_progress = repo.page(session, filters, walk, limit + 1, visible, hidden)
    shown = rows[:limit]
    names = {
        key: access.present(session, e)["name"]
        for key, e in repo.entities(session, {r.entity_id for r in shown}).items()
    }
    audit.record_each(session, "read", "anomaly", [(r.id, [r.entity_id]) for r in shown])
    items = [
        AnomalyPublic(
            id=r.id,
            entity_id=r.entity_id,
            tensor_id=r.tensor_id,
            schema_name=r.schema_name,
            time=r.at,
            time_index=r.time_index,
            label=r.label,
            value=r.value,
            score=r.score,
            detector=r.detector,
            reason=None if r.reason is None else r.reason.replace("{entity}", names.get(r.entity_id, "?")),
            created_at=r.created_at,
        )
        for r in shown
    ]
    return AnomalyList(items=items, next_cursor=id_next_cursor(walk, rows, in_progress, limit))


def _readable(schema: str, hidden: set[str]) -> None:
    if schema in hidden:
        raise Forbidden(f"schema '{schema}' is sensitive: de-identified readers get aggregates only")
