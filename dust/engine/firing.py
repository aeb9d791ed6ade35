"""Firing trigger rules inside the transaction of the write that meets them.

The write path calls ``on_values`` with the values a batch wrote (and the anomalies it flagged), and
``on_attributes`` when an entity's attributes change. A rule that fires is recorded (``trigger_firings``), then
its actions run, as the process (the rule was made by an admin; the writer may not see the doctors it alerts):
alerts, values written into tensors of reached entities, attributes set, relation weights changed, webhooks put
in the outbox, and plugins' actions (``dust.engine.actions``). Everything commits or rolls back with the write, so
a rejected write raises nothing.

An action that writes may fire rules in turn (a cascade). The firings in progress ride on the session as the
cause chain: a rule fires at most once per entity in one chain (so two rules cannot ping-pong), and a chain is
at most ``Settings.trigger_max_depth`` firings deep.
"""

from __future__ import annotations

import operator
import string
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from dust.core.config import Settings
from dust.core.logging import get_logger
from dust.engine import access, actions, anomalies, schemas, triggers, webhooks, weights
from dust.engine.schemas import SchemaDef
from dust.engine.triggers import (
    AlertAction,
    AttributeAction,
    Follow,
    PluginAction,
    Rule,
    Targets,
    WebhookAction,
    WeightAction,
    When,
    WriteAction,
)
from dust.storage.models import Entity, Tensor, utcnow
from dust.storage.repositories import alerts as alert_repo
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import tensors as tensor_repo
from dust.storage.repositories import triggers as repo

log = get_logger("dust.triggers")
MAX_DEPTH = "dust.trigger_max_depth"  # session.info (from the sessionmaker): Settings.trigger_max_depth
_CHAIN = "dust.trigger_chain"  # session.info: the firings whose actions are running, first first
_KINDS = "dust.trigger_kinds"  # session.info: entity kinds looked up in this transaction
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
DEFAULT_MESSAGE = "{rule}: {label} {value} on {entity.name}"  # and the unit after the value, if it has one
_KEPT = ("entity.name", "target.name")  # filled as each reader may see the entity (dust.engine.alerts)


@dataclass(frozen=True)
class Event:
    """What a rule fired on: a value (with its score, for anomalies), or an attribute's new value."""

    entity_id: uuid.UUID
    tensor: Tensor | None = None
    sdef: SchemaDef | None = None
    label: str | None = None
    time_index: int | None = None
    at: datetime | None = None
    value: Any = None
    score: float | None = None

    @property
    def unit(self) -> str:
        if self.sdef is None or self.label is None:
            return ""
        return next((a.units.get(self.label, "") for a in self.sdef.axes if self.label in a.labels), "")

    @property
    def number(self) -> float | None:
        ok = isinstance(self.value, int | float) and not isinstance(self.value, bool)
        return float(self.value) if ok else None


def bound(factory: sessionmaker[Session], settings: Settings) -> None:
    """Sessions made by ``factory`` stop trigger cascades at ``settings.trigger_max_depth``."""
    factory.configure(info={**factory.kw.get("info", {}), MAX_DEPTH: settings.trigger_max_depth})


# --- what the write path calls ------------------------------------------------------------------------------


def on_values(session: Session, writes: Sequence[Written], flagged: Sequence[dict[str, Any]]) -> None:
    """Fire the rules on the values ``writes`` wrote and on the anomalies they raised; a schema without rules
    costs a dictionary lookup."""
    index = triggers.index(session)
    if index.empty:
        return
    for write in writes:
        labels = index.values.get(write.sdef.name)
        if labels and write.times.size:
            batch = _Batch(session, write, index.back[write.sdef.name])
            for label, rules in labels.items():
                _label_rules(session, rules, batch, index.label_cells(write.sdef, label))
    by_tensor = {w.row.id: w for w in writes}
    for row in flagged:
        for rule in index.anomalies.get(row["schema_name"], []):
            _anomaly_rule(session, rule, row, by_tensor[row["tensor_id"]])


def on_attributes(session: Session, entity: Entity, before: dict[str, Any]) -> None:
    """Fire the attribute rules of ``entity``'s kind whose attribute changed (``before``: as it was)."""
    index = triggers.index(session)
    rules = index.attributes.get(entity.kind, []) + index.attributes.get(None, [])
    missing = object()
    for rule in rules:
        name = str(rule.when.attribute)
        old, new = before.get(name, missing), entity.attributes.get(name, missing)
        if old == new or new is missing:
            continue
        if rule.when.op is not None and not _compare(rule.when.op, new, rule.when.value):
            continue
        _fire(session, rule, Event(entity.id, value=new, label=name))


# --- conditions ---------------------------------------------------------------------------------------------


class Written(anomalies.Written, Protocol):
    """A written tensor's part of a batch, with its touched blocks as merged (``dust.engine.tensors._Write``)."""

    merged: dict[int, np.ndarray]


class _Batch:
    """One tensor's part of a write as the rules on its schema test it, and the values around it (this write's
    included) gathered once for all of them when the first rule needs them."""

    def __init__(self, session: Session, write: Written, back: int) -> None:
        self.session, self.write, self.back = session, write, back
        self._window: tuple[np.ndarray, int, np.ndarray] | None = None

    def window(self, cells: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """The values of the written cells, as (time, series), from ``back`` steps before the first time written to
        the last; the first time index; and the column of each of ``cells``."""
        if self._window is None:
            series = np.unique(self.write.cells)
            first = int(self.write.times.min()) - self.back
            self._window = (self._gather(series, first, int(self.write.times.max())), first, series)
        values, first, series = self._window
        return values, first, np.searchsorted(series, cells)

    def _gather(self, series: np.ndarray, first: int, last: int) -> np.ndarray:
        """From the blocks the write merged, and from storage only for blocks it did not touch."""
        write = self.write
        block = write.row.block_steps
        b0, b1 = first // block, last // block
        values = np.full(((b1 - b0 + 1) * block, series.size), np.nan)
        row = write.row  # blocks outside its recorded range hold nothing
        kept = (
            range(0)
            if row.time_min is None or row.time_max is None
            else range(row.time_min // block, row.time_max // block + 1)
        )
        missing = [b for b in range(b0, b1 + 1) if b in kept and b not in write.merged]
        if missing:
            start, stop = min(missing) * block, (max(missing) + 1) * block - 1
            stored = anomalies.stored_values(self.session, write.row, write.sdef, series, start, stop)
            values[start - b0 * block : stop - b0 * block + 1] = stored
        for number, merged in write.merged.items():
            if b0 <= number <= b1:
                values[(number - b0) * block : (number - b0 + 1) * block] = merged[:, series]
        return values[first - b0 * block : last - b0 * block + 1]


def _label_rules(session: Session, rules: list[Rule], batch: _Batch, label_cells: np.ndarray) -> None:
    """Fire the rules on one label of the batch's schema. Most writes meet no rule: the least and the greatest
    value written rule most rules out before any rule looks at the values one by one."""
    write = batch.write
    mine = label_cells[write.cells]
    if not mine.any():
        return
    times, cells, numbers = write.times[mine], write.cells[mine], write.numbers[mine]
    low, high = float(numbers.min()), float(numbers.max())
    for rule in rules:
        if not _may_meet(rule.when, low, high):
            continue
        hits = _met(rule.when, batch, times, cells, numbers)
        if hits.any() and _of_kind(session, write.row.entity_id, rule.when.kind):
            grid = anomalies.tensor_grid(write.row, write.sdef)
            for t, value in zip(times[hits].tolist(), numbers[hits].tolist(), strict=True):
                event = Event(write.row.entity_id, write.row, write.sdef, rule.when.label, t, grid.timestamp(t), value)
                _fire(session, rule, event)


def _may_meet(when: When, low: float, high: float) -> bool:
    """False if no value in low..high can meet ``when``'s test of the value itself; True if one may, or if the
    test is of changes (which the values alone do not tell)."""
    if when.between is not None:
        return high >= when.between[0] and low <= when.between[1]
    if when.outside is not None:
        return low < when.outside[0] or high > when.outside[1]
    if when.op is None or when.op in ("==", "!="):
        return True
    return bool(_OPS[when.op](high if when.op[0] == ">" else low, when.threshold))


def _anomaly_rule(session: Session, rule: Rule, flagged: dict[str, Any], write: anomalies.Written) -> None:
    when = rule.when
    if flagged["label"] != when.label or flagged["score"] < (when.min_score or 0):
        return
    if not _of_kind(session, flagged["entity_id"], when.kind):
        return
    event = Event(
        flagged["entity_id"], write.row, write.sdef, when.label, flagged["time_index"], flagged["at"],
        flagged["value"], flagged["score"],
    )  # fmt: skip
    _fire(session, rule, event)


def _met(when: When, batch: _Batch, times: np.ndarray, cells: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Which of the written (time, cell, value) triples meet ``when``."""
    if when.between is not None:
        return (numbers >= when.between[0]) & (numbers <= when.between[1])
    if when.outside is not None:
        return (numbers < when.outside[0]) | (numbers > when.outside[1])
    if when.change is not None or when.rate is not None:
        return _over_steps(when, batch, times, cells, numbers)
    assert when.op is not None
    meets = np.asarray(_OPS[when.op](numbers, when.threshold), dtype=bool)
    if when.count is None or not meets.any():
        return meets
    meets[meets] = _counted(when, batch, times[meets], cells[meets])
    return meets


def _counted(when: When, batch: _Batch, times: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """For each (time, cell): at least ``at_least`` of the last ``of`` steps up to it meet op/value."""
    assert when.count is not None and when.op is not None
    values, first, column = batch.window(cells)
    steps = (times - first)[:, None] - np.arange(when.count.of)[None, :]  # each one's last `of` steps
    recent = values[steps, column[:, None]]
    with np.errstate(invalid="ignore"):
        meeting = _OPS[when.op](recent, when.threshold) & ~np.isnan(recent)
    return np.asarray(meeting.sum(axis=1) >= when.count.at_least)


def _over_steps(when: When, batch: _Batch, times: np.ndarray, cells: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """``change``: the value minus the one ``steps`` before; ``rate``: the change per step since the latest
    earlier value within ``steps``. No earlier value: not met."""
    test = when.change or when.rate
    assert test is not None
    values, first, column = batch.window(cells)
    at = times - first
    if when.change is not None:
        delta = numbers - values[at - test.steps, column]
    else:
        recorded = np.where(~np.isnan(values), np.arange(values.shape[0])[:, None], -1)
        latest = np.maximum.accumulate(recorded, axis=0)  # the latest recorded row at or before each row
        before = latest[at - 1, column]
        near = (before >= 0) & (at - before <= test.steps)
        previous = np.where(near, values[np.maximum(before, 0), column], np.nan)
        delta = (numbers - previous) / np.where(near, at - before, 1)
    with np.errstate(invalid="ignore"):
        return np.asarray(_OPS[test.op](delta, test.value) & ~np.isnan(delta), dtype=bool)


def _of_kind(session: Session, entity_id: uuid.UUID, kind: str | None) -> bool:
    return kind is None or _kind(session, entity_id) == kind


def _kind(session: Session, entity_id: uuid.UUID) -> str:
    """The entity's kind, looked up once per transaction."""
    kinds: dict[uuid.UUID, str] = session.info.setdefault(_KINDS, {})
    if entity_id not in kinds:
        row = entity_repo.get(session, entity_id)
        kinds[entity_id] = "" if row is None else row.kind
    return kinds[entity_id]


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("==", "!="):
        return bool(_OPS[op](left, right))
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right))
    return numeric and bool(_OPS[op](left, right))


# --- firing -------------------------------------------------------------------------------------------------


def _fire(session: Session, rule: Rule, event: Event) -> None:
    chain: list[dict[str, Any]] = session.info.setdefault(_CHAIN, [])
    if any(link["trigger_id"] == str(rule.id) and link["entity_id"] == str(event.entity_id) for link in chain):
        log.info("trigger loop stopped", trigger=rule.name, entity=str(event.entity_id), depth=len(chain))
        return
    if len(chain) > session.info.get(MAX_DEPTH, Settings.model_fields["trigger_max_depth"].default):
        log.warning("trigger cascade stopped at its depth bound", trigger=rule.name, depth=len(chain))
        return
    with _as_process(session):
        # Whom each action acts on is settled first: the firing is recorded with what it does, in one statement.
        plan = [(action, *_targets_of(session, rule, event, action)) for action in rule.then]
        firing_id = repo.add_firing(session, _firing_row(rule, event, chain, _effects(plan)))
        chain.append({"firing_id": firing_id, "trigger_id": str(rule.id), "trigger": rule.name,
                      "entity_id": str(event.entity_id)})  # fmt: skip
        try:
            for action, targets, first_hop in plan:
                _act(session, rule, event, firing_id, action, targets, first_hop)
        finally:
            chain.pop()


def _firing_row(rule: Rule, event: Event, chain: list[dict[str, Any]], effects: dict[str, int]) -> dict[str, Any]:
    return {
        "trigger_id": rule.id,
        "trigger_version": rule.version,
        "entity_id": event.entity_id,
        "tensor_id": None if event.tensor is None else event.tensor.id,
        "schema_name": None if event.sdef is None else event.sdef.name,
        "label": event.label,
        "time_index": event.time_index,
        "value": event.number,
        "depth": len(chain),
        "cause": [dict(link) for link in chain],
        "effects": effects,
        "created_at": utcnow(),
    }


@contextmanager
def _as_process(session: Session) -> Iterator[None]:
    """Actions run with the rule's authority, not the writer's."""
    who = access.principal(session)
    access.act_as(session, None)
    try:
        yield
    finally:
        access.act_as(session, who)


Plan = tuple[Any, list[uuid.UUID], list[uuid.UUID]]  # an action, the entities it acts on, the relations it walked


def _targets_of(session: Session, rule: Rule, event: Event, action: Any) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    if isinstance(action, WebhookAction):
        return [], []  # one call per firing, about the entity that fired
    if isinstance(action, PluginAction) and action.unavailable is not None:
        return [], []  # its plugin is gone: skipped (_act says so)
    if isinstance(action, WriteAction) and not isinstance(_written(action, event), float | int):
        return [], []  # the "value" of an attribute rule that is not a number: nothing to write
    return _targets(session, event.entity_id, action if action.follow else rule.targets)


def _effects(plan: list[Plan]) -> dict[str, int]:
    """What the firing does: how many alerts, writes, attributes, weights and webhooks."""
    effects: dict[str, int] = {}
    for action, targets, first_hop in plan:
        done = (
            1 if isinstance(action, WebhookAction) else len(first_hop if isinstance(action, WeightAction) else targets)
        )
        key = action.action if isinstance(action, PluginAction) else action.action + "s"  # a plugin's: its name
        effects[key] = effects.get(key, 0) + done
    return effects


def _act(
    session: Session,
    rule: Rule,
    event: Event,
    firing_id: int,
    action: Any,
    targets: list[uuid.UUID],
    first_hop: list[uuid.UUID],
) -> None:
    if isinstance(action, WebhookAction):
        payload = _payload(session, rule, event, firing_id)
        webhooks.enqueue(
            session, trigger_id=rule.id, firing_id=firing_id, url=action.url, payload=payload, secret=rule.secret
        )
    elif isinstance(action, PluginAction):
        _plugin(session, rule, event, firing_id, action, targets)
    else:
        _ACTIONS[type(action)](session, rule, event, firing_id, action, targets, first_hop)


def _targets(
    session: Session, entity_id: uuid.UUID, targets: Targets | None
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The entities an action acts on, and the relations walked in the first hop (for weight actions)."""
    if targets is None or targets.follow is None:
        return [entity_id], []
    reached, first_hop = _reach(session, entity_id, targets.follow)
    return ([entity_id] if targets.includes_self else []) + reached, first_hop


def _reach(session: Session, entity_id: uuid.UUID, follow: Follow) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    seen = {entity_id}
    reached: list[uuid.UUID] = []
    first_hop: list[uuid.UUID] = []
    frontier = {entity_id}
    for hop in range(follow.depth):
        edges = weights.live(session, relation_repo.touching(session, frontier, follow.direction, follow.types, None))
        found = set()
        for row, weight in edges:
            if follow.min_weight is not None and weight < follow.min_weight:
                continue
            if hop == 0:
                first_hop.append(row.id)
            for end in (row.source_id, row.target_id):
                if end not in seen:
                    seen.add(end)
                    found.add(end)
        reached += sorted(found)
        frontier = found
        if not frontier:
            break
    return reached, first_hop


# --- actions ------------------------------------------------------------------------------------------------


def _alert(
    session: Session, rule: Rule, event: Event, firing_id: int, action: Any, targets: list[uuid.UUID], _: Any
) -> None:
    assert isinstance(action, AlertAction)
    template = action.message or ("{rule}: {label} {value} {unit} on {entity.name}" if event.unit else DEFAULT_MESSAGE)
    fields = _fields(session, rule, event, action.severity)
    now = utcnow()
    rows = [
        {
            "entity_id": target,
            "subject_id": event.entity_id,
            "trigger_id": rule.id,
            "firing_id": firing_id,
            "severity": action.severity,
            "message": render(template, {**fields, "target.id": str(target)}),
            "state": "open",
            "schema_name": None if event.sdef is None else event.sdef.name,
            "label": event.label,
            "value": event.number,
            "time_index": event.time_index,
            "at": event.at,
            "created_at": now,
            "updated_at": now,
        }
        for target in targets
    ]
    alert_repo.add(session, rows)


def _write(
    session: Session, rule: Rule, event: Event, firing_id: int, action: Any, targets: list[uuid.UUID], _: Any
) -> None:
    from dust.engine import tensors  # here: the write path calls this module

    assert isinstance(action, WriteAction)
    sdef = schemas.get_def(session, action.schema_name)
    when = event.at or datetime.now(UTC)
    number = _written(action, event)
    assert isinstance(number, float | int)  # else no targets were planned (_targets_of)
    for target in targets:
        tensor_id = _tensor_of(session, target, sdef, None if event.tensor is None else event.tensor.origin)
        cell = {**action.where, _axis_of(sdef, action.label): action.label}
        here = number + _current(session, tensor_id, cell, when) if action.mode == "add" else number
        tensors.write_values(session, tensor_id, [{"time": when.isoformat(), **cell, "value": here}])


def _written(action: WriteAction, event: Event) -> float | None:
    """The number a write action writes: its own, or the firing's value or score."""
    if action.value == "value":
        return event.number
    return event.score if action.value == "score" else float(action.value)


def _tensor_of(session: Session, entity_id: uuid.UUID, sdef: SchemaDef, origin: datetime | None) -> uuid.UUID:
    from dust.engine import tensors

    for row in tensor_repo.of_entity(session, entity_id, sdef.name):
        return row.id
    # Made on the grid of the tensor that fired, if any: "day 3" of a patient is then day 3 of the alerts.
    made = tensors.TensorCreate(entity_id=entity_id, schema_name=sdef.name, origin=origin)
    return tensors.create(session, made).id


def _axis_of(sdef: SchemaDef, label: str) -> str:
    return next(axis.name for axis in sdef.axes if label in axis.labels)


def _current(session: Session, tensor_id: uuid.UUID, cell: dict[str, str], when: datetime) -> float:
    """The value recorded in ``cell`` at ``when``; 0 if none."""
    row = tensor_repo.get(session, tensor_id)
    assert row is not None
    sdef = schemas.get_def(session, row.schema_name, row.schema_version)
    t = anomalies.tensor_grid(row, sdef).index(when)
    flat = np.ravel_multi_index(tuple(a.labels.index(cell[a.name]) for a in sdef.axes), sdef.shape)
    stored = anomalies.stored_values(session, row, sdef, np.array([flat]), t, t)
    return 0.0 if np.isnan(stored[0, 0]) else float(stored[0, 0])


def _attribute(
    session: Session, rule: Rule, event: Event, firing_id: int, action: Any, targets: list[uuid.UUID], _: Any
) -> None:
    from dust.engine import entities

    assert isinstance(action, AttributeAction)
    for target in targets:
        entities.update(session, target, entities.EntityUpdate(attributes=action.set))


def _weight(
    session: Session, rule: Rule, event: Event, firing_id: int, action: Any, _: Any, first_hop: list[uuid.UUID]
) -> None:
    assert isinstance(action, WeightAction)
    for relation_id in first_hop:
        weights.adjust(session, relation_id, add=action.add, multiply=action.multiply, set=action.value)


def _plugin(
    session: Session, rule: Rule, event: Event, firing_id: int, action: PluginAction, targets: list[uuid.UUID]
) -> None:
    """A plugin's action (``dust.engine.actions``), with the firing as it sees it."""
    from dust.plugins import registry

    found = registry.trigger_actions().get(action.action)
    if found is None or action.unavailable is not None:
        why = action.unavailable or "its plugin is not installed"
        log.warning("trigger action skipped", action=action.action, trigger=rule.name, reason=why)
        return
    firing = actions.Firing(
        session, firing_id, rule.id, rule.name, rule.version, event.entity_id, targets,
        None if event.sdef is None else event.sdef.name, event.label, event.value, event.unit, event.score,
        event.at, event.time_index,
    )  # fmt: skip
    actions.perform(found, action.settings, firing)


_ACTIONS: dict[type, Callable[..., None]] = {
    AlertAction: _alert,
    WriteAction: _write,
    AttributeAction: _attribute,
    WeightAction: _weight,
}


# --- messages -----------------------------------------------------------------------------------------------


def _fields(session: Session, rule: Rule, event: Event, severity: str) -> dict[str, Any]:
    def kind() -> str:  # looked up only if a template asks for it
        return _kind(session, event.entity_id)

    at, index = event.at, event.time_index
    found = fields_of(event.entity_id, kind, event.label, event.value, event.unit, at, index, event.score, rule.name)
    return found | {"severity": severity}


def fields_of(
    entity_id: uuid.UUID,
    kind: Callable[[], str],
    label: str | None,
    value: Any,
    unit: str,
    at: datetime | None,
    time_index: int | None,
    score: float | None,
    rule: str,
) -> dict[str, Any]:
    """The placeholders of a firing's messages but the names (filled per reader: ``_KEPT``), for alerts and
    webhooks here and for plugins' actions (``actions.Firing.render``)."""
    return {
        "entity.id": str(entity_id),
        "entity.kind": kind,
        "label": label or "",
        "value": value,
        "unit": unit,
        "time": "" if at is None else at.isoformat(),
        "time_index": "" if time_index is None else time_index,
        "score": "" if score is None else round(score, 3),
        "rule": rule,
    }


def render(template: str, fields: dict[str, Any], keep: Sequence[str] = _KEPT) -> str:
    """``template`` with ``fields`` filled in (format specs such as ``{value:.1f}`` apply to numbers); the
    placeholders in ``keep`` are left as they are, to be filled for each reader."""
    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name in keep:
            out.append("{" + name + "}")
            continue
        value = fields.get(name, "")
        if callable(value):  # looked up only if the template asks for it
            value = value()
        try:
            out.append(format(value, spec or ""))
        except (TypeError, ValueError):
            out.append(str(value))
    return "".join(out)


def _payload(session: Session, rule: Rule, event: Event, firing_id: int) -> dict[str, Any]:
    entity = entity_repo.get(session, event.entity_id)
    return {
        "event": "trigger.fired",
        "trigger": {"id": str(rule.id), "name": rule.name, "version": rule.version},
        "firing_id": firing_id,
        "entity": None if entity is None else {"id": str(entity.id), "kind": entity.kind, "name": entity.name},
        "schema": None if event.sdef is None else event.sdef.name,
        "label": event.label,
        "value": event.value,
        "unit": event.unit or None,
        "score": event.score,
        "time": event.at,
        "time_index": event.time_index,
        "at": utcnow(),
    }
