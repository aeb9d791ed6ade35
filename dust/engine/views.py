"""What a tensor read returns: values with named dimensions, convertible to NumPy, pandas and xarray."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from dust.engine.schemas import SchemaDef
    from dust.engine.tensors import TensorPublic
    from dust.engine.timegrid import TimeGrid


class TimeInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    unit: str
    step: int
    zone: str = "UTC"  # the schema's: day and week steps are local days of it
    origin: datetime
    start: int | None = None
    end: int | None = None  # the first and last time index recorded, inclusive (None: nothing yet)


@dataclass(frozen=True)
class TensorView:
    """Values of (part of) a tensor with dims in tensor order: the remaining axes, then ``time``.

    ``values`` is float64 with NaN for "not recorded". ``selection`` says what was read, in the REST names:
    each axis picked by a single label (its dim is dropped) with that label; ``time`` for one time step (the time
    dim is dropped), else ``from``/``to``, the first and last time index read (inclusive; ``None`` when nothing
    is recorded) with ``requested``, the ``{from, to}`` asked for (``None`` for an end left open), which the
    recorded range may have clipped; ``latest: True`` after ``latest``; ``as_of`` (UTC) when given.

    ``times`` (only after ``latest()``) is the time index of each value, as an int64 masked array of the values'
    shape, masked where never recorded (``times.tolist()`` gives ``None`` there, as REST's JSON does;
    ``times.mask`` says where; -1 is an index before the origin, so fill below ``MIN_TIME_INDEX`` for a plain
    array). ``timestamps`` names the same time steps as UTC datetimes.
    """

    meta: TensorPublic
    values: np.ndarray
    dims: list[str]
    coords: dict[str, list[Any]]
    grid: TimeGrid
    selection: dict[str, Any] = field(default_factory=dict)
    times: np.ma.MaskedArray | None = None

    @classmethod
    def build(
        cls,
        meta: TensorPublic,
        sdef: SchemaDef,
        grid: TimeGrid,
        values: np.ndarray,
        indices: np.ndarray,
        picks: list[np.ndarray],
        dropped: dict[str, str],
        selection: dict[str, Any],
    ) -> TensorView:
        """A view with every dim; ``dropped`` axes squeezed out, and ``selection`` (the time part) after them."""
        coords: dict[str, list[Any]] = {
            axis.name: [axis.labels[i] for i in pick.tolist()] for axis, pick in zip(sdef.axes, picks, strict=True)
        }
        coords["time"] = indices.tolist()
        dims = [a.name for a in sdef.axes] + ["time"]
        keep = [d for d in dims if d not in dropped]
        squeeze = tuple(i for i, d in enumerate(dims) if d in dropped)
        for name in dropped:
            coords.pop(name)
        values = values.squeeze(axis=squeeze) if squeeze else values
        return cls(meta, values, keep, coords, grid, {**dropped, **selection})

    def single_time(self) -> TensorView:
        """Drop the time dim after a read of one time step."""
        coords = dict(self.coords)
        coords.pop("time")
        return replace(self, values=self.values[..., 0], dims=self.dims[:-1], coords=coords)

    def latest(self) -> TensorView:
        """Per cell, the last recorded value, with ``times`` holding when it was recorded (masked if never)."""
        recorded = ~np.isnan(self.values)
        steps = self.values.shape[-1]
        if steps == 0:
            last = np.zeros(self.values.shape[:-1], dtype=np.int64)
            found = np.zeros(self.values.shape[:-1], dtype=bool)
        else:
            last = steps - 1 - np.argmax(recorded[..., ::-1], axis=-1)
            found = recorded.any(axis=-1)
        values = (
            np.take_along_axis(self.values, last[..., None], axis=-1)[..., 0] if steps else np.full(last.shape, np.nan)
        )
        index = np.asarray(self.coords["time"], dtype=np.int64)
        times = np.ma.MaskedArray(np.where(found, index[last] if steps else -1, -1), mask=~found, fill_value=-1)
        coords = dict(self.coords)
        coords.pop("time")
        return replace(
            self,
            values=np.where(found, values, np.nan),
            dims=self.dims[:-1],
            coords=coords,
            selection={**self.selection, "latest": True},
            times=times,
        )

    @property
    def timestamps(self) -> Any:
        """The UTC start of each time step the view names, shaped as the indices it names: a list along the time
        dim (``coords["time"]``); one datetime after a read of one step (``selection["time"]``); after
        ``latest()``, nested lists of ``times``' shape with ``None`` where never recorded."""
        if self.times is not None:
            return self._stamps_of(self.times)
        if "time" in self.dims:
            return [self.grid.timestamp(i) for i in self.coords["time"]]
        return self.grid.timestamp(self.selection["time"])

    def _stamps_of(self, times: np.ma.MaskedArray) -> Any:
        recorded = ~np.ma.getmaskarray(times)
        indices = np.ma.getdata(times)[recorded].tolist()
        known = {i: self.grid.timestamp(i) for i in set(indices)}  # cells mostly share a few last steps
        stamps = np.full(times.shape, None, dtype=object)
        stamps[recorded] = [known[i] for i in indices]
        return stamps.tolist()

    def to_numpy(self) -> np.ndarray:
        return self.values

    def to_xarray(self) -> xr.DataArray:
        import xarray as xr

        coords: dict[str, Any] = {d: self.coords[d] for d in self.dims if d != "time"}
        if "time" in self.dims:
            index = np.asarray(self.coords["time"], dtype=np.int64)
            coords["time"] = self.grid.timestamps(index)
            coords["time_index"] = ("time", index)
        attrs = {
            "tensor_id": str(self.meta.id),
            "entity_id": str(self.meta.entity_id),
            "schema": self.meta.schema_name,
        }
        # netCDF attributes are text or numbers: what was picked, read or clipped, but not `requested`
        attrs.update({k: _attr(v) for k, v in self.selection.items() if v is not None and k != "requested"})
        return xr.DataArray(self.values, dims=self.dims, coords=coords, name=self.meta.schema_name, attrs=attrs)

    def to_pandas(self) -> pd.DataFrame:
        """Long form: one row per recorded cell, a column per axis, ``time`` (the index), ``timestamp`` (UTC)
        and ``value``. Axes and time picked as a single label or step are columns too, so each row says
        which cell it is."""
        import pandas as pd

        recorded = np.flatnonzero(~np.isnan(self.values.reshape(-1)))
        at = dict(zip(self.dims, np.unravel_index(recorded, self.values.shape), strict=True)) if self.dims else {}
        columns: dict[str, Any] = {}
        for axis in (a.name for a in self.meta.axes):
            if axis in at:
                columns[axis] = np.asarray(self.coords[axis], dtype=object)[at[axis]]
            else:
                columns[axis] = np.full(recorded.size, self.selection[axis], dtype=object)
        columns["time"] = self._time_of(recorded, at.get("time"))
        columns["timestamp"] = pd.to_datetime(self.grid.timestamps(columns["time"])).tz_localize("UTC")
        columns["value"] = self.values.reshape(-1)[recorded]
        return pd.DataFrame(columns)

    def _time_of(self, recorded: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """The time index of each recorded cell: from the time dim, ``times`` after latest(), or the pick."""
        if positions is not None:
            return np.asarray(self.coords["time"], dtype=np.int64)[positions]
        if self.times is not None:
            return np.ma.getdata(self.times).reshape(-1)[recorded]
        return np.full(recorded.size, self.selection["time"], dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        """The REST shape as Python objects: metadata, dims, coords, values as nested lists with None for "not
        recorded", selection, timestamps (ISO 8601 ending in Z) and, after ``latest()``, times."""
        return orjson.loads(self.to_json_bytes())

    def to_json_bytes(self) -> bytes:
        """The REST body: each field the direct serialisation of the attribute of the same name. orjson writes the
        values' array straight out (NaN as null): reading a whole tensor costs no Python object per value."""
        # The metadata's ids and times as Python objects, which orjson writes as pydantic's JSON mode would: that
        # mode's dump took twice as long (8.9 against 3.9 µs, timeit)
        body: dict[str, Any] = self.meta.model_dump(by_alias=True)
        body.update(
            dims=self.dims,
            coords=self.coords,
            selection=self.selection,
            values=self.values.item() if self.values.ndim == 0 else np.ascontiguousarray(self.values),
            timestamps=self.timestamps,
        )
        if self.times is not None:
            body["times"] = self.times.tolist()  # None where masked
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z)


def _attr(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)
