"""The tensor methods of ``dust.Client`` that are more than one REST call or more than a model: reads as a
``TensorView``, writes split into batches the server takes (with a progress bar), arrays sent as cells."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from dust.client.http import Call, Plan
from dust.client.plans import decode, jsonable, segment, text
from dust.core.errors import InvalidInput, TooLarge, invalid_input
from dust.engine import tensors
from dust.engine.schemas import UNIT_SECONDS
from dust.engine.tensors import TensorCreate, TensorPublic, WriteResult
from dust.engine.timegrid import TimeGrid
from dust.engine.views import TensorView

SELECTION = {"time", "start", "end", "labels", "as_of", "latest"}
_TENSORS = TypeAdapter(list[TensorCreate])


def read_tensor(client: Any, tensor_id: uuid.UUID | str, **selection: Any) -> Plan[TensorView]:
    if "stop" in selection:
        raise TypeError("read_tensor() takes end= in place of stop=; it is inclusive: start=2, end=5 reads 4 steps")
    unknown = sorted(set(selection) - SELECTION)
    if unknown:
        raise TypeError(f"read_tensor() got unexpected keyword arguments {unknown}; it takes {sorted(SELECTION)}")
    params = [("time", "latest" if selection.get("latest") else selection.get("time"))]
    params += [("from", selection.get("start")), ("to", selection.get("end")), ("as_of", selection.get("as_of"))]
    params += list((selection.get("labels") or {}).items())
    query = tuple((name, text(value)) for name, value in params if value is not None)
    body = yield Call("GET", f"/tensors/{segment(tensor_id)}", query)
    view = view_of(body)
    client._remember(view.meta)
    return view


def view_of(body: dict[str, Any]) -> TensorView:
    """The ``TensorView`` the embedded ``read_tensor`` returns, from the JSON of ``GET /tensors/{id}``."""
    meta: TensorPublic = decode(TensorPublic, body)
    grid = TimeGrid(meta.time.origin, UNIT_SECONDS[meta.time.unit] * meta.time.step, meta.time.zone)
    selection = dict(body["selection"])
    if selection.get("as_of") is not None:
        selection["as_of"] = datetime.fromisoformat(selection["as_of"])
    times = None
    if "times" in body:
        recorded = np.asarray(body["times"], dtype=object)
        mask = np.array([v is None for v in recorded.reshape(-1)], dtype=bool).reshape(recorded.shape)
        times = np.ma.MaskedArray(np.where(mask, -1, recorded).astype(np.int64), mask=mask, fill_value=-1)
    values = np.asarray(body["values"], dtype=np.float64)  # JSON's null (not recorded) becomes NaN
    return TensorView(meta, values, list(body["dims"]), dict(body["coords"]), grid, selection, times)


def get_tensor(client: Any, tensor_id: uuid.UUID | str) -> Plan[TensorPublic]:
    body = yield Call("GET", f"/tensors/{segment(tensor_id)}/meta")
    meta: TensorPublic = client._remember(decode(TensorPublic, body))
    return meta


def create_tensors(client: Any, items: Iterable[TensorCreate | Mapping[str, Any]]) -> Plan[list[TensorPublic]]:
    try:
        checked = _TENSORS.validate_python(list(items))
    except ValidationError as problem:
        raise invalid_input([{**e, "loc": ("items", *e["loc"])} for e in problem.errors()]) from None
    made = []
    for item in checked:
        body = yield Call("POST", "/tensors", json=jsonable(item))
        made.append(client._remember(decode(TensorPublic, body)))
    return made


def write_values(client: Any, tensor_id: uuid.UUID | str, values: Any) -> Plan[WriteResult]:
    cells = _cells(values)
    written = 0
    for batch in client._batches(cells, f"tensor {tensor_id}"):
        written += yield from _write(client, tensor_id, batch)
    return WriteResult(written=written)


def _write(client: Any, tensor_id: uuid.UUID | str, cells: Sequence[Mapping[str, Any]]) -> Plan[int]:
    """Write ``cells`` in one request, or in halves while the server says a request is too large."""
    try:
        body = yield Call("POST", f"/tensors/{segment(tensor_id)}/values", json={"values": jsonable(cells)})
    except TooLarge:
        if len(cells) < 2:
            raise
        client._batch = max(1, len(cells) // 2)  # the server's limit is lower than ours: remember it
        first = yield from _write(client, tensor_id, cells[: len(cells) // 2])
        second = yield from _write(client, tensor_id, cells[len(cells) // 2 :])
        return first + second
    return int(body["written"])


def _cells(values: Any) -> list[Mapping[str, Any]]:
    """Cells as a list of mappings; a DataFrame's rows (``time``, a column per axis, ``value``; a ``timestamp``
    column beside ``time``, as ``TensorView.to_pandas`` makes it, is left out)."""
    if hasattr(values, "to_dict") and hasattr(values, "columns"):
        frame = values.drop(columns=["timestamp"]) if {"time", "timestamp"} <= set(values.columns) else values
        return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return list(values)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def write_array(client: Any, tensor_id: uuid.UUID | str, array: Any, start: int = 0) -> Plan[WriteResult]:
    meta = yield from _meta(client, tensor_id)
    raw = _numbers(array)
    if raw.ndim and raw.shape[:-1] != _shape(meta):  # the tensor may have moved to a later schema version since
        client._axes.pop(meta.id, None)
        meta = yield from _meta(client, tensor_id)
    return (yield from write_values(client, tensor_id, _array_cells(meta, raw, start)))


def write_arrays(client: Any, arrays: Mapping[uuid.UUID, Any], start: int = 0) -> Plan[dict[uuid.UUID, int]]:
    written = {}
    for tensor_id, array in arrays.items():
        result = yield from write_array(client, tensor_id, array, start)
        written[tensor_id] = result.written
    return written


def _meta(client: Any, tensor_id: uuid.UUID | str) -> Plan[TensorPublic]:
    """The tensor's metadata, kept from an earlier answer: a tensor's axes only ever gain labels at the end."""
    key = uuid.UUID(str(tensor_id))
    known = client._axes.get(key)
    if known is None:
        known = yield from get_tensor(client, key)
    return known


def _numbers(array: Any) -> np.ndarray:
    """``array`` as the embedded ``write_array`` takes it (``tensors.real_array``), each element of an object
    array checked here, before anything is sent."""
    raw = tensors.real_array(array)
    if raw.dtype.kind == "O":
        bad = [v for v in raw.reshape(-1).tolist() if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            raise InvalidInput(f"array must hold real numbers (NaN for cells to leave as they are), not {bad[0]!r}")
    return raw


def _shape(meta: TensorPublic) -> tuple[int, ...]:
    return tuple(len(axis.labels) for axis in meta.axes)


def _array_cells(meta: TensorPublic, raw: np.ndarray, start: int) -> list[dict[str, Any]]:
    """The recorded (non-NaN) cells of ``raw``, time by time; InvalidInput for a wrong shape or a number JSON
    cannot carry (beyond float64)."""
    shape = _shape(meta)
    if raw.ndim == 0 or raw.shape[:-1] != shape:
        raise InvalidInput(f"array shape {raw.shape} does not match (*{shape}, time)")
    with np.errstate(over="ignore"):
        by_time = np.asarray(raw, dtype=np.float64).reshape(math.prod(shape), raw.shape[-1]).T
    t, flat = np.nonzero(~np.isnan(by_time))
    numbers = by_time[t, flat]
    names = [axis.name for axis in meta.axes]
    labels = [axis.labels for axis in meta.axes]
    cells = []
    for time, cell, value in zip((t + start).tolist(), flat.tolist(), numbers.tolist(), strict=True):
        picked = np.unravel_index(cell, shape) if shape else ()
        cell_labels = {name: labels[i][int(p)] for i, (name, p) in enumerate(zip(names, picked, strict=True))}
        if not math.isfinite(value):
            where = ", ".join(f"{k}={v}" for k, v in cell_labels.items())
            raise InvalidInput(f"time {time}, {where}: value must be a finite number within float64 range")
        cells.append({"time": time, **cell_labels, "value": value})
    return cells


def chunks(cells: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for first in range(0, len(cells), size):
        yield cells[first : first + size]
