"""What a tensor read returns: values with named dimensions, convertible to NumPy, pandas and xarray."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from dust.engine.schemas import SchemaDef
    from dust.engine.tensors import TensorPublic
    from dust.engine.timegrid import TimeGrid


class TimeInfo(BaseModel):
    unit: str
    step: int
    origin: datetime
    start: int | None = None
    stop: int | None = None


@dataclass(frozen=True)
class TensorView:
    """Values of (part of) a tensor with dims in tensor order: the remaining axes, then ``time``.

    ``selection`` names the dims dropped by picking a single label or time step; ``times`` (only after
    ``latest()``) gives the time index each value was recorded at.
    """

    meta: TensorPublic
    values: np.ndarray
    dims: list[str]
    coords: dict[str, list[Any]]
    grid: TimeGrid
    selection: dict[str, Any] = field(default_factory=dict)
    times: np.ndarray | None = None

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
    ) -> TensorView:
        coords: dict[str, list[Any]] = {
            axis.name: [axis.labels[i] for i in pick.tolist()] for axis, pick in zip(sdef.axes, picks, strict=True)
        }
        coords["time"] = indices.tolist()
        dims = [a.name for a in sdef.axes] + ["time"]
        keep = [d for d in dims if d not in dropped]
        squeeze = tuple(i for i, d in enumerate(dims) if d in dropped)
        for name in dropped:
            coords.pop(name)
        return cls(meta, values.squeeze(axis=squeeze) if squeeze else values, keep, coords, grid, dict(dropped))

    def single_time(self, drop: bool) -> TensorView:
        """Drop the time dim after a read of one time step."""
        if not drop:
            return self
        coords = dict(self.coords)
        index = coords.pop("time")[0]
        return replace(
            self,
            values=self.values[..., 0],
            dims=self.dims[:-1],
            coords=coords,
            selection={**self.selection, "time": index},
        )

    def latest(self) -> TensorView:
        """Per cell, the last recorded value, with ``times`` holding when it was recorded (-1 if never)."""
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
        times = np.where(found, index[last] if steps else -1, -1)
        coords = dict(self.coords)
        coords.pop("time")
        return replace(self, values=np.where(found, values, np.nan), dims=self.dims[:-1], coords=coords, times=times)

    @property
    def timestamps(self) -> list[datetime]:
        return [self.grid.timestamp(i) for i in self.coords.get("time", [])]

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
        attrs.update({k: str(v) for k, v in self.selection.items()})
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
            return self.times.reshape(-1)[recorded]
        return np.full(recorded.size, self.selection["time"], dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        """The REST shape as Python objects: metadata, dims, coords, values as nested lists with None for "not
        recorded"."""
        return orjson.loads(self.to_json_bytes())

    def to_json_bytes(self) -> bytes:
        """The REST body. orjson writes the values' array straight out (NaN as null): reading a whole tensor
        costs no Python object per value."""
        body: dict[str, Any] = self.meta.model_dump(mode="json", by_alias=True)
        body.update(
            dims=self.dims,
            coords=self.coords,
            selection=self.selection,
            values=self.values.item() if self.values.ndim == 0 else np.ascontiguousarray(self.values),
        )
        if "time" in self.dims:
            body["timestamps"] = [t.isoformat() for t in self.timestamps]
        if self.times is not None:
            body["times"] = _nested(self.times, self.times < 0)
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _nested(values: np.ndarray, missing: np.ndarray) -> Any:
    """Nested lists (or a scalar, for no dims) with None where ``missing``."""
    as_objects = values.astype(object)
    as_objects[missing] = None
    return as_objects.tolist()
