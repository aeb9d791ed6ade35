"""Tensors: one entity's data under one schema, shape (axis_1, …, axis_n, time), stored in blocks.

Writes validate every value first and then touch each affected block once; a value that replaces an
earlier one is kept in ``tensor_history`` so reads "as of" a past write time can be answered.
"""

from __future__ import annotations

import json
import math
import numbers
import time as clock
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, DustError, Forbidden, InvalidInput, NotFound, OutOfRange, TooLarge
from dust.engine import access, anomalies, audit, caches, entities, firing, schemas
from dust.engine import blocks as codec
from dust.engine.fields import Integer, Timestamp
from dust.engine.paging import decode_cursor, encode_cursor
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import TimeGrid, as_utc, default_origin, from_us, grid_of, parse_timestamp, shown, to_us
from dust.engine.views import TensorView, TimeInfo
from dust.storage import cache_store
from dust.storage.db import is_read_only, pipelined
from dust.storage.models import Tensor, utcnow
from dust.storage.repositories import tensors as repo


class TensorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    entity_id: uuid.UUID
    schema_name: str = Field(alias="schema", max_length=64, description="Name of the schema the tensor conforms to.")
    origin: Timestamp | None = Field(
        None,
        description="Time of index 0; default the schema's origin, else the start of the current step on the "
        "schema's grid (from Monday 2000-01-03 00:00 in its zone).",
    )


class TensorUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Integer = Field(
        ge=1, le=schemas.MAX_VERSION, description="Move the tensor to a later, compatible schema version."
    )


class AxisInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    labels: list[str]
    units: dict[str, str] = {}


class TensorPublic(BaseModel):
    """What a read says of a tensor. Immutable: ``public`` gives the same one to every read of a tensor version."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

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


class EraseResult(BaseModel):
    erased: int = Field(description="Recorded values erased; cells that held none are left as they were.")


class HistoryEntry(BaseModel):
    time: int
    labels: dict[str, str]
    value: float
    written_at: datetime
    replaced_at: datetime
    new_value: float | None = Field(description="The value that replaced it; null if it was erased.")


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


CACHED_BLOCKS = 16  # longest range of blocks (about 8 KiB each) a read keeps in the shared cache
HISTORY_LIMIT = 1_000  # entries a history page holds unless asked for fewer or more
MAX_HISTORY_LIMIT = 10_000
_HISTORY_CURSOR = "h"  # [time_index, replaced_us, id] of the last entry returned


def now_us() -> int:
    """The wall clock in µs; a write stamps its cells with it, or later (``_stamp``)."""
    return clock.time_ns() // 1000


# --- lifecycle --------------------------------------------------------------------------------------------


def create(session: Session, data: TensorCreate) -> TensorPublic:
    return create_many(session, [data])[0]


def create_many(session: Session, items: Sequence[TensorCreate]) -> list[TensorPublic]:
    """Tensors in the order given, inserted by one statement (for importers); all or nothing."""
    if not items:
        return []
    entities.check_visible(session, [data.entity_id for data in items])
    defs = [schemas.get_def(session, data.schema_name) for data in items]
    now = utcnow()
    fields = [_new_tensor(data, sdef, now) for data, sdef in zip(items, defs, strict=True)]
    # One insert changes nothing when it clashes; with several, a clash must undo the rows inserted before it.
    with session.begin_nested() if len(fields) > 1 else nullcontext():
        added = repo.add_new(session, fields)
        clash = next((f for f in fields if f["id"] not in added), None)
        if clash is not None:
            raise Conflict(f"entity {clash['entity_id']} already has a '{clash['schema_name']}' tensor; one per schema")
    rows = [Tensor(**f) for f in fields]  # not added to the session: only to present them
    audit.record_each(session, "create", "tensor", [(row.id, [row.entity_id]) for row in rows])
    return [public(row, sdef) for row, sdef in zip(rows, defs, strict=True)]


def _new_tensor(data: TensorCreate, sdef: SchemaDef, now: datetime) -> dict[str, Any]:
    """Every column of a new tensor's row."""
    origin = data.origin or sdef.time.origin or default_origin(now, sdef.time.seconds, sdef.time.zone)
    return {
        "id": uuid.uuid4(),
        "entity_id": data.entity_id,
        "schema_name": sdef.name,
        "schema_version": sdef.version,
        "origin": as_utc(origin),
        "time_min": None,
        "time_max": None,
        "block_steps": codec.steps_for(sdef.shape),
        "created_at": now,
        "updated_at": now,
    }


def get(session: Session, tensor_id: uuid.UUID) -> TensorPublic:
    row = get_row(session, tensor_id)
    _audit(session, "read", row)
    return public(row, _schema(session, row))


def read_first(session: Session, key: uuid.UUID) -> None:
    """A read's first query: the tensor's row along with the cache epochs; ``get_row(copy=True)`` then takes it."""
    caches.read_along(session, repo.peek, key)


def get_row(session: Session, tensor_id: uuid.UUID, *, lock: bool = False, copy: bool = False) -> Tensor:
    """The tensor, if the principal may see its entity (404 either way); ``lock``: see ``locked``; ``copy``: a
    copy outside the session, for a read that changes nothing (``repo.peek``)."""
    if lock:
        return locked(session, [tensor_id])[tensor_id]
    find = repo.peek if copy else repo.get
    row = find(session, tensor_id)
    if row is None or not access.sees(session, row.entity_id):
        within = access.visible_ids(session)  # the database decides, for a missing tensor too (the same time)
        row = row if within is None else find(session, tensor_id, within=within)
    if row is None:
        raise NotFound(f"tensor {tensor_id} does not exist")
    return row


def locked(session: Session, tensor_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Tensor]:
    """The tensors, held until commit, so that two writes cannot both rewrite a block from the same old copy
    (the second would silently drop the first's cells) or both insert the same new block. 404 for the first
    that does not exist or whose entity the principal may not see; those are never locked, nor waited for."""
    rows = repo.lock(session, list(tensor_ids), within=access.visible_ids(session))
    for tensor_id in tensor_ids:
        if tensor_id not in rows:
            raise NotFound(f"tensor {tensor_id} does not exist")
    return rows


def _audit(session: Session, action: audit.Action, row: Tensor) -> None:
    audit.record(session, action, "tensor", row.id, [row.entity_id])


def _readable(session: Session, row: Tensor, sdef: SchemaDef) -> None:
    """Per-entity values of a sensitive schema are not for de-identified readers (aggregates are)."""
    who = access.principal(session)
    if who is not None and who.deidentified and sdef.sensitive:
        raise Forbidden(f"schema '{sdef.name}' is sensitive: de-identified readers get aggregates only")
    _audit(session, "read", row)


def of_entity(session: Session, entity_id: uuid.UUID) -> list[TensorPublic]:
    entities.get_row(session, entity_id)
    rows = repo.of_entity(session, entity_id)
    audit.record(session, "read", "tensor", None, [entity_id] if rows else [])
    defs = schemas.get_defs(session, [(row.schema_name, row.schema_version) for row in rows])
    return [public(row, defs[(row.schema_name, row.schema_version)]) for row in rows]


def update(session: Session, tensor_id: uuid.UUID, data: TensorUpdate) -> TensorPublic:
    row = get_row(session, tensor_id, lock=True)  # a write in flight must not store blocks of the old length
    if data.schema_version < row.schema_version:
        raise Conflict(f"the tensor is already on version {row.schema_version}; a tensor moves only to a later version")
    sdef = schemas.get_def(session, row.schema_name, data.schema_version)
    anomalies.renumber(session, row.id, _schema(session, row), sdef)
    row.schema_version = sdef.version  # compatible by construction: versions only append labels
    if row.time_max is None:  # no blocks yet: the length may follow the new cell count; once stored, it stays
        row.block_steps = codec.steps_for(sdef.shape)
    session.flush()
    _audit(session, "update", row)
    return public(row, sdef)


def delete(session: Session, tensor_id: uuid.UUID) -> None:
    row = get_row(session, tensor_id)
    _audit(session, "delete", row)
    repo.delete(session, tensor_id)
    session.expunge_all()


# public()'s last answers, by the row's fields it reads, each with the schema version it was made from
_PUBLIC: dict[tuple[Any, ...], tuple[SchemaDef, TensorPublic]] = {}
PUBLIC_KEPT = 4096


def public(row: Tensor, sdef: SchemaDef) -> TensorPublic:
    """The tensor's metadata; the one made last time for the same fields and the same ``SchemaDef`` (the caches
    hand out one per schema version until it changes): building the models cost a twentieth of a point read's CPU
    (py-spy, in process)."""
    key = (
        row.id,
        row.entity_id,
        row.schema_name,
        row.schema_version,
        row.time_min,
        row.time_max,
        row.origin,
        row.created_at,
    )
    kept = _PUBLIC.get(key)
    if kept is not None and kept[0] is sdef:
        return kept[1]
    made = _public(row, sdef)
    if len(_PUBLIC) >= PUBLIC_KEPT:
        _PUBLIC.clear()
    _PUBLIC[key] = (sdef, made)
    return made


def _public(row: Tensor, sdef: SchemaDef) -> TensorPublic:
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
    return TimeInfo(
        unit=sdef.time.unit,
        step=sdef.time.step,
        zone=sdef.time.zone,
        origin=row.origin,
        start=row.time_min,
        end=row.time_max,
    )


def _schema(session: Session, row: Tensor) -> SchemaDef:
    return schemas.get_def(session, row.schema_name, row.schema_version)


def _grid(row: Tensor, sdef: SchemaDef) -> TimeGrid:
    return grid_of(row.origin, sdef.time.seconds, sdef.time.zone)


# --- writes -----------------------------------------------------------------------------------------------


def write_values(
    session: Session,
    tensor_id: uuid.UUID,
    values: Sequence[Mapping[str, Any]],
    max_batch: int = 100_000,
    max_blocks: int | None = None,
) -> WriteResult:
    """Write ``[{time, <axis>: label, …, value}]``, all or nothing.

    ``max_blocks`` bounds the storage blocks one write may touch: each touched block is rewritten whole, so a
    few values far apart would otherwise cost a block each.
    """
    if len(values) > max_batch:
        raise TooLarge(f"a write may carry at most {max_batch} values; this one has {len(values)}")
    if not values:
        raise InvalidInput("values must hold at least one value")
    row = get_row(session, tensor_id, lock=True)
    sdef = _schema(session, row)
    times, cells, numbers = _parse(values, sdef, _grid(row, sdef))
    _check_blocks(times, max_blocks, row.block_steps)
    return WriteResult(written=_apply(session, [_Write(row, sdef, times, cells, numbers)])[0])


def write_columns(
    session: Session,
    tensor_id: uuid.UUID,
    columns: Mapping[str, Sequence[Any]],
    *,
    max_batch: int = 10_000,
    max_blocks: int = 64,
) -> WriteResult:
    """``write_values`` of a batch as columns: ``{"time": [...], "<axis>": [...], …, "value": [...]}``, a list
    per field, all of one length; value i of the batch is the i-th of each. The shape NumPy and pandas hold data
    in, and a third of the JSON of the same cells as objects (so a third of the decoding)."""
    row = get_row(session, tensor_id, lock=True)
    sdef = _schema(session, row)
    names = ("time", "value", *(a.name for a in sdef.axes))
    given = set(columns)
    if given != set(names):
        missing, extra = sorted(set(names) - given), sorted(given - set(names))
        raise InvalidInput(
            f"columns must be exactly {', '.join(names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not fields of this schema: {', '.join(extra)}" if extra else "")
        )
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise InvalidInput(f"columns must be of one length, not {', '.join(f'{k} {n}' for k, n in lengths.items())}")
    count = lengths["time"]
    if count > max_batch:
        raise TooLarge(f"a write may carry at most {max_batch} values; this one has {count}")
    if count == 0:
        raise InvalidInput("columns must hold at least one value")
    grid = _grid(row, sdef)
    checked = _check_columns([columns[name] for name in names], sdef, grid)
    if checked is None:  # a bad value somewhere: the value-by-value path says which and why
        rows = [dict(zip(names, cells, strict=True)) for cells in zip(*(columns[n] for n in names), strict=True)]
        checked = _parse_each(rows, sdef, grid, where="columns")
    times, cells, numbers = checked
    _check_blocks(times, max_blocks, row.block_steps)
    return WriteResult(written=_apply(session, [_Write(row, sdef, times, cells, _unsigned_zero(numbers))])[0])


def write_array(session: Session, tensor_id: uuid.UUID, array: np.ndarray, start: int = 0) -> WriteResult:
    """Bulk write: ``array`` has the tensor's shape (axis_1, …, axis_n, time) from time index ``start``.

    NaN cells are left as they are. Ranges are checked as for single values.
    """
    return WriteResult(written=write_arrays(session, {tensor_id: array}, start)[tensor_id])


def write_arrays(session: Session, arrays: Mapping[uuid.UUID, np.ndarray], start: int = 0) -> dict[uuid.UUID, int]:
    """``write_array`` for many tensors at once (for importers), in a few statements for all; all or nothing.

    Returns the number of values written per tensor. An error names the tensor it concerns.
    """
    rows = locked(session, list(arrays))
    writes = []
    for tensor_id, array in arrays.items():
        with _naming(tensor_id, len(arrays) > 1):
            writes.append(_from_array(session, rows[tensor_id], array, start))
    return dict(zip(arrays, _apply(session, writes), strict=True))


def erase_values(
    session: Session,
    tensor_id: uuid.UUID,
    cells: Sequence[Mapping[str, Any]],
    max_batch: int = 100_000,
    max_blocks: int | None = None,
) -> EraseResult:
    """Erase the values of ``[{time, <axis>: label, …}]``, all or nothing: they read as not recorded from now
    on, stay in the history (``new_value`` None) and in reads "as of" a time before. A write to the tensor for
    access and audit; an unknown label or time fails the whole request, a cell holding nothing is left as it is."""
    if len(cells) > max_batch:
        raise TooLarge(f"an erase may name at most {max_batch} cells; this one names {len(cells)}")
    if not cells:
        raise InvalidInput("values must name at least one cell")
    row = get_row(session, tensor_id, lock=True)
    sdef = _schema(session, row)
    times, flat = _parse_cells(cells, sdef, _grid(row, sdef))
    _check_blocks(times, max_blocks, row.block_steps)
    erase = _Write(row, sdef, times, flat, np.full(times.size, np.nan), erase=True)
    return EraseResult(erased=_apply(session, [erase])[0])


def _check_blocks(times: np.ndarray, max_blocks: int | None, steps: int) -> None:
    """TooLarge past ``max_blocks``: each touched block (of ``steps`` time steps) is rewritten whole, so a few
    values far apart would otherwise cost a block each (45,000 values a block apart: 45,000 blocks of ~8 KiB)."""
    blocks = times // steps
    if blocks.size > 1 and (blocks[1:] >= blocks[:-1]).all():  # in time order, as batches mostly come: no sort
        touched = 1 + int(np.count_nonzero(blocks[1:] != blocks[:-1]))
    else:
        touched = np.unique(blocks).size
    if max_blocks is not None and touched > max_blocks:
        raise TooLarge(
            f"this request touches {touched} blocks of {steps} time steps; at most {max_blocks} per request: "
            "send cells spread over fewer, closer time steps per request"
        )


def _parse_cells(cells: Sequence[Mapping[str, Any]], sdef: SchemaDef, grid: TimeGrid) -> tuple[np.ndarray, np.ndarray]:
    """(time indices, flat cells) of ``[{time, <axis>: label, …}]``; InvalidInput naming every bad one."""
    allowed = {"time", *(a.name for a in sdef.axes)}
    times = np.empty(len(cells), dtype=np.int64)
    flat = np.zeros(len(cells), dtype=np.int64)
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(cells):
        try:
            times[i], flat[i] = _address(
                item, allowed, sdef, grid, "each cell must be an object {time, <axis>: label, …}"
            )
        except InvalidInput as problem:
            errors.append({"loc": ["values", i], "msg": problem.detail, "type": problem.code})
    _refuse(errors, len(cells), "cells were rejected, so nothing was erased")
    return times, flat


def _address(item: Any, allowed: set[str], sdef: SchemaDef, grid: TimeGrid, not_an_object: str) -> tuple[int, int]:
    """(time index, flat cell) of one ``{time, <axis>: label, …}``, with no field outside ``allowed``."""
    if not isinstance(item, Mapping):
        raise InvalidInput(not_an_object, code="not_an_object")
    extra = set(item) - allowed
    if extra:
        raise InvalidInput(f"unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}", code="unknown_field")
    if "time" not in item:
        raise InvalidInput("time is required (an index or an ISO 8601 timestamp)", code="missing")
    time = grid.index(item["time"])
    cell = 0
    for axis, stride in zip(sdef.axes, sdef.strides, strict=True):
        if axis.name not in item:
            raise InvalidInput(f"'{axis.name}' is required: one of {axis.labels[:20]}", code="missing")
        cell += int(stride) * sdef.label_index(axis, _label(item[axis.name], axis.name))
    return time, cell


def _refuse(errors: list[dict[str, Any]], count: int, outcome: str) -> None:
    """InvalidInput for a batch with ``errors``: how many of ``count`` were bad, what happened, the first."""
    if errors:
        first = errors[0]
        raise InvalidInput(
            f"{len(errors)} of {count} {outcome}; the first, {first['loc'][0]}[{first['loc'][1]}]: {first['msg']}",
            errors=errors[:100],
        )


@contextmanager
def _naming(tensor_id: uuid.UUID, many: bool) -> Iterator[None]:
    """In a write to many tensors, an error says which one it is about."""
    try:
        yield
    except DustError as problem:
        if not many:
            raise
        raise type(problem)(f"tensor {tensor_id}: {problem.detail}", errors=problem.errors, code=problem.code) from None


def _from_array(session: Session, row: Tensor, array: np.ndarray, start: int) -> _Write:
    """The recorded (non-NaN) cells of ``array`` as triples, after checking shape, time grid, numbers and ranges.

    The numbers obey the rules of ``write_values``: real numbers within float64 (no booleans, text or complex
    numbers), finite and in range; only NaN differs, meaning "leave this cell as it is". An error names the cell.
    """
    sdef = _schema(session, row)
    raw = real_array(array)
    if raw.ndim == 0 or raw.shape[:-1] != sdef.shape:
        raise InvalidInput(f"array shape {raw.shape} does not match (*{sdef.shape}, time)")
    steps = raw.shape[-1]
    grid = _grid(row, sdef)
    grid.check(start, "start")
    if steps:
        grid.check(start + steps - 1, "start + time steps - 1")
    by_time = _float64(raw, sdef, start).reshape(math.prod(sdef.shape), steps).T
    t, cells = np.nonzero(~np.isnan(by_time))  # in (time, cell) order, each once: settled
    numbers = by_time[t, cells]
    for j in np.flatnonzero(np.isinf(numbers) | _outside_ranges(sdef, cells, numbers))[:1].tolist():
        where = _cell_name(sdef, int(cells[j]), int(t[j]) + start)
        if np.isinf(numbers[j]):
            raise InvalidInput(f"{where}: value must be a finite number within float64 range", code="not_finite")
        problem = _out_of_range(sdef, int(cells[j]), float(numbers[j]))
        raise InvalidInput(f"{where}: {problem.detail}", code=problem.code)
    return _Write(row, sdef, t.astype(np.int64) + start, cells, _unsigned_zero(numbers), settled=True)


def real_array(array: Any) -> np.ndarray:
    """``array`` as a NumPy array of real numbers (of any integer or float dtype, or objects checked one by one
    later); InvalidInput for booleans, complex numbers, text or anything else, as ``write_values`` refuses them."""
    try:
        raw = np.asarray(array)
    except (TypeError, ValueError):
        raise InvalidInput(
            "array must be a rectangular array of numbers (NaN for cells to leave as they are)"
        ) from None
    if raw.dtype.kind not in "iufO":
        what = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "bytes"}.get(raw.dtype.kind, str(raw.dtype))
        raise InvalidInput(
            f"array must hold real numbers (NaN for cells to leave as they are), not {what}", code="not_a_number"
        )
    return raw


def _float64(raw: np.ndarray, sdef: SchemaDef, start: int) -> np.ndarray:
    """``raw`` (shaped as the tensor) as float64. A number beyond float64 becomes inf (refused by the caller); an
    element of an object array that ``write_values`` would refuse is refused here, naming its cell."""
    if raw.dtype.kind != "O":
        with np.errstate(over="ignore"):  # a long double past float64: inf, refused naming its cell
            return raw.astype(np.float64)
    out = np.empty(raw.shape, dtype=np.float64)
    for position, item in np.ndenumerate(raw):
        if isinstance(item, bool | np.bool_) or not isinstance(item, numbers.Real):
            where = _cell_name(sdef, int(np.ravel_multi_index(position[:-1], sdef.shape)), position[-1] + start)
            raise InvalidInput(
                f"{where}: value must be a number (NaN to leave the cell as it is), not {shown(item)}",
                code="not_a_number",
            )
        try:
            out[position] = float(item)
        except OverflowError:  # an integer beyond float64, e.g. 10**400
            out[position] = math.inf
    return out


def _cell_name(sdef: SchemaDef, cell: int, time: int) -> str:
    """A cell as a person names it: ``time 3, metric=heart_rate``."""
    labels = ", ".join(f"{a.name}={label}" for a, label in zip(sdef.axes, _labels_of(sdef, cell), strict=True))
    return f"time {time}, {labels}"


def _unsigned_zero(numbers: np.ndarray) -> np.ndarray:
    """-0.0 as 0.0: a value is a number, and -0.0 == 0.0, so writing one over the other changes nothing, and
    what is stored (and read back) never depends on whether another cell of its block changed."""
    return numbers + 0.0


def _parse(
    values: Sequence[Mapping[str, Any]], sdef: SchemaDef, grid: TimeGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time indices, flat cells, numbers) of ``values``; InvalidInput naming every bad value if any is bad."""
    # Nearly every batch is well formed: checked as columns it costs a few NumPy calls instead of a Python loop
    # per value. Any other batch takes the loop, which finds each bad value and says what is wrong with it.
    parsed = _parse_columns(values, sdef, grid)
    times, cells, numbers = parsed if parsed is not None else _parse_each(values, sdef, grid)
    return times, cells, _unsigned_zero(numbers)


def _parse_columns(
    values: Sequence[Mapping[str, Any]], sdef: SchemaDef, grid: TimeGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``_parse`` of a batch of plain dicts holding exactly the schema's fields, all valid; None for any other
    batch, never an error: only ``_parse_each`` words those."""
    names = ("time", "value", *(a.name for a in sdef.axes))
    if set(map(type, values)) != {dict} or set(map(len, values)) != {len(set(names))}:  # not dicts, or extra fields
        return None
    try:
        columns = [list(map(itemgetter(name), values)) for name in names]
    except KeyError:  # a field is missing
        return None
    return _check_columns(columns, sdef, grid)


def _check_columns(
    columns: Sequence[Sequence[Any]], sdef: SchemaDef, grid: TimeGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(time indices, flat cells, numbers) of ``columns`` (time, value, then a label column per axis), all
    valid; None if any is not, never an error."""
    times = _time_column(columns[0], grid)
    numbers = _number_column(columns[1])
    cells = _cell_column(columns[2:], sdef)
    if times is None or numbers is None or cells is None or _outside_ranges(sdef, cells, numbers).any():
        return None
    return times, cells, numbers


def _time_column(raw: Sequence[Any], grid: TimeGrid) -> np.ndarray | None:
    """Time indices of integers or strings (as ``grid.index`` takes them), or None if one is anything else or
    invalid."""
    kinds = set(map(type, raw))
    try:
        if kinds == {int}:
            times = np.array(raw, dtype=np.int64)  # OverflowError past int64
            grid.check(int(times.min()))  # validity only falls off at either end of the grid
            grid.check(int(times.max()))
            return times
        if kinds <= {int, str}:  # timestamps: each distinct one converted once (a batch repeats them per cell)
            index = {when: grid.index(when) for when in set(raw)}
            return np.fromiter(map(index.__getitem__, raw), dtype=np.int64, count=len(raw))
    except (InvalidInput, OverflowError):
        pass
    return None


def _number_column(raw: Sequence[Any]) -> np.ndarray | None:
    """float64 of finite floats and integers (never bools), or None."""
    if not set(map(type, raw)) <= {float, int}:
        return None
    try:
        numbers = np.array(raw, dtype=np.float64)  # as float() of each; OverflowError for an integer past float64
    except OverflowError:
        return None
    return numbers if np.isfinite(numbers).all() else None


def _cell_column(labels: Sequence[Sequence[Any]], sdef: SchemaDef) -> np.ndarray | None:
    """Flat cells of the labels given per axis (a column each), or None if one is not a label of its axis."""
    cells = np.zeros(len(labels[0]), dtype=np.int64)
    for axis, stride, raw in zip(sdef.axes, sdef.strides, labels, strict=True):
        if set(map(type, raw)) != {str}:
            return None
        try:  # each distinct label looked up once
            index = {label: sdef.label_index(axis, label) for label in set(raw)}
        except InvalidInput:
            return None
        cells += stride * np.fromiter(map(index.__getitem__, raw), dtype=np.int64, count=len(raw))
    return cells


def _parse_each(
    values: Sequence[Mapping[str, Any]], sdef: SchemaDef, grid: TimeGrid, where: str = "values"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_parse`` value by value, collecting an error for each bad one (at ``where``[i])."""
    n = len(values)
    times = np.empty(n, dtype=np.int64)
    cells = np.empty(n, dtype=np.int64)
    numbers = np.empty(n, dtype=np.float64)
    allowed = {"time", "value", *(a.name for a in sdef.axes)}
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(values):
        try:
            times[i], cells[i] = _address(
                item, allowed, sdef, grid, "each value must be an object {time, <axis>: label, value}"
            )
            numbers[i] = _number(item.get("value"), sdef, int(cells[i]))
        except InvalidInput as problem:
            errors.append({"loc": [where, i], "msg": problem.detail, "type": problem.code})
    _refuse(errors, n, "values were rejected, so nothing was written")
    return times, cells, numbers


def _label(raw: Any, axis: str) -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"'{axis}' must be a label (a string), not {raw!r}", code="not_a_label")
    return raw


def _number(raw: Any, sdef: SchemaDef, cell: int) -> float:
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, numbers.Real):
        raise InvalidInput(f"value must be a number, not {shown(raw)}", code="not_a_number")
    try:
        number = float(raw)
    except OverflowError:  # an integer beyond float64, e.g. 10**400 (JSON allows any number of digits)
        raise InvalidInput(
            f"value must be a number within float64 range, not {shown(raw)}", code="not_finite"
        ) from None
    if not math.isfinite(number):
        raise InvalidInput("value must be a finite number; NaN and infinity are not allowed", code="not_finite")
    low, high = sdef.bounds
    if not low[cell] <= number <= high[cell]:
        raise _out_of_range(sdef, cell, number)
    return number


def _check_ranges(sdef: SchemaDef, cells: np.ndarray, numbers: np.ndarray) -> None:
    bad = _outside_ranges(sdef, cells, numbers)
    if bad.any():
        first = int(np.argmax(bad))
        raise _out_of_range(sdef, int(cells[first]), float(numbers[first]))


def _outside_ranges(sdef: SchemaDef, cells: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """True where a number is outside its cell's valid range (NaN never is)."""
    low, high = sdef.bounds
    return (numbers < low[cells]) | (numbers > high[cells])


def _out_of_range(sdef: SchemaDef, cell: int, number: float) -> InvalidInput:
    """The error for ``number`` in ``cell``, naming the label whose range it breaks."""
    for axis, index in zip(sdef.axes, np.unravel_index(cell, sdef.shape), strict=True):
        label = axis.labels[int(index)]
        low, high = axis.ranges.get(label, (-math.inf, math.inf))
        if not low <= number <= high:
            unit = f" {axis.units[label]}" if label in axis.units else ""
            return InvalidInput(
                f"{label} {number:g}{unit} is outside its valid range {low:g}..{high:g}{unit}", code="out_of_range"
            )
    # Not reached: the bounds come from the ranges.
    return InvalidInput(f"value {number:g} is outside its valid range", code="out_of_range")


@dataclass
class _Write:
    """Validated (time index, flat cell, value) triples for one locked tensor."""

    row: Tensor
    sdef: SchemaDef
    times: np.ndarray
    cells: np.ndarray
    numbers: np.ndarray
    settled: bool = False  # one triple per (time, cell), in time order, as an array's cells come
    erase: bool = False  # the numbers are NaN: the recorded values of the cells are erased
    # The touched blocks' values once merged, (time in block, flat cell) by block number: trigger rules that look
    # back at earlier values read them from here instead of from storage.
    merged: dict[int, np.ndarray] = field(default_factory=dict)

    def settle(self) -> _Write:
        """Only the last triple per (time, cell) kept, ordered by time: later triples win over earlier ones."""
        if self.settled:
            return self
        width = math.prod(self.sdef.shape)
        keys = self.times * width + self.cells
        if (keys[1:] > keys[:-1]).all():  # each (time, cell) once, in time order, as batches mostly come
            return _Write(self.row, self.sdef, self.times, self.cells, self.numbers, settled=True, erase=self.erase)
        _, last = np.unique(keys[::-1], return_index=True)
        keep = np.sort(keys.size - 1 - last)
        keep = keep[np.argsort(self.times[keep], kind="stable")]
        kept = (self.times[keep], self.cells[keep], self.numbers[keep])
        return _Write(self.row, self.sdef, *kept, settled=True, erase=self.erase)

    @cached_property
    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """The numbers of the blocks touched, ascending, and for each triple the position of its block among
        them. Needs settled (time-ordered) triples."""
        block_ids = self.times // self.row.block_steps
        opens = np.r_[True, block_ids[1:] != block_ids[:-1]]
        return block_ids[opens], np.cumsum(opens) - 1

    def stored_candidates(self) -> list[int]:
        """The touched block numbers that may be stored: a block exists only inside the recorded time range,
        so a first write, or one beyond the range, needs no look at storage. An array of NaN only touches none."""
        row = self.row
        if not self.times.size or row.time_min is None or row.time_max is None:
            return []
        numbers, steps = self.blocks[0], row.block_steps
        inside = (numbers >= row.time_min // steps) & (numbers <= row.time_max // steps)
        return numbers[inside].tolist()


def _apply(session: Session, writes: list[_Write]) -> list[int]:
    """Merge each write's triples into its blocks, and record the update of each tensor in the audit log; returns
    the values written per write.

    One statement each, for all writes: read the stored blocks touched; then, in one round trip on PostgreSQL,
    append the audit records, store the new and changed blocks, insert replaced values into the history and
    update the tensors' recorded ranges.
    """
    settled = [w.settle() for w in writes]
    keys = [(w.row.id, number) for w in settled for number in w.stored_candidates()]
    stored = repo.blocks_at(session, keys) if keys else {}
    now = now_us()
    blocks: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    spans: list[tuple[Tensor, int, int, int]] = []
    counts = []
    for write in settled:
        stamp, replaced = _merge(write, stored, now, blocks, history) if write.times.size else (0, 0)
        counts.append(replaced if write.erase else int(write.times.size))
        if write.erase and replaced:  # an erase leaves the recorded range as it was
            spans.append((write.row, write.row.time_min or 0, write.row.time_max or 0, stamp))
        elif not write.erase and write.times.size:
            spans.append((write.row, int(write.times[0]), int(write.times[-1]), stamp))
    with pipelined(session):  # nothing below reads a result: a round trip for all, not one each
        audit.record_each(session, "update", "tensor", [(w.row.id, [w.row.entity_id]) for w in writes])
        repo.put_blocks(session, blocks)
        repo.add_history(session, history)
        repo.widen_ranges(session, spans)
    # In the write's transaction: a write refused later (or rolled back) leaves the detectors' states as they were,
    # and raises no alert.
    written = [w for w in settled if not w.erase]
    firing.on_values(session, written, anomalies.score_written(session, written))
    return counts


def _stamp(now: int, row: Tensor, earlier: np.ndarray) -> int:
    """The write time of a write to ``row`` at ``now``: later than the tensor's last write and than the cells it
    changes (``earlier``: their stamps), even if the clock stepped back since, so every history entry is written
    before it is replaced and "as of" reads find it. The tensor is locked: no other write can stamp meanwhile."""
    return max(now, (row.stamped_us or 0) + 1, int(earlier.max(initial=0)) + 1)


def _merge(
    write: _Write,
    stored: Mapping[tuple[uuid.UUID, int], repo.StoredBlock],
    now: int,
    blocks: list[dict[str, Any]],
    history: list[dict[str, Any]],
) -> tuple[int, int]:
    """One write into its blocks, all touched blocks at once; collects the blocks to store and the replaced
    values for the history. Returns the write's stamp and the number of values it replaced."""
    row, sdef = write.row, write.sdef
    numbers, slot = write.blocks
    existing = [stored.get((row.id, number)) for number in numbers.tolist()]
    values, stamps = _touched(existing, sdef, row.block_steps)
    at = (slot, write.times - numbers[slot] * row.block_steps, write.cells)
    old = values[at]
    replaced = ~np.isnan(old) & (old != write.numbers)  # an erase (NaN) replaces every recorded value
    # A cell rewritten with its own value keeps its first write time, so "as of" reads still see it; a cell that
    # holds nothing and is erased stays as it is.
    differs = (np.isnan(old) & ~np.isnan(write.numbers)) | replaced
    stamp = _stamp(now, row, stamps[at][differs])
    history.extend(_replaced(write, old, stamps[at], replaced, stamp))
    values[at] = write.numbers
    stamps[tuple(index[differs] for index in at)] = stamp
    write.merged.update(zip(numbers.tolist(), values, strict=True))
    shape = codec.shape_key(sdef.shape)
    for k in np.unique(slot[differs]).tolist():  # a block whose cells all kept their values stays as it is
        key, data, stamp_bytes = codec.encode(shape, values[k], stamps[k])
        block = {"tensor_id": row.id, "block": int(numbers[k]), "shape": key, "data": data, "stamps": stamp_bytes}
        blocks.append(block)
    return stamp, int(replaced.sum())


def _touched(existing: list[repo.StoredBlock | None], sdef: SchemaDef, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and stamps of the touched blocks as (block, time, flat cell) arrays; empty where not stored."""
    width = math.prod(sdef.shape)
    values = np.full((len(existing), steps, width), np.nan)
    stamps = np.zeros((len(existing), steps, width), dtype=codec.STAMPS)
    for k, block in enumerate(existing):
        if block is not None:
            block_values, block_stamps = codec.decode(*block, sdef.shape)
            values[k], stamps[k] = block_values.reshape(steps, width), block_stamps.reshape(steps, width)  # type: ignore[union-attr]
    return values, stamps


def _replaced(
    write: _Write, old: np.ndarray, written_us: np.ndarray, replaced: np.ndarray, stamp: int
) -> Iterator[dict[str, Any]]:
    """History rows for the values this write replaces."""
    for j in np.flatnonzero(replaced).tolist():
        yield {
            "tensor_id": write.row.id,
            "time_index": int(write.times[j]),
            "labels": _labels_of(write.sdef, int(write.cells[j])),
            "value": float(old[j]),
            "written_us": int(written_us[j]),
            "replaced_us": stamp,
            "new_value": None if write.erase else float(write.numbers[j]),
        }


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
    end: int | str | datetime | None = None,
    labels: Mapping[str, str | Sequence[str]] | None = None,
    as_of: datetime | str | None = None,
    latest: bool = False,
    max_cells: int = 5_000_000,
) -> TensorView:
    """Values of a tensor: all of it, one time step, a range, some labels, or "as of" a write time.

    Time is selected as over REST, where ``start``/``end`` are ``from``/``to``; a time is an index or a
    timestamp (floored onto the grid):

    - ``time``: one step; the time dim is dropped. OutOfRange unless that step is in the recorded range.
    - ``start``/``end``: a range, inclusive at both ends like pandas ``.loc`` ("day 2 to day 5" is four steps);
      either end may be left open. A range partly outside the recorded range is clipped to it (the view's
      ``selection`` gives the ``from``/``to`` read and the ``requested`` ones); one entirely outside it is
      OutOfRange. With nothing recorded, a range reads no steps.
    - neither: every recorded step.

    A single label (a string) drops its axis; a list keeps it. ``latest`` gives, per cell, the last value
    recorded within the time selected and its time index (``times``, masked where none). ``as_of`` gives the
    values as they stood at that write time.
    """
    row = get_row(session, tensor_id, copy=True)
    moment = None if as_of is None else _moment(as_of)
    if moment is not None:
        row = _settled(session, row, to_us(moment, "as_of"))
    sdef = _schema(session, row)
    _readable(session, row, sdef)
    grid = _grid(row, sdef)
    meta = public(row, sdef)
    first, last, selected = _time_window(row, grid, time, start, end)
    if moment is not None:
        selected["as_of"] = moment
    cell = _one_cell(sdef, labels or {}) if time is not None and moment is None and not latest else None
    if cell is not None and max_cells >= 1:  # one value: no arrays to gather, no dims to drop
        assert first is not None  # a time outside the recorded range is OutOfRange
        value = _value_at(session, row, first, cell)
        return TensorView(meta, np.array(value), [], {}, grid, {**(labels or {}), **selected})
    picks, dropped = _label_picks(sdef, labels or {})
    cells = math.prod(len(p) for p in picks)
    steps = 0 if first is None or last is None else last - first + 1
    if steps * cells > max_cells:
        raise InvalidInput(
            f"this read would return {steps * cells} cells; at most {max_cells}: narrow it with from/to or labels"
        )
    if first is None or last is None:  # nothing recorded: no time steps, only the picked labels
        values = np.empty((*(len(p) for p in picks), 0))
        indices = np.empty(0, dtype=np.int64)
    else:
        values, indices = _gather(session, row, sdef, first, last, moment, picks)
    view = TensorView.build(meta, sdef, grid, values, indices, picks, dropped, selected)
    if latest:
        return view.latest()
    return view if time is None else view.single_time()


def _settled(session: Session, row: Tensor, cutoff: int) -> Tensor:
    """The tensor, read so that an "as of" ``cutoff`` read of it answers the same now as at any later time.

    A write stamps its values after taking the tensor's lock and later than the tensor's last write
    (``_stamp``), and commits before it lets the lock go. So a write this read cannot see yet stamps after
    ``row.stamped_us``: if the cutoff is before that, nothing unseen is as of it. Otherwise the read waits for
    the write in flight, if any, and reads the tensor again; any write after that stamps after now.
    """
    if cutoff < row.stamped_us:
        return row
    repo.wait_for_writes(session, row.id)
    fresh = repo.get(session, row.id, within=access.visible_ids(session), fresh=True)
    if fresh is None:
        raise NotFound(f"tensor {row.id} does not exist")
    return fresh


def _time_window(
    row: Tensor, grid: TimeGrid, time: Any, start: Any, end: Any
) -> tuple[int | None, int | None, dict[str, Any]]:
    """The first and last time index to read (None with nothing recorded), and the time part of ``selection``."""
    if time is not None:
        if start is not None or end is not None:
            raise InvalidInput("give either time or from/to, not both")
        index = grid.index(time)
        if row.time_min is None or row.time_max is None:
            raise OutOfRange(f"tensor {row.id} has no values recorded yet; nothing to read at time index {index}")
        if not row.time_min <= index <= row.time_max:
            raise OutOfRange(
                f"time index {index} is outside {row.time_min}..{row.time_max} recorded for tensor {row.id}"
            )
        return index, index, {"time": index}
    low = None if start is None else grid.index(start, "from")
    high = None if end is None else grid.index(end, "to")
    if low is not None and high is not None and low > high:
        raise InvalidInput(f"from ({low}) is after to ({high}); both ends are inclusive")
    requested = {"from": low, "to": high}
    if row.time_min is None or row.time_max is None:
        return None, None, {"from": None, "to": None, "requested": requested}
    if (high is not None and high < row.time_min) or (low is not None and low > row.time_max):
        asked = f"{'' if low is None else low}..{'' if high is None else high}"
        raise OutOfRange(f"time range {asked} is outside {row.time_min}..{row.time_max} recorded for tensor {row.id}")
    first = row.time_min if low is None else max(low, row.time_min)
    last = row.time_max if high is None else min(high, row.time_max)
    return first, last, {"from": first, "to": last, "requested": requested}


def _moment(as_of: object) -> datetime:
    """``as_of`` in UTC, from a datetime (naive = UTC) or an ISO 8601 timestamp."""
    if isinstance(as_of, str):
        return parse_timestamp(as_of, "as_of")
    if not isinstance(as_of, datetime):
        raise InvalidInput(f"as_of must be a datetime or an ISO 8601 timestamp, not {shown(as_of)}", code="not_a_time")
    return as_utc(as_of, "as_of")


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


def _one_cell(sdef: SchemaDef, labels: Mapping[str, str | Sequence[str]]) -> tuple[int, ...] | None:
    """The cell (label index per axis, in axis order) that ``labels`` picks with one label on every axis, checked
    as ``_label_picks`` checks it; None if they pick more or fewer cells."""
    if len(labels) != len(sdef.axes):
        return None
    at: dict[str, int] = {}
    for name, wanted in labels.items():
        if not isinstance(wanted, str):
            return None  # a list keeps its axis
        at[name] = sdef.label_index(sdef.axis(name), wanted)
    return tuple(at[axis.name] for axis in sdef.axes)  # every axis: as many distinct names, each an axis


def _gather(
    session: Session,
    row: Tensor,
    sdef: SchemaDef,
    first: int,
    last: int,
    as_of: datetime | None,
    picks: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The picked labels' values for time ``first..last`` as an array (*picked cells, time), as of ``as_of``.

    Labels are picked block by block, so memory follows the size of the answer, not of the tensor.
    """
    cutoff = None if as_of is None else to_us(as_of, "as_of")
    steps = row.block_steps
    values = np.full((last - first + 1, *(len(p) for p in picks)), np.nan)
    blocks = _stored_blocks(session, row, first // steps, last // steps, stamps=cutoff is not None)
    for number, shape, data, stamp_bytes in blocks:
        start = number * steps
        low, high = max(first - start, 0), min(last - start + 1, steps)  # the block's time steps asked for
        block_values, block_stamps = codec.decode(shape, data, stamp_bytes, sdef.shape, rows=slice(low, high))
        picked = np.ix_(np.arange(high - low), *picks)
        block_values = block_values[picked]
        if cutoff is not None and block_stamps is not None:
            block_values[block_stamps[picked] > cutoff] = np.nan
        values[start + low - first : start + high - first] = block_values
    if cutoff is not None:
        _restore_replaced(session, row, sdef, first, last, cutoff, picks, values)
    return np.moveaxis(values, 0, -1), np.arange(first, last + 1, dtype=np.int64)


def _value_at(session: Session, row: Tensor, index: int, cell: tuple[int, ...]) -> float:
    """The value of one cell at time ``index`` (NaN if not recorded): what ``_gather`` gives for one cell and one
    step, without building the arrays of a general read."""
    number, step = divmod(index, row.block_steps)
    for _, key, data, _ in _stored_blocks(session, row, number, number, stamps=False):
        return codec.value_at(key, data, cell, step)
    return math.nan  # no block stored there


StoredRange = list[tuple[int, str, bytes, bytes | None]]  # (number, shape, data, stamps or None) of stored blocks


def _stored_blocks(session: Session, row: Tensor, first: int, last: int, *, stamps: bool) -> Iterable[Any]:
    """The stored blocks ``first..last`` of ``row``, from the shared cache where it may hold them
    (``dust.engine.caches``): a range of at most ``CACHED_BLOCKS`` read in a read-only transaction (what a writing
    one reads may yet roll back). The key holds the tensor's version as this transaction read its row — the stamp
    of its last write or erase, its last change, its schema version — so an entry is found only while the blocks
    it holds are the tensor's. Longer reads stream from the database, a batch of blocks at a time."""
    shared = caches.of(session) if last - first < CACHED_BLOCKS and is_read_only(session) else None
    if shared is None:
        return repo.blocks(session, row.id, first, last, stamps=stamps)
    key = ("blocks", str(row.id), row.stamped_us, row.updated_at.isoformat(), row.schema_version, first, last, stamps)
    found = shared.find(session, caches.BLOCKS, key, _unpack_blocks)
    if found is not None:
        return found
    stored: StoredRange = [
        (n, shape, data, stamp) for n, shape, data, stamp in repo.blocks(session, row.id, first, last, stamps=stamps)
    ]
    size = sum(len(data) + len(stamp or b"") for _, _, data, stamp in stored) + 256
    shared.keep(session, caches.BLOCKS, key, stored, _pack_blocks, size)
    return stored


def _pack_blocks(stored: StoredRange) -> bytes:
    """The blocks as one byte string for Redis: their numbers, shapes and lengths in the header, bytes after."""
    header = [
        [number, shape, len(data), None if stamp is None else len(stamp)] for number, shape, data, stamp in stored
    ]
    joined = b"".join(data + (stamp or b"") for _, _, data, stamp in stored)
    return cache_store.pack({"blocks": header}, {"bytes": np.frombuffer(joined, dtype=np.uint8)})


def _unpack_blocks(raw: bytes) -> StoredRange:
    header, arrays = cache_store.unpack(raw)
    joined, at, stored = arrays["bytes"].tobytes(), 0, []
    for number, shape, data_length, stamps_length in header["blocks"]:
        data = joined[at : at + data_length]
        at += data_length
        stamp = None if stamps_length is None else joined[at : at + stamps_length]
        at += stamps_length or 0
        stored.append((int(number), str(shape), data, stamp))
    return stored


def _restore_replaced(
    session: Session,
    row: Tensor,
    sdef: SchemaDef,
    first: int,
    last: int,
    cutoff: int,
    picks: list[np.ndarray],
    values: np.ndarray,
) -> None:
    """Put back, into ``values`` (time, *picked cells), the values that stood at ``cutoff`` and were replaced since.

    As arrays: the history rows come as columns, each distinct cell's labels are looked up once, and one
    assignment puts every value back (at most one value of a cell stood at any moment).
    """
    times, labels, numbers = repo.standing_at(session, row.id, first, last, cutoff)
    if not times.size:
        return
    # Where each label of an axis sits among the picked ones (-1: not picked); a label picked twice is put
    # back at its first place and copied to the others below.
    places = []
    for axis, pick in zip(sdef.axes, picks, strict=True):
        place = np.full(len(axis.labels), -1, dtype=np.int64)
        place[pick[::-1]] = np.arange(len(pick))[::-1]
        places.append(place)
    distinct: dict[str, int] = {}
    keys = np.fromiter((distinct.setdefault(text, len(distinct)) for text in labels), dtype=np.int64, count=len(labels))
    at = np.array([_place_of(sdef, json.loads(text), places) for text in distinct], dtype=np.int64)[keys]
    kept = (at >= 0).all(axis=1)
    values[(times[kept] - first, *at[kept].T)] = numbers[kept]
    for position, (pick, place) in enumerate(zip(picks, places, strict=True)):
        firsts = place[pick]
        if (firsts != np.arange(len(pick))).any():
            values[:] = np.take(values, firsts, axis=position + 1)


def _place_of(sdef: SchemaDef, labels: list[str], places: list[np.ndarray]) -> list[int]:
    """The position among the picked cells of the cell named by ``labels``; -1s if it is not picked or unknown."""
    cell = _cell_of(sdef, labels)
    if cell is None:
        return [-1] * len(places)
    return [int(place[index]) for place, index in zip(places, cell, strict=True)]


def _cell_of(sdef: SchemaDef, labels: list[str]) -> tuple[int, ...] | None:
    try:
        return tuple(a.labels.index(label) for a, label in zip(sdef.axes, labels, strict=True))
    except ValueError:
        return None


def history(
    session: Session,
    tensor_id: uuid.UUID,
    start: Any = None,
    end: Any = None,
    *,
    limit: int = HISTORY_LIMIT,
    cursor: str | None = None,
) -> HistoryPage:
    """One page of the values that later writes replaced or erased at times ``start..end`` (inclusive), by time,
    then by when each was replaced; ``next_cursor`` gives the next page. A cursor is a position in that order
    (time index, replacement stamp, id), so pages neither repeat nor skip entries while writes add more (an
    entry added meanwhile is listed if it sorts after the position)."""
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_HISTORY_LIMIT}, not {limit}")
    after = _history_after(cursor)
    row = get_row(session, tensor_id)
    sdef = _schema(session, row)
    _readable(session, row, sdef)
    grid = _grid(row, sdef)
    first = (row.time_min or 0) if start is None else grid.index(start, "from")
    last = (row.time_max or 0) if end is None else grid.index(end, "to")
    found = repo.history(session, row.id, first, last, after=after, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    names = [a.name for a in sdef.axes]
    items = [
        HistoryEntry(
            time=h.time_index,
            labels=dict(zip(names, h.labels, strict=False)),
            value=h.value,
            written_at=from_us(h.written_us),
            replaced_at=from_us(h.replaced_us),
            new_value=h.new_value,
        )
        for h in found
    ]
    last_one = found[-1] if more else None
    position = None if last_one is None else [last_one.time_index, last_one.replaced_us, last_one.id]
    return HistoryPage(items=items, next_cursor=None if position is None else encode_cursor(_HISTORY_CURSOR, position))


def _history_after(cursor: str | None) -> tuple[int, int, int] | None:
    """The (time_index, replaced_us, id) a history cursor holds, checked: it reaches SQL."""
    if not cursor:
        return None
    position = decode_cursor(cursor, _HISTORY_CURSOR)
    ints = isinstance(position, list) and len(position) == 3 and all(type(n) is int for n in position)
    if not ints or not all(abs(n) < 2**63 for n in position):  # not a bool, a float or past BIGINT
        raise InvalidInput("cursor is not one this list returned; pass next_cursor unchanged")
    return position[0], position[1], position[2]
