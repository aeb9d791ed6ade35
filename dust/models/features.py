"""Node features: what the entities' tensors and attributes say of them, as of a model's date.

**Tensors.** For each chosen cell of each schema (``Features.tensors``; ``"all"``: every cell of every schema
the graph's entities have tensors of): the **latest** value to the date, the **mean**, **min**, **max** and
(population) **std** over the last ``window`` time steps to it (default: every step), and two masks: ``missing``
(1: no value to the date) and, with a window, ``window_missing`` (1: none in the window). "To the date" is the
tensor's own time axis: as of a date, the steps that ended by it (the step holding the date is not over, and
its values may come after it); without one, the steps that began by now. A value recorded today for a day in
2015 is 2015's, as a relation valid from 2015 is in the graph as of 2016 (``graph.build``): the time axis says
when a value holds, not when it was written. Blocks are read in bulk, every tensor of a schema by a few
queries (``tensors.blocks_of``), and summarised with NumPy; each tensor read is audited as a read.

**Attributes** (``Features.attributes``): typed by the training entities' values — numbers and booleans as a
value, dates (ISO 8601 text) as years before the model's date (``birth_date`` → age; a date after it counts
as missing: it is from after the date), other texts one-hot over the ``MAX_CATEGORIES`` most common, the
rest as ``other``; each with a ``missing`` mask. Attributes keep no history, so they are today's values.

**Scaling.** Values are standardised with the mean and standard deviation of the *training* entities (those
with a label to learn from), never the test ones', and a missing value is then 0 (the training mean) beside
its mask of 1. Literal nodes and entities without the tensor or the attribute are such featureless rows. The
``Encoder`` holds all of it — the schemas and cells read, the attributes' types and categories, the statistics —
so that a stored model builds the same columns to predict, from the data as of the prediction's date.

**Access.** Features are read as the acting principal: tensors and attributes of entities they may see (others
are featureless rows), and a de-identified reader may not use a sensitive schema or attribute (403), as a
tensor read or an entity read would not show it to them.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, Forbidden, InvalidInput, NotFound, did_you_mean
from dust.engine import access, audit, schemas
from dust.engine import blocks as codec
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import TimeGrid
from dust.models.schemas import Features
from dust.storage.models import Entity, Tensor
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

STATS = ("latest", "mean", "min", "max", "std")
MAX_CATEGORIES = 20  # one-hot columns an attribute of texts gets, beside "other" and "missing"
MAX_COLUMNS = 5_000  # feature columns a model may have (each a weight per relation type and hidden unit)
DAYS_A_YEAR = 365.25
_FAR = 2**62  # "every step": a window longer than any grid holds


@dataclass(frozen=True)
class Cells:
    """The cells of a schema a model reads: their flat indices in its (latest) shape and their names."""

    schema: str
    flat: list[int]
    names: list[str]


@dataclass
class Raw:
    """What the data says of each node, before scaling: tensor columns (NaN: no value; masks 0/1) and each
    attribute's value per node (None: none). Rows past the entities are literal nodes: featureless."""

    names: list[str]
    scaled: list[bool]  # per column: a value (standardised) or a mask (kept 0/1)
    values: np.ndarray  # [nodes, columns]
    attributes: dict[str, list[Any]] = field(default_factory=dict)


# --- what a request may ask for -------------------------------------------------------------------------------


def check(session: Session, spec: Features, target: str | None) -> None:
    """4xx for a feature request that cannot be read: an unknown schema, axis or label, a sensitive schema or
    attribute for a de-identified principal, the target attribute (it would hand the model its labels), or
    more than ``MAX_COLUMNS`` columns."""
    if target is not None and target in spec.attributes:
        raise InvalidInput(
            f"settings.features.attributes names '{target}', the target attribute: its values are the labels"
        )
    columns = 0
    if spec.tensors != "all":
        for part in spec.tensors:
            columns += len(cells(session, part.schema_name, part.labels).flat) * _per_cell(spec)
    if columns > MAX_COLUMNS:
        raise InvalidInput(f"these features make {columns:,} columns (at most {MAX_COLUMNS:,}): pick fewer cells")
    _deidentified_may_use(session, [] if spec.tensors == "all" else [t.schema_name for t in spec.tensors], spec)


def cells(session: Session, schema: str, labels: dict[str, Any] | None) -> Cells:
    """The cells of ``schema`` that ``labels`` (axis → a label or a list; None: all) picks, as a tensor read
    picks them; 422 for an unknown schema, axis or label."""
    sdef = _schema(session, schema, InvalidInput)
    picks = [list(range(len(axis.labels))) for axis in sdef.axes]
    for name, wanted in (labels or {}).items():
        axis = sdef.axis(name)
        position = sdef.axes.index(axis)
        picks[position] = [sdef.label_index(axis, w) for w in ([wanted] if isinstance(wanted, str) else wanted)]
        if not picks[position]:
            raise InvalidInput(f"settings.features: the labels of axis {name} of schema {schema} are an empty list")
    grid = np.ix_(*[np.array(p) for p in picks])
    flat = np.ravel_multi_index(grid, sdef.shape).reshape(-1).tolist()
    names = ["/".join(sdef.axes[k].labels[i] for k, i in enumerate(np.unravel_index(f, sdef.shape))) for f in flat]
    return Cells(schema, flat, names)


def _schema(session: Session, name: str, error: type[InvalidInput] | type[Conflict]) -> SchemaDef:
    try:
        return schemas.get_def(session, name)
    except NotFound:
        known = [s.name for s in schemas.list_(session)]
        raise error(f"settings.features: there is no tensor schema '{name}'{did_you_mean(name, known)}") from None


def _per_cell(spec: Features) -> int:
    return len(STATS) + (2 if spec.window is not None else 1)


def _deidentified_may_use(session: Session, schema_names: Sequence[str], spec: Features) -> None:
    """403 for a de-identified principal and a sensitive schema or attribute: they may not read its values, so
    they may not have a model read them for them either."""
    who = access.principal(session)
    if who is None or not who.deidentified:
        return
    for name in schema_names:
        if schemas.get_def(session, name).sensitive:
            raise Forbidden(f"schema '{name}' is sensitive: de-identified readers get aggregates, not its features")
    hidden = access.sensitive_fields(session, None) & set(spec.attributes)
    if hidden:
        raise Forbidden(f"attribute '{sorted(hidden)[0]}' is sensitive to you: a model may not read it for you")


# --- reading ----------------------------------------------------------------------------------------------------


def resolved(session: Session, spec: Features, entity_ids: list[uuid.UUID]) -> Features:
    """``spec`` with ``tensors: "all"`` spelt out: every schema of the tensors of ``entity_ids`` (that the
    principal may see), every cell, in name order."""
    if spec.tensors != "all":
        return spec
    names = sorted(tensor_repo.schemas_of_entities(session, entity_ids, within=access.visible_ids(session)))
    if not names and not spec.attributes:
        raise InvalidInput('settings.features.tensors is "all", but no entity of the graph has a tensor')
    return Features.model_validate({**spec.model_dump(mode="json"), "tensors": [{"schema": n} for n in names]})


def read(
    session: Session, spec: Features, entity_ids: list[uuid.UUID], nodes: int, moment: datetime, ended: bool
) -> Raw:
    """The raw features of ``nodes`` nodes, the first ``len(entity_ids)`` of them these entities, from the data
    to ``moment``: steps that ended by it (``ended``: a model "as of" a date) or began by it (now)."""
    assert spec.tensors != "all", "resolve the schemas first (resolved)"
    _deidentified_may_use(session, [t.schema_name for t in spec.tensors], spec)
    visible = access.visible_ids(session)
    row_of = {entity: i for i, entity in enumerate(entity_ids)}
    names: list[str] = []
    scaled: list[bool] = []
    parts: list[np.ndarray] = []
    for part in spec.tensors:
        chosen = cells(session, part.schema_name, part.labels)
        values, columns, scales = _tensor_columns(session, chosen, row_of, nodes, moment, ended, spec.window, visible)
        names += columns
        scaled += scales
        parts.append(values)
    matrix = np.concatenate(parts, axis=1) if parts else np.zeros((nodes, 0))
    return Raw(names, scaled, matrix, _attributes(session, spec.attributes, entity_ids, nodes, visible))


def _tensor_columns(
    session: Session,
    chosen: Cells,
    row_of: dict[uuid.UUID, int],
    nodes: int,
    moment: datetime,
    ended: bool,
    window: int | None,
    visible: Any,
) -> tuple[np.ndarray, list[str], list[bool]]:
    """One schema's columns: per cell its STATS (NaN: none), ``missing`` and, with a window, ``window_missing``."""
    sdef = _schema(session, chosen.schema, Conflict)
    count = len(chosen.flat)
    stats = np.full((nodes, count, len(STATS)), np.nan)
    missing = np.ones((nodes, count))
    in_window = np.ones((nodes, count))
    rows = tensor_repo.of_entities(session, chosen.schema, list(row_of), within=visible)
    audit.record_each(session, "read", "tensor", [(row.id, [row.entity_id]) for row in rows])
    last = {row.id: _last_step(row, sdef, moment, ended) for row in rows}
    by_id = {row.id: row for row in rows}
    if rows:
        top = max(last.values()) // min(row.block_steps for row in rows)
        for tensor_id, times, values in _series(session, sdef, chosen.flat, list(by_id), top, last):
            node = row_of[by_id[tensor_id].entity_id]
            s, seen, seen_window = summary(times, values, last[tensor_id], window)
            stats[node], missing[node], in_window[node] = s, ~seen, ~seen_window
    names: list[str] = []
    columns: list[np.ndarray] = []
    scaled: list[bool] = []
    for j, cell in enumerate(chosen.names):
        prefix = f"{chosen.schema}:{cell}"
        for k, stat in enumerate(STATS):
            names.append(f"{prefix}:{stat}")
            columns.append(stats[:, j, k])
            scaled.append(True)
        names.append(f"{prefix}:missing")
        columns.append(missing[:, j])
        scaled.append(False)
        if window is not None:
            names.append(f"{prefix}:window_missing")
            columns.append(in_window[:, j])
            scaled.append(False)
    return np.stack(columns, axis=1), names, scaled


def _last_step(row: Tensor, sdef: SchemaDef, moment: datetime, ended: bool) -> int:
    """The last time step of ``row`` whose values count at ``moment``."""
    step = TimeGrid(row.origin, sdef.time.seconds, sdef.time.zone).step_of(moment)
    return step - 1 if ended else step


def _series(
    session: Session,
    sdef: SchemaDef,
    flat: list[int],
    tensor_ids: list[uuid.UUID],
    top_block: int,
    last: dict[uuid.UUID, int],
) -> Iterator[tuple[uuid.UUID, np.ndarray, np.ndarray]]:
    """Per tensor that has blocks: the time index of each recorded step to its last one and the chosen cells'
    values there ([steps], [steps, cells]; NaN where none)."""
    current: uuid.UUID | None = None
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    cells_of = np.array(flat)
    for tensor_id, number, shape, data in tensor_repo.blocks_of(session, tensor_ids, top_block):
        if tensor_id != current:
            if current is not None and times:
                yield current, np.concatenate(times), np.concatenate(values)
            current, times, values = tensor_id, [], []
        block, _ = codec.decode(shape, data, None, sdef.shape)  # older, smaller shapes come padded with NaN
        steps = block.shape[0]
        picked = block.reshape(steps, -1)[:, cells_of]
        index = np.arange(number * steps, (number + 1) * steps)
        keep = (index <= last[tensor_id]) & ~np.isnan(picked).all(axis=1)
        if keep.any():
            times.append(index[keep])
            values.append(picked[keep])
    if current is not None and times:
        yield current, np.concatenate(times), np.concatenate(values)


def summary(times: np.ndarray, values: np.ndarray, last: int, window: int | None) -> tuple[np.ndarray, ...]:
    """Per cell (a column of ``values``, steps ``times`` in order, all at or before ``last``): its STATS
    ([cells, len(STATS)], NaN where none), whether it has a value, and whether one in the window."""
    seen = ~np.isnan(values)
    has = seen.any(axis=0)
    latest_row = values.shape[0] - 1 - np.argmax(seen[::-1], axis=0)
    latest = np.where(has, values[latest_row, np.arange(values.shape[1])], np.nan)
    inside = times > last - (window if window is not None else _FAR)
    v, s = values[inside], seen[inside]
    count = s.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(s, v, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(s, (v - mean) ** 2, 0.0).sum(axis=0) / count)
    low = np.where(s, v, np.inf).min(axis=0, initial=np.inf)
    high = np.where(s, v, -np.inf).max(axis=0, initial=-np.inf)
    none = count == 0
    low[none], high[none] = np.nan, np.nan
    return np.stack([latest, mean, low, high, std], axis=1), has, count > 0


def _attributes(
    session: Session, names: list[str], entity_ids: list[uuid.UUID], nodes: int, visible: Any
) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {name: [None] * nodes for name in names}
    if not names:
        return found
    row_of = {entity: i for i, entity in enumerate(entity_ids)}
    for start in range(0, len(entity_ids), tensor_repo.IN_BATCH):
        rows: list[Entity] = entity_repo.among(
            session, entity_ids[start : start + tensor_repo.IN_BATCH], within=visible
        )
        for row in rows:
            for name in names:
                found[name][row_of[row.id]] = (row.attributes or {}).get(name)
    return found


# --- scaling ----------------------------------------------------------------------------------------------------


@dataclass
class Encoder:
    """How raw features become a model's input, fitted on the training entities; stored with the model."""

    spec: dict[str, Any]  # the Features, tensors spelt out
    names: list[str]  # the tensor columns read
    means: list[float]  # per tensor column (0 for a mask)
    scales: list[float]  # per tensor column (1 for a mask)
    attributes: list[dict[str, Any]]  # {name, type, categories, mean, scale}
    columns: list[str]  # every output column's name

    @property
    def features(self) -> Features:
        return Features.model_validate(self.spec)

    @property
    def schemas(self) -> list[str]:
        """The schemas the model reads features from."""
        return [t["schema"] for t in self.spec["tensors"]]

    def encode(self, raw: Raw, moment: datetime) -> np.ndarray:
        """The model's input [nodes, columns] (float32): values standardised, missing ones 0, masks 0/1."""
        if raw.names != self.names:
            raise Conflict("the tensors' cells are not those the model was trained on: train a new version")
        x = (raw.values - np.array(self.means)) / np.array(self.scales)
        parts = [np.nan_to_num(x, nan=0.0)]
        for described in self.attributes:
            parts.append(_encode_attribute(described, raw.attributes[described["name"]], moment))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def as_dict(self) -> dict[str, Any]:
        """For ``torch.save``: lists, texts and numbers only."""
        return {
            "spec": self.spec,
            "names": self.names,
            "means": self.means,
            "scales": self.scales,
            "attributes": self.attributes,
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Encoder:
        return cls(**data)


def fit(spec: Features, raw: Raw, train_nodes: Sequence[int], moment: datetime) -> Encoder:
    """The encoder of ``raw``, its statistics and the attributes' types and categories from the rows
    ``train_nodes`` alone."""
    rows = list(train_nodes)
    means, scales = [], []
    for j, scaled in enumerate(raw.scaled):
        if scaled:
            mean, scale = _moments(raw.values[rows, j])
        else:
            mean, scale = 0.0, 1.0
        means.append(mean)
        scales.append(scale)
    columns = list(raw.names)
    attributes = []
    for name in spec.attributes:
        described = _describe(name, [raw.attributes[name][r] for r in rows], moment)
        attributes.append(described)
        columns += _attribute_columns(described)
    if len(columns) > MAX_COLUMNS:
        raise InvalidInput(f"these features make {len(columns):,} columns (at most {MAX_COLUMNS:,}): pick fewer")
    return Encoder(spec.model_dump(mode="json"), list(raw.names), means, scales, attributes, columns)


def _moments(values: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of the finite ``values``; (0, 1) for none, a deviation of 0 taken as 1."""
    present = values[np.isfinite(values)]
    if not present.size:
        return 0.0, 1.0
    mean, std = float(present.mean()), float(present.std())
    return mean, std if std > 0 and math.isfinite(std) else 1.0


def _describe(name: str, values: list[Any], moment: datetime) -> dict[str, Any]:
    """An attribute's type and statistics from the training entities' values: numbers, booleans, dates or
    categories; 422 when none of them holds one of those."""
    present = [v for v in values if _scalar(v)]
    if not present:
        raise InvalidInput(
            f"settings.features.attributes: no training entity has attribute '{name}' as a number, boolean, date "
            "or text"
        )
    described: dict[str, Any] = {"name": name, "categories": [], "mean": 0.0, "scale": 1.0}
    if all(isinstance(v, bool) for v in present):
        described["type"] = "boolean"
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        described["type"] = "number"
    elif all(isinstance(v, str) and _date(v) is not None for v in present):
        described["type"] = "date"
    else:
        described["type"] = "category"
        counts = Counter(_text(v) for v in present)
        described["categories"] = [c for c, _ in sorted(counts.items(), key=lambda i: (-i[1], i[0]))][:MAX_CATEGORIES]
        return described
    numbers = np.array([_number(described["type"], v, moment) for v in values], dtype=np.float64)
    described["mean"], described["scale"] = _moments(numbers)
    return described


def _attribute_columns(described: dict[str, Any]) -> list[str]:
    name = described["name"]
    if described["type"] == "category":
        return [f"{name}={c}" for c in described["categories"]] + [f"{name}:other", f"{name}:missing"]
    return [f"{name}:{described['type']}", f"{name}:missing"]


def _encode_attribute(described: dict[str, Any], values: list[Any], moment: datetime) -> np.ndarray:
    if described["type"] == "category":
        slot = {c: i for i, c in enumerate(described["categories"])}
        out = np.zeros((len(values), len(slot) + 2))
        for row, value in enumerate(values):
            if not _scalar(value):
                out[row, -1] = 1.0
            else:
                out[row, slot.get(_text(value), len(slot))] = 1.0
        return out
    numbers = np.array([_number(described["type"], v, moment) for v in values], dtype=np.float64)
    absent = ~np.isfinite(numbers)
    scaled = np.where(absent, 0.0, (numbers - described["mean"]) / described["scale"])
    return np.stack([scaled, absent.astype(np.float64)], axis=1)


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, bool | int) or (isinstance(value, str) and bool(value.strip()))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _number(kind: str, value: Any, moment: datetime) -> float:
    """An attribute's value as a number (NaN: none): a date's years before ``moment`` (none after it)."""
    if kind == "boolean":
        return float(value) if isinstance(value, bool) else math.nan
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else math.nan
    when = _date(value) if isinstance(value, str) else None
    if when is None or when > moment:
        return math.nan  # no date, or one from after the model's date
    return (moment - when).total_seconds() / 86_400 / DAYS_A_YEAR


def _date(text: str) -> datetime | None:
    """An ISO 8601 date or time (UTC when it names no zone), or None."""
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        when = datetime(day.year, day.month, day.day)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# --- a model's features -----------------------------------------------------------------------------------------


def attach(
    session: Session,
    spec: Features,
    entity_ids: list[uuid.UUID],
    nodes: int,
    train_nodes: Sequence[int],
    moment: datetime,
    ended: bool,
) -> tuple[Encoder, np.ndarray]:
    """Read, fit (on ``train_nodes``) and encode: the encoder to store and the training input [nodes, columns]."""
    spec = resolved(session, spec, entity_ids)
    raw = read(session, spec, entity_ids, nodes, moment, ended)
    encoder = fit(spec, raw, train_nodes, moment)
    return encoder, encoder.encode(raw, moment)


def again(
    session: Session, encoder: Encoder, entity_ids: list[uuid.UUID], nodes: int, moment: datetime, ended: bool
) -> np.ndarray:
    """A stored model's input from the data to ``moment``, scaled as it was trained."""
    raw = read(session, encoder.features, entity_ids, nodes, moment, ended)
    return encoder.encode(raw, moment)
