"""Tensors: one entity's data under one schema, shape (axis_1, …, axis_n, time), stored in blocks.

Writes validate every value first and then touch each affected block once; a value that replaces an
earlier one is kept in ``tensor_history`` so reads "as of" a past write time can be answered.
"""

from __future__ import annotations

import math
import time as clock
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound, OutOfRange, TooLarge
from dust.engine import blocks as codec
from dust.engine import entities, schemas
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import TimeGrid, as_utc, floor_to
from dust.engine.views import TensorView, TimeInfo
from dust.storage.models import Tensor
from dust.storage.repositories import tensors as repo

BLOCK = codec.BLOCK


class TensorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    entity_id: uuid.UUID
    schema_name: str = Field(alias="schema", description="Name of the schema the tensor conforms to.")
    origin: datetime | None = Field(
        None, description="Time of index 0; default the schema's origin, else now floored to the time unit."
    )


class TensorUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(ge=1, description="Move the tensor to a later, compatible schema version.")


class AxisInfo(BaseModel):
    name: str
    labels: list[str]
    units: dict[str, str] = {}


class TensorPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    entity_id: uuid.UUID
    schema_name: str = Field(serialization_alias="schema")
    schema_version: int
    shape: list[int] = Field(description="Labels per axis, then the recorded time steps.")
    axes: list[AxisInfo]
    time: TimeInfo
    created_at: datetime


class WriteResult(BaseModel):
    written: int


class HistoryEntry(BaseModel):
    time: int
    labels: dict[str, str]
    value: float
    written_at: datetime
    replaced_at: datetime
    new_value: float


def now_us() -> int:
    return clock.time_ns() // 1000


# --- lifecycle --------------------------------------------------------------------------------------------


def create(session: Session, data: TensorCreate) -> TensorPublic:
    entities.get_row(session, data.entity_id)
    sdef = schemas.get_def(session, data.schema_name)
    origin = data.origin or sdef.time.origin or floor_to(datetime.now().astimezone(), sdef.time.seconds)
    if repo.of_entity(session, data.entity_id, sdef.name):
        raise Conflict(f"entity {data.entity_id} already has a '{sdef.name}' tensor; one per schema")
    try:
        with session.begin_nested():
            row = repo.add(
                session,
                entity_id=data.entity_id,
                schema_name=sdef.name,
                schema_version=sdef.version,
                origin=as_utc(origin),
            )
    except IntegrityError:
        raise Conflict(f"entity {data.entity_id} already has a '{sdef.name}' tensor; one per schema") from None
    return public(row, sdef)


def get(session: Session, tensor_id: uuid.UUID) -> TensorPublic:
    row = get_row(session, tensor_id)
    return public(row, _schema(session, row))


def get_row(session: Session, tensor_id: uuid.UUID) -> Tensor:
    row = repo.get(session, tensor_id)
    if row is None:
        raise NotFound(f"tensor {tensor_id} does not exist")
    return row


def of_entity(session: Session, entity_id: uuid.UUID) -> list[TensorPublic]:
    entities.get_row(session, entity_id)
    return [public(row, _schema(session, row)) for row in repo.of_entity(session, entity_id)]


def update(session: Session, tensor_id: uuid.UUID, data: TensorUpdate) -> TensorPublic:
    row = get_row(session, tensor_id)
    if data.schema_version < row.schema_version:
        raise Conflict(f"tensor is on version {row.schema_version}; versions only move forward")
    sdef = schemas.get_def(session, row.schema_name, data.schema_version)
    row.schema_version = sdef.version  # compatible by construction: versions only append labels
    session.flush()
    return public(row, sdef)


def delete(session: Session, tensor_id: uuid.UUID) -> None:
    get_row(session, tensor_id)
    repo.delete(session, tensor_id)
    session.expunge_all()


def public(row: Tensor, sdef: SchemaDef) -> TensorPublic:
    recorded = 0 if row.time_max is None else row.time_max - (row.time_min or 0) + 1
    return TensorPublic(
        id=row.id,
        entity_id=row.entity_id,
        schema_name=row.schema_name,
        schema_version=row.schema_version,
        shape=[*sdef.shape, recorded],
        axes=[AxisInfo(name=a.name, labels=a.labels, units=a.units) for a in sdef.axes],
        time=_time_info(row, sdef),
        created_at=row.created_at,
    )


def _time_info(row: Tensor, sdef: SchemaDef) -> TimeInfo:
    return TimeInfo(unit=sdef.time.unit, step=sdef.time.step, origin=row.origin, start=row.time_min, stop=row.time_max)


def _schema(session: Session, row: Tensor) -> SchemaDef:
    return schemas.get_def(session, row.schema_name, row.schema_version)


def _grid(row: Tensor, sdef: SchemaDef) -> TimeGrid:
    return TimeGrid(row.origin, sdef.time.seconds)


# --- writes -----------------------------------------------------------------------------------------------


def write_values(
    session: Session, tensor_id: uuid.UUID, values: Sequence[Mapping[str, Any]], max_batch: int = 100_000
) -> WriteResult:
    """Write ``[{time, <axis>: label, …, value}]``, all or nothing."""
    if len(values) > max_batch:
        raise TooLarge(f"a write may carry at most {max_batch} values; this one has {len(values)}")
    if not values:
        raise InvalidInput("values must hold at least one value")
    row = get_row(session, tensor_id)
    sdef = _schema(session, row)
    times, cells, numbers = _parse(values, sdef, _grid(row, sdef))
    return WriteResult(written=_apply(session, row, sdef, times, cells, numbers))


def write_array(session: Session, tensor_id: uuid.UUID, array: np.ndarray, start: int = 0) -> WriteResult:
    """Bulk write: ``array`` has the tensor's shape (axis_1, …, axis_n, time) from time index ``start``.

    NaN cells are left as they are. Ranges are checked as for single values.
    """
    row = get_row(session, tensor_id)
    sdef = _schema(session, row)
    array = np.asarray(array, dtype=np.float64)
    if array.shape[:-1] != sdef.shape:
        raise InvalidInput(f"array shape {array.shape} does not match (*{sdef.shape}, time)")
    by_time = np.moveaxis(array, -1, 0).reshape(array.shape[-1], -1)
    t, cells = np.nonzero(~np.isnan(by_time))
    numbers = by_time[t, cells]
    if np.isinf(numbers).any():
        raise InvalidInput("values must be finite numbers; inf is not allowed")
    _check_ranges(sdef, cells, numbers)
    return WriteResult(written=_apply(session, row, sdef, t.astype(np.int64) + start, cells, numbers))


def _parse(
    values: Sequence[Mapping[str, Any]], sdef: SchemaDef, grid: TimeGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(values)
    times = np.empty(n, dtype=np.int64)
    cells = np.empty(n, dtype=np.int64)
    numbers = np.empty(n, dtype=np.float64)
    allowed = {"time", "value", *(a.name for a in sdef.axes)}
    strides = np.cumprod((*sdef.shape[1:], 1)[::-1])[::-1]
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(values):
        try:
            if not isinstance(item, Mapping):
                raise InvalidInput("each value must be an object {time, <axis>: label, value}")
            extra = set(item) - allowed
            if extra:
                raise InvalidInput(f"unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
            if "time" not in item:
                raise InvalidInput("time is required (an index or an ISO 8601 timestamp)")
            times[i] = grid.index(item["time"])
            cell = 0
            for axis, stride in zip(sdef.axes, strides, strict=True):
                if axis.name not in item:
                    raise InvalidInput(f"'{axis.name}' is required: one of {axis.labels[:20]}")
                cell += int(stride) * sdef.label_index(axis, _label(item[axis.name], axis.name))
            cells[i] = cell
            numbers[i] = _number(item.get("value"), sdef, cell)
        except InvalidInput as problem:
            errors.append({"loc": ["values", i], "msg": problem.detail})
    if errors:
        first = errors[0]
        raise InvalidInput(
            f"{len(errors)} of {n} values rejected, nothing written; first, values[{first['loc'][1]}]: {first['msg']}",
            errors=errors[:100],
        )
    return times, cells, numbers


def _label(raw: Any, axis: str) -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"'{axis}' must be a label (a string), not {raw!r}")
    return raw


def _number(raw: Any, sdef: SchemaDef, cell: int) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidInput(f"value must be a number, not {raw!r}")
    number = float(raw)
    if not math.isfinite(number):
        raise InvalidInput("value must be a finite number; NaN and infinity are not allowed")
    _check_ranges(sdef, np.array([cell]), np.array([number]))
    return number


def _check_ranges(sdef: SchemaDef, cells: np.ndarray, numbers: np.ndarray) -> None:
    coords = np.unravel_index(cells, sdef.shape)
    for axis, index in zip(sdef.axes, coords, strict=True):
        for label, (low, high) in axis.ranges.items():
            hit = index == axis.labels.index(label)
            bad = hit & ((numbers < low) | (numbers > high))
            if bad.any():
                value = numbers[np.argmax(bad)]
                unit = f" {axis.units[label]}" if label in axis.units else ""
                raise InvalidInput(f"{label} {value:g}{unit} is outside its valid range {low:g}..{high:g}{unit}")


def _apply(
    session: Session, row: Tensor, sdef: SchemaDef, times: np.ndarray, cells: np.ndarray, numbers: np.ndarray
) -> int:
    """Merge validated (time, cell, value) triples into their blocks; later triples win over earlier ones."""
    if times.size == 0:
        return 0
    width = math.prod(sdef.shape)
    keys = times * width + cells
    _, last = np.unique(keys[::-1], return_index=True)
    keep = np.sort(keys.size - 1 - last)
    times, cells, numbers = times[keep], cells[keep], numbers[keep]
    order = np.argsort(times, kind="stable")
    times, cells, numbers = times[order], cells[order], numbers[order]
    block_ids = times // BLOCK
    numbers_of = np.unique(block_ids)
    stored = repo.blocks_in(session, row.id, numbers_of.tolist())
    stamp = now_us()
    bounds = [*np.searchsorted(block_ids, numbers_of, side="left").tolist(), times.size]
    new_rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for k, number in enumerate(numbers_of.tolist()):
        part = slice(bounds[k], bounds[k + 1])
        block = stored.get(number)
        values, stamps = (
            codec.decode(block.shape, block.data, block.stamps, sdef.shape) if block else codec.empty(sdef.shape)
        )
        flat_values, flat_stamps = values.reshape(BLOCK, width), stamps.reshape(BLOCK, width)  # type: ignore[union-attr]
        offsets, at = times[part] - number * BLOCK, cells[part]
        old = flat_values[offsets, at]
        replaced = ~np.isnan(old) & (old != numbers[part])
        for j in np.flatnonzero(replaced).tolist():
            history.append(
                {
                    "tensor_id": row.id,
                    "time_index": int(times[part][j]),
                    "labels": _labels_of(sdef, int(at[j])),
                    "value": float(old[j]),
                    "written_us": int(flat_stamps[offsets[j], at[j]]),
                    "replaced_us": stamp,
                    "new_value": float(numbers[part][j]),
                }
            )
        flat_values[offsets, at] = numbers[part]
        flat_stamps[offsets, at] = stamp
        data, stamp_bytes = codec.encode(values, stamps)  # type: ignore[arg-type]
        if block is None:
            new_rows.append(
                {
                    "tensor_id": row.id,
                    "block": number,
                    "shape": codec.shape_key(sdef.shape),
                    "data": data,
                    "stamps": stamp_bytes,
                }
            )
        else:
            block.shape, block.data, block.stamps = codec.shape_key(sdef.shape), data, stamp_bytes
    repo.add_blocks(session, new_rows)
    repo.add_history(session, history)
    low, high = int(times[0]), int(times[-1])
    row.time_min = low if row.time_min is None else min(row.time_min, low)
    row.time_max = high if row.time_max is None else max(row.time_max, high)
    session.flush()
    return int(times.size)


def _labels_of(sdef: SchemaDef, cell: int) -> list[str]:
    coords = np.unravel_index(cell, sdef.shape)
    return [axis.labels[int(i)] for axis, i in zip(sdef.axes, coords, strict=True)]


# --- reads ------------------------------------------------------------------------------------------------


def read(
    session: Session,
    tensor_id: uuid.UUID,
    *,
    time: int | str | datetime | None = None,
    start: int | str | datetime | None = None,
    stop: int | str | datetime | None = None,
    labels: Mapping[str, str | Sequence[str]] | None = None,
    as_of: datetime | None = None,
    latest: bool = False,
    max_cells: int = 5_000_000,
) -> TensorView:
    """Values of a tensor: all of it, one time step, a range (inclusive), some labels, or "as of" a write time.

    A single label (a string) drops its axis, as does a single ``time``; lists and ranges keep theirs.
    ``latest`` gives, per cell, the last recorded value and its time index.
    """
    row = get_row(session, tensor_id)
    sdef = _schema(session, row)
    grid = _grid(row, sdef)
    meta = public(row, sdef)
    first, last = _time_window(row, grid, time, start, stop)
    picks, dropped = _label_picks(sdef, labels or {})
    cells = math.prod(len(p) for p in picks)
    steps = 0 if first is None or last is None else last - first + 1
    if steps * cells > max_cells:
        raise InvalidInput(
            f"this read would return {steps * cells} cells; at most {max_cells}: narrow it with from/to or labels"
        )
    if first is None or last is None:
        values = np.empty((*sdef.shape, 0))
        indices = np.empty(0, dtype=np.int64)
    else:
        values, indices = _gather(session, row, sdef, first, last, as_of)
    values = values[np.ix_(*picks, np.arange(values.shape[-1]))] if picks else values
    view = TensorView.build(meta, sdef, grid, values, indices, picks, dropped)
    if latest:
        return view.latest()
    return view.single_time(time is not None)


def _time_window(row: Tensor, grid: TimeGrid, time: Any, start: Any, stop: Any) -> tuple[int | None, int | None]:
    recorded = "nothing recorded" if row.time_min is None else f"{row.time_min}..{row.time_max} recorded"
    if time is not None:
        if start is not None or stop is not None:
            raise InvalidInput("give either time or from/to, not both")
        index = grid.index(time)
        if row.time_min is None or not row.time_min <= index <= (row.time_max or 0):
            raise OutOfRange(f"time index {index} is outside {recorded} for tensor {row.id}")
        return index, index
    if row.time_min is None or row.time_max is None:
        return None, None
    first = row.time_min if start is None else grid.index(start, "from")
    last = row.time_max if stop is None else grid.index(stop, "to")
    if first > last:
        raise InvalidInput(f"from ({first}) is after to ({last})")
    if last < row.time_min or first > row.time_max:
        raise OutOfRange(f"time range {first}..{last} is outside {recorded} for tensor {row.id}")
    return max(first, row.time_min), min(last, row.time_max)


def _label_picks(sdef: SchemaDef, labels: Mapping[str, str | Sequence[str]]) -> tuple[list[np.ndarray], dict[str, str]]:
    picks = [np.arange(len(a.labels)) for a in sdef.axes]
    dropped: dict[str, str] = {}
    for name, wanted in labels.items():
        axis = sdef.axis(name)
        position = sdef.axes.index(axis)
        if isinstance(wanted, str):
            picks[position] = np.array([sdef.label_index(axis, wanted)])
            dropped[name] = wanted
        else:
            picks[position] = np.array([sdef.label_index(axis, w) for w in wanted])
    return picks, dropped


def _gather(
    session: Session, row: Tensor, sdef: SchemaDef, first: int, last: int, as_of: datetime | None
) -> tuple[np.ndarray, np.ndarray]:
    """Values for time ``first..last`` as an array (*cells, time), as of ``as_of`` if given."""
    b0, b1 = first // BLOCK, last // BLOCK
    span = (b1 - b0 + 1) * BLOCK
    values = np.full((span, *sdef.shape), np.nan)
    stamps = np.zeros((span, *sdef.shape), dtype=np.int64) if as_of is not None else None
    for number, block in repo.blocks(session, row.id, b0, b1).items():
        at = slice((number - b0) * BLOCK, (number - b0 + 1) * BLOCK)
        block_values, block_stamps = codec.decode(
            block.shape, block.data, block.stamps if stamps is not None else None, sdef.shape
        )
        values[at] = block_values
        if stamps is not None and block_stamps is not None:
            stamps[at] = block_stamps
    window = slice(first - b0 * BLOCK, last - b0 * BLOCK + 1)
    values = values[window]
    if as_of is not None and stamps is not None:
        cutoff = int(as_utc(as_of).timestamp() * 1_000_000)
        values[stamps[window] > cutoff] = np.nan
        for old in repo.history(session, row.id, first, last, replaced_after_us=cutoff):
            if old.written_us <= cutoff < old.replaced_us:
                cell = _cell_of(sdef, old.labels)
                if cell is not None:
                    values[(old.time_index - first, *cell)] = old.value
    return np.moveaxis(values, 0, -1), np.arange(first, last + 1, dtype=np.int64)


def _cell_of(sdef: SchemaDef, labels: list[str]) -> tuple[int, ...] | None:
    try:
        return tuple(a.labels.index(label) for a, label in zip(sdef.axes, labels, strict=True))
    except ValueError:
        return None


def history(session: Session, tensor_id: uuid.UUID, start: Any = None, stop: Any = None) -> list[HistoryEntry]:
    """Every value that a later write replaced, oldest time first."""
    row = get_row(session, tensor_id)
    sdef = _schema(session, row)
    grid = _grid(row, sdef)
    first = 0 if start is None else grid.index(start, "from")
    last = (row.time_max or 0) if stop is None else grid.index(stop, "to")
    names = [a.name for a in sdef.axes]
    return [
        HistoryEntry(
            time=h.time_index,
            labels=dict(zip(names, h.labels, strict=False)),
            value=h.value,
            written_at=_from_us(h.written_us),
            replaced_at=_from_us(h.replaced_us),
            new_value=h.new_value,
        )
        for h in repo.history(session, row.id, first, last)
    ]


def _from_us(us: int) -> datetime:
    return as_utc(datetime.fromtimestamp(us / 1_000_000).astimezone())
