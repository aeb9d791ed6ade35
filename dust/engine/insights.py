"""Insights across tensors: one label of a schema aggregated over every tensor, per absolute time step.

Blocks are read straight from storage and decoded in bulk with NumPy; a tensor's time index ``i`` lands at
``origin + i × step`` in the local wall-clock time of the schema's zone (UTC unless it names one), where every
step of a grid is equally long, so tensors with different origins line up on the schema's local steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, did_you_mean
from dust.engine import access, schemas
from dust.engine import blocks as codec
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import from_wall_us, wall_us
from dust.storage.repositories import tensors as repo

BLOCK = codec.BLOCK
AGGREGATES = ("mean", "min", "max", "sum", "count")
CHUNK_ROWS = 5_000  # blocks decoded together: one frombuffer per chunk and shape
COMPACT_SLOTS = 4_000_000  # partial results kept before folding them, to bound memory on large schemas
# Sums of finite values may pass float64's largest (two of 1.5e308): a step whose sum did is summed again over
# values scaled by this power of two (exact, bar values under 1e-288), which no 2**64 values can overflow.
_SCALE = 2.0**-64


def aggregate_by_step(
    session: Session,
    schema: str,
    label: str,
    agg: str = "mean",
    kind: str | None = None,
    axis: str | None = None,
) -> list[dict[str, Any]]:
    """``[{time, value, count}]``: ``agg`` of ``label`` over all tensors of ``schema`` (of entities of
    ``kind``), per time step, oldest first. ``count`` is the number of recorded values; NaN never counts.

    With several axes, every cell holding ``label`` on its axis counts; ``axis`` names the axis when the
    label is on more than one. Only the tensors of entities the acting principal may see count.

    Stored values are finite, and so are their ``mean``, ``min`` and ``max``; a ``sum`` beyond float64
    (±1.8e308) is ``inf``.
    """
    if agg not in AGGREGATES:
        raise InvalidInput(f"agg '{agg}' is not supported; one of {', '.join(AGGREGATES)}")
    sdef = schemas.get_def(session, schema)
    position, index = locate(sdef, label, axis)
    step_us = sdef.time.seconds * 1_000_000
    series: list[dict[str, Any]] = []
    for scale in (1.0, _SCALE):
        acc = _Accumulator(agg, step_us, (position, index), _sliced(sdef, position, index), zone=sdef.time.zone)
        acc.scale = scale  # 1: as stored; then, if a sum overflowed, scaled down
        blocks = repo.schema_block_columns(
            session, sdef.name, kind, CHUNK_ROWS, acc.part, visible=access.visible_ids(session)
        )
        with np.errstate(over="ignore", invalid="ignore"):  # a sum past float64: summed again, scaled
            for origins, numbers, shapes, data in blocks:
                acc.add_columns(origins, numbers, shapes, data)
            series = _mended(series, acc.series()) if series else acc.series()
        if agg not in ("mean", "sum") or all(math.isfinite(point["value"]) for point in series):
            break
    return series


def _mended(first: list[dict[str, Any]], scaled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``first``, its sums that overflowed float64 along the way replaced by those of the ``scaled`` scan."""
    again = {point["time"]: point["value"] for point in scaled}
    return [
        point if math.isfinite(point["value"]) else {**point, "value": again.get(point["time"], point["value"])}
        for point in first
    ]


def _sliced(sdef: SchemaDef, position: int, index: int) -> tuple[str, int, int] | None:
    """For a label of the first axis: (shape key, byte offset, length) of its slice in blocks of the latest
    shape, which are then read as just that slice. Other blocks, and labels of other axes, read whole."""
    if position != 0:
        return None
    return (codec.shape_key(sdef.shape), *codec.label_slice(sdef.shape, index))


def locate(sdef: SchemaDef, label: str, axis: str | None = None) -> tuple[int, int]:
    """(axis position, label index) of ``label`` in the schema's latest version."""
    if axis is not None:
        found = sdef.axis(axis)
        return sdef.axes.index(found), sdef.label_index(found, label)
    hits = [(p, a.labels.index(label)) for p, a in enumerate(sdef.axes) if label in a.labels]
    if len(hits) == 1:
        return hits[0]
    if hits:
        names = ", ".join(sdef.axes[p].name for p, _ in hits)
        raise InvalidInput(f"label '{label}' is on several axes of schema {sdef.name} ({names}); name the axis")
    every = [lab for a in sdef.axes for lab in a.labels]
    listing = "; ".join(f"{a.name}: {', '.join(a.labels[:20])}{', …' if len(a.labels) > 20 else ''}" for a in sdef.axes)
    raise InvalidInput(f"label '{label}' is not in schema {sdef.name}{did_you_mean(label, every)} (labels — {listing})")


@dataclass
class _Part:
    """Partial aggregates for ``width`` consecutive steps from each of ``starts`` (µs of wall-clock time, see
    ``timegrid.wall_us``).

    ``values`` holds sums for mean/sum/count and extremes (NaN = none) for min/max; ``counts`` the recorded
    values behind them. Parts fold together in any order, so chunks of blocks can be folded as they come.
    """

    starts: np.ndarray  # (n,)
    counts: np.ndarray  # (n, width)
    values: np.ndarray  # (n, width)


@dataclass
class _Accumulator:
    agg: str
    step_us: int
    at: tuple[int, int]  # (axis position, label index) to aggregate
    part: tuple[str, int, int] | None = None  # blocks of this shape come as just the label's slice: see _sliced
    zone: str = "UTC"  # starts are µs of local wall-clock time in it
    parts: list[_Part] = field(default_factory=list)
    pending: int = 0
    scale: float = 1.0  # values are summed times this: see _SCALE
    _origin_us: dict[datetime, int] = field(default_factory=dict)

    def add_columns(self, origins: list[datetime], numbers: list[int], shapes: list[str], data: list[bytes]) -> None:
        """One batch of blocks."""
        for origin in set(origins).difference(self._origin_us):
            self._origin_us[origin] = wall_us(origin, self.zone)
        starts = np.fromiter(map(self._origin_us.__getitem__, origins), dtype=np.int64, count=len(origins))
        starts += np.asarray(numbers, dtype=np.int64) * (BLOCK * self.step_us)
        kinds = set(shapes)
        if len(kinds) == 1:  # the usual case: one shape, one frombuffer for the whole batch
            self._add_blocks(starts, shapes[0], b"".join(data))
        else:
            for key in kinds:
                rows = [i for i, shape in enumerate(shapes) if shape == key]
                self._add_blocks(starts[rows], key, b"".join(data[i] for i in rows))
        if self.pending > COMPACT_SLOTS:
            self.parts = [self._fold()]
            self.pending = 0

    def _add_blocks(self, starts: np.ndarray, key: str, data: bytes) -> None:
        picked = self._picked(starts.size, key, data)
        if picked is None:
            return  # written under a version without this label: nothing recorded for it
        if self.scale != 1.0:
            picked = picked * self.scale
        valid = ~np.isnan(picked)
        combine = {"min": np.fmin, "max": np.fmax}.get(self.agg, np.add)
        if picked.shape[1] == 1:  # one cell per step (a single-axis schema): nothing to reduce across cells
            counts = valid[:, 0].view(np.uint8)
            values = picked[:, 0] if combine is not np.add else np.where(valid[:, 0], picked[:, 0], 0.0)
        else:
            counts = valid.sum(axis=1)
            values = combine.reduce(picked if combine is not np.add else np.where(valid, picked, 0.0), axis=1)
        self.parts.append(_merge_rows(starts, counts, values, combine))
        self.pending += self.parts[-1].counts.size

    def _picked(self, n: int, key: str, data: bytes) -> np.ndarray | None:
        """The label's values in ``n`` blocks of shape ``key`` as (block, cell, time), or None if it has none."""
        position, index = self.at
        if self.part is not None and key == self.part[0]:  # the database sent just the label's slice
            return np.frombuffer(data, dtype=codec.VALUES).reshape(n, -1, BLOCK) if data else None
        stored = codec.parse_shape(key)
        if index >= stored[position]:
            return None
        cube = np.frombuffer(data, dtype=codec.VALUES).reshape(n, *stored, BLOCK)
        return cube.take(index, axis=position + 1).reshape(n, -1, BLOCK)

    def _fold(self) -> _Part:
        """All parts as one of width 1: a partial per distinct time, in time order, empty times dropped."""
        step = self.step_us
        low = min(int(p.starts.min()) for p in self.parts)
        total = sum(p.counts.size for p in self.parts)
        on_grid = all(bool(((p.starts - low) % step == 0).all()) for p in self.parts)
        span = max((int(p.starts.max()) - low) // step + p.counts.shape[1] for p in self.parts)
        # Usually every tensor sits on one grid (origins a whole number of steps apart): a dense bincount.
        if on_grid and span < 4 * total + 1024:
            slots = [((p.starts - low) // step)[:, None] + np.arange(p.counts.shape[1]) for p in self.parts]
            slot = np.concatenate([s.ravel() for s in slots])
            size = span
            grid = low + np.arange(size, dtype=np.int64) * step
        else:
            times = [p.starts[:, None] + np.arange(p.counts.shape[1], dtype=np.int64) * step for p in self.parts]
            grid, slot = np.unique(np.concatenate([t.ravel() for t in times]), return_inverse=True)
            size = grid.size
        counts = np.concatenate([p.counts.ravel() for p in self.parts])
        values = np.concatenate([p.values.ravel() for p in self.parts])
        total_counts = np.rint(np.bincount(slot, weights=counts, minlength=size)).astype(np.int64)
        if self.agg in ("min", "max"):
            folded = np.full(size, np.nan)
            (np.fmin if self.agg == "min" else np.fmax).at(folded, slot, values)
        else:
            folded = np.bincount(slot, weights=values, minlength=size)
        keep = total_counts > 0
        return _Part(grid[keep], total_counts[keep][:, None], folded[keep][:, None])

    def series(self) -> list[dict[str, Any]]:
        if not self.parts:
            return []
        part = self._fold()
        counts, values = part.counts[:, 0], part.values[:, 0]
        if self.agg == "mean":
            values = values / counts / self.scale
        elif self.agg == "sum":
            values = values / self.scale  # inf for a sum beyond float64
        elif self.agg == "count":
            values = counts.astype(np.float64)
        return [
            {"time": from_wall_us(t, self.zone), "value": v, "count": c}
            for t, v, c in zip(part.starts.tolist(), values.tolist(), counts.tolist(), strict=True)
        ]


def _merge_rows(starts: np.ndarray, counts: np.ndarray, values: np.ndarray, combine: np.ufunc) -> _Part:
    """Blocks that start at the same time folded into one row: tensors sharing an origin share block starts,
    so a batch of thousands of blocks often shrinks to a few rows before anything is indexed by time."""
    order = np.argsort(starts, kind="stable")
    ordered = starts[order]
    first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if 2 * first.size > starts.size:  # mostly distinct starts: merging would cost more than it saves
        return _Part(starts, counts, values)
    return _Part(
        ordered[first],
        np.add.reduceat(counts[order], first, axis=0, dtype=np.int64),
        combine.reduceat(values[order], first, axis=0),
    )
