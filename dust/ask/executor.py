"""A structured query run through the engine's own functions, under the session's principal (its access policy
applies to every read, as over REST), and answered in a sentence with units.

Names are resolved by the engine's entity search, so an entity the asker may not see is "not found" exactly like
one that does not exist; a name that fits several entities equally is answered with a question and candidates.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from rapidfuzz import fuzz, utils
from sqlalchemy.orm import Session

from dust.ask import answers
from dust.ask.query import AskAnswer, Candidate, Cohort, EntityRef, Query, TimeRef, When
from dust.ask.vocabulary import UNITS, Vocabulary
from dust.core.errors import InvalidInput, NotFound, OutOfRange
from dust.engine import alerts, analysis, anomalies, entities, insights, relations, schemas, tensors
from dust.engine.entities import EntityPublic
from dust.engine.tensors import TensorPublic
from dust.storage.repositories import tensors as tensor_repo
from dust.storage.repositories import vocabulary as repo

WORD_MATCH = 70.0  # rapidfuzz ratio each word of a name needs: "jnae" ~ "jane" is 75, "novak" ~ "patel" 20
SEARCHED = 10  # entities the search gives for a name, rescored here
MAX_COHORT = 10_000  # entities a list, count or age filter walks through
SHOWN = 50  # entities, anomalies or alerts a result lists
MAX_READS = 5_000  # entities whose values a condition or ranking reads, one read each (~2 ms)
RANKED = 10  # entities a ranking gives unless the question says how many
MAX_CELLS = 1_000_000
_READINGS = ("value", "series", "stat", "trend", "compare")
_RELATIVE = re.compile(r"^(today|now)(?:-(\d{1,5})([hdwmy]))?$")
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
_CODE = re.compile(r"^([a-z]{0,3})[\s#-]*(\d{1,9})$")


class Ambiguous(Exception):
    def __init__(self, ref: EntityRef, found: list[EntityPublic]) -> None:
        self.ref, self.found = ref, found


def execute(session: Session, query: Query, vocab: Vocabulary, question: str | None = None) -> AskAnswer:
    """The answer to ``query``; a name that fits several entities is answered with ``candidates``."""
    try:
        query = _names_as_labels(session, query, vocab)
        sentence, result = _RUN[query.intent](session, query, vocab)
    except Ambiguous as many:
        return _which(query, question, many)
    return AskAnswer(question=question, query=query, answer=sentence, result=result)


def _names_as_labels(session: Session, query: Query, vocab: Vocabulary) -> Query:
    """A name that is a label of another axis of the schema picks that label: "stock of espresso beans at
    warehouse 2" reads warehouse 2's inventory of the product whose external id (SKU-001) is the label."""
    refs = vocab.labels_of(query.schema_name or "")
    open_axes = {a: labels for a, labels in refs[0].axes if a != query.axis and a not in query.select} if refs else {}
    if not any(len(labels) > 1 for labels in open_axes.values()) or query.intent not in _READINGS:
        return query
    for side in ("entity", "other"):
        ref: EntityRef | None = getattr(query, side)
        if ref is None or ref.id is not None or ref.kind is not None:
            continue
        try:
            found = resolve(session, ref)
        except (NotFound, Ambiguous):
            continue
        for axis, labels in open_axes.items():
            label = next((n for n in (found.external_id, found.name) if n in labels), None)
            if label is not None:
                rest = query.other if side == "entity" else query.entity
                intent = "value" if query.intent == "compare" else query.intent
                update = {"select": {**query.select, axis: label}, "entity": rest, "other": None, "intent": intent}
                return query.model_copy(update=update)
    return query


def _which(query: Query, question: str | None, many: Ambiguous) -> AskAnswer:
    candidates = [
        Candidate(id=e.id, kind=e.kind, name=e.name, external_id=e.external_id, attributes=attrs)
        for e, attrs in zip(many.found, _distinguishing(many.found), strict=True)
    ]
    kinds = {c.kind for c in candidates}
    what = f"{kinds.pop()}s" if len(kinds) == 1 else "entities"
    told = "; ".join(answers.candidate(c) for c in candidates)
    sentence = f"{len(candidates)} {what} match '{many.ref.name}': which one? {told}."
    return AskAnswer(question=question, query=query, answer=sentence, result=None, candidates=candidates)


def _distinguishing(found: list[EntityPublic]) -> list[dict[str, Any]]:
    """Per entity, the attributes whose values are not the same for all (scalars only: a list tells nobody)."""
    keys = {k for e in found for k, v in e.attributes.items() if isinstance(v, str | int | float | bool)}
    differ = sorted(k for k in keys if len({repr(e.attributes.get(k)) for e in found}) > 1)
    return [{k: e.attributes[k] for k in differ if k in e.attributes} for e in found]


# --- entities ----------------------------------------------------------------------------------------------


def resolve(session: Session, ref: EntityRef) -> EntityPublic:
    """The one entity ``ref`` names among those the principal may see: NotFound, or Ambiguous."""
    if ref.id is not None:
        return entities.get(session, ref.id, ref.kind)
    name = (ref.name or "").strip()
    if not name:
        raise InvalidInput("an entity must be named by name or id")
    scored = _scored(session, name, ref.kind)
    if not scored and name.endswith("s") and len(name) > 3:  # "janes temperature": a possessive without apostrophe
        scored = _scored(session, name[:-1], ref.kind)
    code = _CODE.match(name)
    if ref.kind and code and (not scored or scored[0][0] < 95):  # "warehouse W1", "warehouse #1": the kind's n-th
        scored = _scored(session, f"{ref.kind} {int(code.group(2))}", ref.kind) or scored
    if not scored:
        raise NotFound(f"found no {ref.kind or 'entity'} matching '{name}'")
    best = scored[0][0]
    tied = [e for score, e in scored if (score >= best and best >= 95) or score == best]
    if len(tied) > 1:
        raise Ambiguous(ref, tied)
    return scored[0][1]


def _scored(session: Session, name: str, kind: str | None) -> list[tuple[float, EntityPublic]]:
    found = entities.list_(session, kind=kind, q=name, limit=SEARCHED).items
    ranked = sorted(((_score(name, e), e) for e in found), key=lambda p: -p[0])
    return [(s, e) for s, e in ranked if s >= entities.MATCH_CUTOFF]


def _score(name: str, entity: EntityPublic) -> float:
    """How well ``name`` names ``entity``: its external id, its whole name, all its words, or fuzzily."""
    asked = utils.default_process(name)
    own = utils.default_process(entity.name)
    if entity.external_id is not None and name.lower() == entity.external_id.lower():
        return 102.0
    if asked == own:
        return 100.0
    words, theirs = asked.split(), own.split()
    if words and all(w in theirs for w in words):
        return 95.0 + len(words) / (10 * len(theirs))  # "jane" names "jane doe" better than "jane mary doe"
    # A misspelling matches word for word ("jnae doe", "liam tanka"); another name that merely looks alike
    # ("kenji patel" for "kenji novak") does not, so nobody is answered about in someone else's place.
    near = [max((fuzz.ratio(w, t) for t in theirs), default=0.0) for w in words]
    if not near or min(near) < WORD_MATCH:
        return 0.0
    return min(sum(near) / len(near), 94.0)


def _who(entity: EntityPublic) -> dict[str, Any]:
    return {"id": str(entity.id), "kind": entity.kind, "name": entity.name, "external_id": entity.external_id}


# --- times -------------------------------------------------------------------------------------------------


def moment(ref: TimeRef) -> int | str | datetime:
    """A time reference as the engine takes it: an index, an ISO text, or the datetime a relative one means."""
    if isinstance(ref, int) or ref in ("first", "latest"):
        return ref
    found = _RELATIVE.match(ref.strip().lower())
    if found is None:
        return ref
    anchor, count, unit = found.groups()
    now = datetime.now(UTC)
    base = now if anchor == "now" else now.replace(hour=0, minute=0, second=0, microsecond=0)
    if count is None:
        return base
    try:
        if unit == "h":
            return base - timedelta(hours=int(count))
        return base - timedelta(days=int(count) * _UNIT_DAYS[unit])
    except OverflowError:
        raise InvalidInput(f"'{ref}' is before the year 1; ask about a time within the data") from None


def _at(ref: TimeRef | None, tensor: TensorPublic | None) -> int | str | datetime | None:
    """A point of one tensor's time: "first" is its first recorded step."""
    if ref == "first" and tensor is not None:
        return tensor.time.start
    return None if ref is None or ref == "latest" else moment(ref)


def _cohort_time(session: Session, schema: str, ref: TimeRef | None, end: bool = False) -> datetime | None:
    """A time of a cohort's tensors as a timestamp: an index counts from the schema's (or its tensors') origin."""
    if ref is None or ref == "latest":
        return None
    sdef = schemas.get_def(session, schema)
    origin = sdef.time.origin or repo.first_origin(session, schema)
    if ref == "first":
        return origin
    if isinstance(ref, int):
        if origin is None:
            return None
        return origin.astimezone(UTC) + timedelta(seconds=sdef.time.seconds * ref)
    return _absolute(ref)


# --- readings of one entity --------------------------------------------------------------------------------


def _tensor(session: Session, entity: EntityPublic, query: Query) -> TensorPublic:
    if query.schema_name is None:
        raise InvalidInput("name what to read, e.g. a measure such as temperature")
    for tensor in tensors.of_entity(session, entity.id):
        if tensor.schema_name == query.schema_name:
            return tensor
    raise NotFound(f"{entity.name} has no {query.schema_name} recorded")


def _step(tensor: TensorPublic) -> str:
    """What "day 3" counts in this tensor: its time unit when a step is one of them, else "time"."""
    return tensor.time.unit if tensor.time.step == 1 else "time"


def _read(session: Session, tensor: TensorPublic, query: Query, **time: Any) -> tensors.TensorView:
    picks: dict[str, Any] = dict(query.select)
    if query.axis is not None and query.labels:
        picks[query.axis] = list(query.labels)
    return tensors.read(session, tensor.id, labels=picks, max_cells=MAX_CELLS, **time)


def _cells(view: tensors.TensorView) -> dict[str, np.ndarray]:
    """The view's series (or values) by the labels of the axes left, "label" or "label, label"."""
    axes = [d for d in view.dims if d != "time"]
    values = view.values.reshape(*(len(view.coords[a]) for a in axes), -1) if axes else view.values.reshape(1, -1)
    out: dict[str, np.ndarray] = {}
    for index in np.ndindex(*(len(view.coords[a]) for a in axes)):
        name = ", ".join(str(view.coords[a][i]) for a, i in zip(axes, index, strict=True)) or "value"
        out[name] = values[index]
    return out


def _unit(vocab: Vocabulary, query: Query, label: str) -> str:
    for ref in vocab.labels_of(query.schema_name or ""):
        if ref.unit and (ref.label == label or ref.label in label.split(", ") or ref.label in query.select.values()):
            return ref.shown_unit
    return ""


def _value(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    if query.other is not None:  # two names, neither a label's: both read
        return _compare(session, query, vocab)
    entity = resolve(session, _need(query.entity))
    return _value_of(session, entity, query, vocab)


def _value_of(session: Session, entity: EntityPublic, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    tensor = _tensor(session, entity, query)
    at = _at(query.when.at, tensor)
    result: dict[str, Any] = {"entity": _who(entity), "tensor_id": str(tensor.id), "step": _step(tensor)}
    try:
        view = _read(session, tensor, query, latest=True) if at is None else _read(session, tensor, query, time=at)
    except OutOfRange as gone:
        result |= {"values": {}, "missing": gone.detail}
        return answers.nothing(entity, query, gone.detail), result
    cells = _cells(view)
    if view.times is not None:  # latest: each cell's own time
        times = np.ma.filled(view.times, -1).reshape(-1).tolist()
        result["times"] = dict(zip(cells, times, strict=True))
    else:
        result["time"] = view.selection.get("time")
        result["timestamp"] = tensors.TensorView.timestamps.fget(view)  # type: ignore[attr-defined]
    result["values"] = {k: _number(v.reshape(-1)[0]) for k, v in cells.items()}
    result["units"] = {k: _unit(vocab, query, k) for k in cells}
    return answers.value(entity, query, result, view), result


def _series(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    entity = resolve(session, _need(query.entity))
    tensor = _tensor(session, entity, query)
    result, view = _series_of(session, entity, tensor, query, vocab)
    if view is None:
        return answers.nothing(entity, query, result["missing"]), result
    return answers.series(entity, query, result), result


def _series_of(
    session: Session, entity: EntityPublic, tensor: TensorPublic, query: Query, vocab: Vocabulary
) -> tuple[dict[str, Any], tensors.TensorView | None]:
    start, end = _at(query.when.start, tensor), _at(query.when.end, tensor)
    if query.when.at is not None:
        start = end = _at(query.when.at, tensor)
    result: dict[str, Any] = {"entity": _who(entity), "tensor_id": str(tensor.id), "step": _step(tensor)}
    try:
        view = _read(session, tensor, query, start=start, end=end)
    except OutOfRange as gone:
        return result | {"missing": gone.detail, "series": {}}, None
    cells = _cells(view)
    result["times"] = view.coords["time"]
    result["timestamps"] = [t.isoformat() for t in view.timestamps]
    result["series"] = {k: [_number(x) for x in v.tolist()] for k, v in cells.items()}
    result["units"] = {k: _unit(vocab, query, k) for k in cells}
    return result, view


def _stat(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    entity = resolve(session, _need(query.entity))
    tensor = _tensor(session, entity, query)
    result, view = _series_of(session, entity, tensor, query, vocab)
    if view is None:
        return answers.nothing(entity, query, result["missing"]), result
    agg = query.agg or "mean"
    stats: dict[str, Any] = {}
    for name, values in result["series"].items():
        stats[name] = _reduce(agg, values, result["times"])
    result["agg"], result["stats"] = agg, stats
    return answers.stat(entity, query, result), result


def _reduce(agg: str, values: Sequence[float | None], times: Sequence[int]) -> dict[str, Any]:
    recorded = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if not recorded:
        return {"value": None, "count": 0}
    numbers = np.array([v for _, v in recorded])
    if agg in ("max", "min"):
        at = int(np.argmax(numbers) if agg == "max" else np.argmin(numbers))
        return {"value": float(numbers[at]), "count": len(numbers), "time": recorded[at][0]}
    reducers: dict[str, Callable[[np.ndarray], Any]] = {"mean": np.mean, "sum": np.sum, "p50": np.median}
    value = reducers.get(agg, np.mean)(numbers)
    return {"value": float(len(numbers) if agg == "count" else value), "count": len(numbers)}


def _compare(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    pair = [resolve(session, _need(query.entity)), resolve(session, _need(query.other))]
    items = [_value_of(session, entity, query, vocab)[1] for entity in pair]
    return answers.compare(pair, query, items), {"items": items}


def _trend(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    entity = resolve(session, _need(query.entity))
    tensor = _tensor(session, entity, query)
    label = query.labels[0] if query.labels else ""
    start, end = _at(query.when.start, tensor), _at(query.when.end, tensor)
    found = analysis.analyse(
        session, tensor.id, label, start=start, end=end, selection=dict(query.select), max_cells=MAX_CELLS
    )
    result = {"entity": _who(entity), "unit": _unit(vocab, query, label), **found.model_dump(mode="json")}
    return answers.trend(entity, query, result), result


# --- cohorts -----------------------------------------------------------------------------------------------


def _aggregate(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    cohort = query.cohort or Cohort()
    if query.schema_name is None or not query.labels:
        raise InvalidInput("name what to aggregate, e.g. heart rate")
    anchor = resolve(session, cohort.related_to) if cohort.related_to is not None else None
    members = None
    if cohort.conditions:  # an age or a value no filter of the engine's aggregate says: its members, by id
        if anchor is not None:
            found, more = _neighbours(session, cohort, vocab)[1], False
        else:
            found, more = _members(session, cohort, vocab)
        if more:
            raise InvalidInput(
                f"this cohort has more than {MAX_COHORT:,} members; narrow it, e.g. by attribute values or a relation"
            )
        members = [e.id for e in found]
    when = query.when
    start = _cohort_time(session, query.schema_name, when.at if when.at is not None else when.start)
    end = _cohort_time(session, query.schema_name, when.at if when.at is not None else when.end)
    series: dict[str, list[dict[str, Any]]] = {}
    for label in query.labels:
        points = insights.aggregate_by_step(
            session,
            query.schema_name,
            label,
            query.agg or "mean",
            cohort.kind,
            query.axis,
            start=start,
            end=end,
            attributes=cohort.attributes,
            related_to=None if anchor is None else anchor.id,
            relation=cohort.relation or None,
            members=members,
        )
        series[label] = [p | {"time": p["time"].isoformat()} for p in points]
    result: dict[str, Any] = {
        "agg": query.agg or "mean",
        "series": series,
        "units": {label: _unit(vocab, query, label) for label in query.labels},
    }
    if anchor is not None:
        result["related_to"] = _who(anchor)
    if members is not None:
        result["members"] = len(members)
    return answers.aggregate(query, result, anchor), result


def _members(session: Session, cohort: Cohort, vocab: Vocabulary) -> tuple[list[EntityPublic], bool]:
    """The cohort's entities (up to MAX_COHORT), and whether there were more."""
    found: list[EntityPublic] = []
    cursor, more = None, True
    while len(found) < MAX_COHORT:
        page = entities.list_(session, kind=cohort.kind, attributes=cohort.attributes, limit=500, cursor=cursor)
        found += [e for e in page.items if _meets(e, cohort, vocab)]
        cursor = page.next_cursor
        if cursor is None:
            more = False
            break
    return _by_values(session, found[:MAX_COHORT], cohort), more


def _meets(entity: EntityPublic, cohort: Cohort, vocab: Vocabulary) -> bool:
    if any(entity.attributes.get(k) != v for k, v in cohort.attributes.items()):
        return False
    for condition in cohort.conditions:
        if condition.schema_name is not None:
            continue  # on a value: _by_values
        have = _age(entity, vocab) if condition.field == "age" else entity.attributes.get(condition.field)
        if have is None or not _holds(have, condition.op, condition.value):
            return False
    return True


def _age(entity: EntityPublic, vocab: Vocabulary) -> float | None:
    key = vocab.ages.get(entity.kind)
    born = entity.attributes.get(key) if key else None
    try:
        day = date.fromisoformat(str(born)[:10])
    except ValueError:
        return None
    today = datetime.now(UTC).date()
    return float(today.year - day.year - ((today.month, today.day) < (day.month, day.day)))


def _holds(have: Any, op: str, value: Any) -> bool:
    try:
        if op == "==":
            return bool(have == value)
        if op == "!=":
            return bool(have != value)
        a, b = float(have), float(value)
    except (TypeError, ValueError):
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


# --- values of many entities: conditions and rankings ------------------------------------------------------


def _by_values(session: Session, found: list[EntityPublic], cohort: Cohort) -> list[EntityPublic]:
    """Those of ``found`` whose values meet the cohort's conditions on values (one read per entity and condition:
    an entity without the schema, or without a value then, does not meet it)."""
    conditions = [c for c in cohort.conditions if c.schema_name is not None]
    if conditions:
        _check_reads(found)
    for condition in conditions:
        schema = str(condition.schema_name)
        axis = _axis_of(session, schema, condition.field, condition.axis)
        tensor_of = _tensor_ids(session, schema, found)
        kept = []
        for entity in found:
            if entity.id not in tensor_of:
                continue
            values = _values(session, tensor_of[entity.id], axis, [condition.field], condition.select, condition.when)
            if any(_holds(v, condition.op, condition.value) for v in values):
                kept.append(entity)
        found = kept
    return found


def _check_reads(found: Sequence[EntityPublic]) -> None:
    if len(found) > MAX_READS:
        raise InvalidInput(
            f"this reads the values of {len(found):,} entities, one by one; at most {MAX_READS:,}: narrow the "
            "cohort first, e.g. by kind, attribute values or a relation"
        )


def _axis_of(session: Session, schema: str, label: str, axis: str | None) -> str:
    """The axis ``label`` is on (422 naming the schema's labels when it is on none)."""
    sdef = schemas.get_def(session, schema)
    return sdef.axes[insights.locate(sdef, label, axis)[0]].name


def _tensor_ids(session: Session, schema: str, found: Sequence[EntityPublic]) -> dict[uuid.UUID, uuid.UUID]:
    """The tensor of ``schema`` of each of ``found`` that has one (each read then checks access again)."""
    schemas.get_def(session, schema)  # 404 for a schema that is not there
    ids = [e.id for e in found]
    out: dict[uuid.UUID, uuid.UUID] = {}
    for at in range(0, len(ids), 500):
        out |= tensor_repo.ids_of_entities(session, schema, ids[at : at + 500])
    return out


def _values(
    session: Session,
    tensor_id: uuid.UUID,
    axis: str | None,
    labels: list[str],
    select: dict[str, str],
    when: When | None,
) -> list[float]:
    """An entity's recorded values of ``labels`` (its other cells, e.g. every product's stock, summed): the latest
    (per cell), the one at ``when.at``, or one per step of a range."""
    picks: dict[str, Any] = dict(select)
    if axis is not None and labels:
        picks[axis] = list(labels)
    when = when or When()

    def point(ref: TimeRef | None) -> int | str | datetime | None:
        return tensors.get(session, tensor_id).time.start if ref == "first" else _at(ref, None)

    try:
        if when.start is None and when.end is None:
            if when.at is None or when.at == "latest":
                view = tensors.read(session, tensor_id, labels=picks, max_cells=MAX_CELLS, latest=True)
            else:
                view = tensors.read(session, tensor_id, labels=picks, max_cells=MAX_CELLS, time=point(when.at))
        else:
            start, end = point(when.start), point(when.end)
            view = tensors.read(session, tensor_id, labels=picks, max_cells=MAX_CELLS, start=start, end=end)
    except OutOfRange:
        return []
    values: np.ndarray = np.ma.filled(np.ma.asarray(view.values, dtype=float), np.nan)
    if "time" in view.dims:
        steps = np.moveaxis(values, view.dims.index("time"), -1).reshape(-1, values.shape[view.dims.index("time")])
    else:
        steps = values.reshape(-1, 1)
    seen = ~np.isnan(steps)
    sums = np.where(seen.any(axis=0), np.nansum(steps, axis=0), np.nan)
    return [float(v) for v in sums if not math.isnan(v)]


def _rank(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    """The entities with the highest (or lowest) value, or the most (fewest) entities related to them."""
    cohort = query.cohort or Cohort()
    if query.per is not None:
        scores, found = _relation_counts(session, cohort, query.per, vocab)
    else:
        scores, found = _value_scores(session, query, cohort, vocab)
    lowest = query.agg == "min"
    order = sorted(scores, key=lambda i: (scores[i] if lowest else -scores[i], found[i].name))
    ranked = [{"entity": _who(found[i]), "value": scores[i]} for i in order[: query.limit or RANKED]]
    unit = "" if query.per is not None else _unit(vocab, query, query.labels[0] if query.labels else "")
    result = {"agg": query.agg or "max", "count": len(scores), "ranked": ranked, "unit": unit}
    return answers.ranked(query, result), result


def _value_scores(
    session: Session, query: Query, cohort: Cohort, vocab: Vocabulary
) -> tuple[dict[uuid.UUID, float], dict[uuid.UUID, EntityPublic]]:
    if query.schema_name is None or not query.labels:
        raise InvalidInput("name what to rank by, e.g. heart rate, or a relation: 'who treats the most patients'")
    axis = _axis_of(session, query.schema_name, query.labels[0], query.axis)
    members, more = _members(session, cohort, vocab)
    if more:
        raise InvalidInput(f"ranking more than {MAX_COHORT:,} entities; narrow them, e.g. by kind or attribute values")
    _check_reads(members)
    tensor_of = _tensor_ids(session, query.schema_name, members)
    scores: dict[uuid.UUID, float] = {}
    found = {e.id: e for e in members if e.id in tensor_of}
    pick = min if query.agg == "min" else max  # over a range: each entity's lowest or highest
    for entity_id, tensor_id in tensor_of.items():
        values = _values(session, tensor_id, axis, query.labels, query.select, query.when)
        if values:
            scores[entity_id] = pick(values)
    return scores, found


def _relation_counts(
    session: Session, cohort: Cohort, per: Cohort, vocab: Vocabulary
) -> tuple[dict[uuid.UUID, float], dict[uuid.UUID, EntityPublic]]:
    """Per entity of the cohort, how many entities of ``per`` it is related to (valid now, seen by the asker)."""
    now = datetime.now(UTC)
    counted: dict[uuid.UUID, set[uuid.UUID]] = {}
    cursor, walked = None, 0
    while walked < MAX_COHORT:
        page = relations.list_(session, types=per.relation or None, limit=500, cursor=cursor)
        walked += len(page.items)
        for r in page.items:
            if (r.valid_from and r.valid_from > now) or (r.valid_to and r.valid_to <= now):
                continue
            pairs = {"out": [(r.source_id, r.target_id)], "in": [(r.target_id, r.source_id)]}
            pairs["both"] = pairs["out"] + pairs["in"]
            for ranked, other in pairs[per.direction]:
                counted.setdefault(ranked, set()).add(other)
        cursor = page.next_cursor
        if cursor is None:
            break
    known = _entities_by_id(session, {i for pair in counted.items() for i in (pair[0], *pair[1])})
    scores: dict[uuid.UUID, float] = {}
    for ranked, others in counted.items():
        entity = known.get(ranked)
        if entity is None or (cohort.kind and entity.kind != cohort.kind) or not _meets(entity, cohort, vocab):
            continue
        mine = [known[o] for o in others if o in known and (per.kind is None or known[o].kind == per.kind)]
        mine = _by_values(session, [e for e in mine if _meets(e, per, vocab)], per)
        if mine:
            scores[ranked] = float(len(mine))
    return scores, {i: known[i] for i in scores}


def _entities_by_id(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, EntityPublic]:
    found = {}
    for entity_id in ids:
        try:
            found[entity_id] = entities.get(session, entity_id)
        except NotFound:
            continue
    return found


def _list(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    cohort = query.cohort or Cohort()
    if cohort.related_to is not None:
        return _related(session, query, vocab)
    found, more = _members(session, cohort, vocab)
    result = {"count": len(found), "more": more, "entities": [_who(e) for e in found[:SHOWN]]}
    return answers.listed(query, result, None), result


def _count(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    cohort = query.cohort or Cohort()
    if cohort.related_to is not None:
        anchor, found = _neighbours(session, cohort, vocab)
        result = {"count": len(found), "related_to": _who(anchor)}
        return answers.counted(query, result, anchor), result
    found, more = _members(session, cohort, vocab)
    result = {"count": len(found), "more": more}
    return answers.counted(query, result, None), result


def _related(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    cohort = query.cohort or Cohort()
    anchor, found = _neighbours(session, cohort, vocab)
    result = {"related_to": _who(anchor), "count": len(found), "entities": [_who(e) for e in found[:SHOWN]]}
    return answers.listed(query, result, anchor), result


def _neighbours(session: Session, cohort: Cohort, vocab: Vocabulary) -> tuple[EntityPublic, list[EntityPublic]]:
    """Entities related to the anchor, as the cohort asks; when it names a kind none of the nearest are of,
    the next nearest, up to 3 relations away ("which suppliers ship to warehouse 1": over factories)."""
    anchor = resolve(session, _need(cohort.related_to))
    found: list[EntityPublic] = []
    for depth in (1, 2, 3):
        near = relations.neighbourhood(
            session, anchor.id, types=cohort.relation or None, direction=cohort.direction, depth=depth
        )
        found = [
            EntityPublic.model_validate(n.model_dump())
            for n in near.nodes
            if n.id != anchor.id and (cohort.kind is None or n.kind == cohort.kind)
        ]
        found = _by_values(session, [e for e in found if _meets(e, cohort, vocab)], cohort)
        if found or cohort.kind is None:
            break
        if depth == 1 and cohort.relation:  # the kind asked for may be reached over other relation types
            cohort = cohort.model_copy(update={"relation": []})
    return anchor, found


def _anomalies(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    entity = resolve(session, query.entity) if query.entity is not None else None
    start = _cohort_time(session, query.schema_name, query.when.start or query.when.at) if query.schema_name else None
    end = _cohort_time(session, query.schema_name, query.when.end or query.when.at) if query.schema_name else None
    if query.schema_name is None:
        start, end = _absolute(query.when.start or query.when.at), _absolute(query.when.end or query.when.at)
    items = []
    for label in query.labels or [None]:  # type: ignore[list-item]
        page = anomalies.list_anomalies(
            session,
            entity_id=None if entity is None else entity.id,
            schema=query.schema_name,
            label=label,
            start=start,
            end=end,
            limit=SHOWN,
        )
        items += [a.model_dump(mode="json", by_alias=True) for a in page.items]
    names = _names(session, {uuid.UUID(a["entity_id"]) for a in items})
    for item in items:
        item["entity_name"] = names.get(item["entity_id"])
        item["unit"] = _unit(vocab, query.model_copy(update={"schema_name": item["schema"]}), item["label"])
    result = {"count": len(items), "items": items}
    return answers.anomalies(query, result, entity), result


def _alerts(session: Session, query: Query, vocab: Vocabulary) -> tuple[str, Any]:
    entity = resolve(session, query.entity) if query.entity is not None else None
    start, end = _absolute(query.when.start or query.when.at), _absolute(query.when.end or query.when.at)
    page = alerts.list_alerts(
        session, entity_id=None if entity is None else entity.id, start=start, end=end, limit=SHOWN
    )
    items = [a.model_dump(mode="json", by_alias=True) for a in page.items]
    result = {"count": len(items), "more": page.next_cursor is not None, "items": items}
    return answers.alerts(query, result, entity), result


def _absolute(ref: TimeRef | None) -> datetime | None:
    if ref is None or isinstance(ref, int) or ref in ("first", "latest"):
        return None
    when = moment(ref)
    if isinstance(when, datetime):
        return when
    try:
        parsed = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"'{when}' is not a time: give a date such as 2024-03-01, or 'day 3'") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _names(session: Session, ids: set[uuid.UUID]) -> dict[str, str]:
    named = {}
    for entity_id in ids:
        try:
            named[str(entity_id)] = entities.get(session, entity_id).name
        except NotFound:
            continue
    return named


def _need(ref: EntityRef | None) -> EntityRef:
    if ref is None:
        raise InvalidInput("name the entity to ask about, e.g. a patient's name")
    return ref


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


_RUN = {
    "value": _value,
    "series": _series,
    "stat": _stat,
    "compare": _compare,
    "trend": _trend,
    "aggregate": _aggregate,
    "list": _list,
    "related": _related,
    "count": _count,
    "anomalies": _anomalies,
    "alerts": _alerts,
    "rank": _rank,
}
__all__ = ["UNITS", "execute", "moment", "resolve"]
