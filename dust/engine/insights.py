"""Insights across tensors: one label of a schema aggregated over every tensor (or a cohort of their entities),
per absolute time step or per coarser bucket.

Blocks are read straight from storage and decoded in bulk with NumPy; a tensor's time index ``i`` lands at
``origin + i × step`` in the local wall-clock time of the schema's zone (UTC unless it names one), where every
step of a grid is equally long, so tensors with different origins line up on the schema's local steps. Buckets
are counted on the same wall clock: a day is a local day, a week starts on Monday, a month on its first day, and
a step counts in the bucket that holds its start.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, did_you_mean
from dust.engine import access, audit, caches, entities, relations, schemas
from dust.engine import blocks as codec
from dust.engine.schemas import SchemaDef
from dust.engine.timegrid import GRID_EPOCH, as_utc, from_wall_us, shown, wall_us
from dust.storage import cache_store
from dust.storage.db import is_read_only
from dust.storage.repositories import Visible
from dust.storage.repositories import insights as cohorts
from dust.storage.repositories import tensors as repo

AGGREGATES = ("mean", "min", "max", "sum", "count", "p50", "p95")
PERCENTILES = {"p50": 50.0, "p95": 95.0}
# Bucket lengths in seconds; 0 for the calendar's months and years, which vary.
BUCKETS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 0, "year": 0}
_CALENDAR = {"month": "datetime64[M]", "year": "datetime64[Y]"}
# Fixed-length buckets are counted from a local midnight that is a Monday, so weeks start on Mondays.
_ANCHOR_US = wall_us(GRID_EPOCH.replace(tzinfo=UTC), "UTC")
MAX_MEMBERS = 10_000  # entity ids a cohort may list: bound parameters of one IN (SQLite allows 32,766)
MAX_POINTS = 100_000  # points an answer may hold, gaps included: one JSON object each
CHUNK_ROWS = 5_000  # blocks decoded together: one frombuffer per chunk and shape
COMPACT_SLOTS = 4_000_000  # partial results kept before folding them, to bound memory on large schemas
# Sums of finite values may pass float64's largest (two of 1.5e308): a step whose sum did is summed again over
# values scaled by this power of two (exact, bar values under 1e-288), which no 2**64 values can overflow.
_SCALE = 2.0**-64
_OPEN = 2**62  # an end of a window left open, in µs: beyond any time a grid can hold, and safe to add a step to


def aggregate_by_step(
    session: Session,
    schema: str,
    label: str,
    agg: str = "mean",
    kind: str | None = None,
    axis: str | None = None,
    *,
    bucket: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    attributes: Mapping[str, Any] | None = None,
    related_to: uuid.UUID | None = None,
    relation: str | Sequence[str] | None = None,
    members: Collection[uuid.UUID] | None = None,
) -> list[dict[str, Any]]:
    """``[{time, value, count}]``: ``agg`` of ``label`` over the tensors of ``schema``, per time step or per
    ``bucket``, oldest first. ``time`` is the (UTC) start of the step or bucket; ``count`` the number of recorded
    values in it (NaN never counts). Empty buckets between the first and the last that hold values are gaps:
    ``value`` None, ``count`` 0.

    ``agg``: mean, min, max, sum, count, or the percentiles p50 and p95, NumPy's default (linear interpolation
    between the closest ranks). With several axes, every cell holding ``label`` on its axis counts; ``axis`` names
    the axis when the label is on more than one. Stored values are finite, and so are their mean, min, max and
    percentiles; a sum beyond float64 (±1.8e308) is inf.

    Which tensors: those of entities the acting principal may see, of ``kind``, whose attributes hold
    ``attributes`` (compared as typed JSON, as the entity list does), and, with ``related_to``, at the other end
    of a relation valid now from or to that entity (of the types in ``relation``, else of any type): "Dr House's
    patients" is ``related_to=<House>, relation="treats"``. ``members``: only these entities (a cohort picked by
    what no filter here says, e.g. an age or a latest value); the other filters and the access policy still apply.

    A de-identified reader (an analyst) gets a point only if at least ``min_cohort`` entities have a value behind
    it; other points come back suppressed (``value`` None, ``suppressed`` True), so narrowing a cohort down to
    one patient never shows that patient's values.

    ``bucket``: None for the schema's own steps, or a coarser unit of BUCKETS holding a whole number of them (a
    day schema by week, month or year). ``start``/``end``: only the steps or buckets holding them and those
    between (inclusive at both ends, as a timestamp is floored onto a tensor's grid).
    """
    if agg not in AGGREGATES:
        raise InvalidInput(
            f"agg '{agg}' is not supported; one of {', '.join(AGGREGATES)}{did_you_mean(agg, AGGREGATES)}"
        )
    sdef = schemas.get_def(session, schema)
    at = locate(sdef, label, axis)
    buckets = bucketing(sdef, bucket)
    window = _window(buckets, sdef.time.zone, start, end)
    scan = _Scan(sdef, at, *_scope(session, kind, attributes, related_to, relation, members), window)
    points = _shared_points(session, scan, agg, buckets)
    audit.record(session, "read", "aggregate", sdef.name, [related_to])
    return _with_gaps(points, buckets).as_dicts(sdef.time.zone)


def _shared_points(session: Session, scan: _Scan, agg: str, buckets: Bucketing) -> _Points:
    """The points, from the shared cache where it may hold them (``dust.engine.caches``): a scan of every tensor
    of the schema (or of a kind, which an entity never changes) by a principal who sees every entity, in a
    read-only transaction (what a writing one reads may yet roll back). The key holds a version read from the
    tensors' rows that every write, erase, creation and deletion changes (``data_version``): an entry is found
    only while the data it was made of is unchanged. A cohort (attributes, related_to, members) or a scoped
    principal's scan is computed each time: it depends on entities and relations."""
    shared = caches.of(session) if scan.entities is None and is_read_only(session) else None
    if shared is None:
        return _points(session, scan, agg, buckets)
    who = access.principal(session)
    suppressing = who.min_cohort if who is not None and who.deidentified else 0
    version = cohorts.data_version(session, scan.sdef.name)  # before the blocks: a write after it changes it
    schemas_epoch = caches.epoch(session, caches.SCHEMAS)  # a schema deleted and made again under its name
    asked = (scan.kind, scan.at, agg, buckets.name, scan.window, suppressing)
    key = ("aggregate", scan.sdef.name, scan.sdef.version, schemas_epoch, version, asked)
    found = shared.find(session, caches.AGGREGATES, key, _unpack_points)
    if found is not None:
        return found
    points = _points(session, scan, agg, buckets)
    size = sum(a.nbytes for a in (points.times, points.values, points.counts)) + 1024
    shared.keep(session, caches.AGGREGATES, key, points, _pack_points, size)
    return points


def _points(session: Session, scan: _Scan, agg: str, buckets: Bucketing) -> _Points:
    points = _percentiles(session, scan, agg, buckets) if agg in PERCENTILES else _folded(session, scan, agg, buckets)
    who = access.principal(session)
    if who is not None and who.deidentified:
        points = points.suppressed(_contributors(session, scan, buckets), who.min_cohort)
    return points


def _pack_points(points: _Points) -> bytes:
    arrays = {"times": points.times, "values": points.values, "counts": points.counts}
    if points.hidden is not None:
        arrays["hidden"] = points.hidden
    return cache_store.pack({}, arrays)


def _unpack_points(raw: bytes) -> _Points:
    _, arrays = cache_store.unpack(raw)
    return _Points(arrays["times"], arrays["values"], arrays["counts"], arrays.get("hidden"))


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


# --- what to read ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scan:
    """One aggregate's read: the schema, the label's (axis position, index), the block scan's kind and entity-id
    query, and the window: (first, last) step or bucket start to keep, µs of wall-clock time, inclusive."""

    sdef: SchemaDef
    at: tuple[int, int]
    kind: str | None
    entities: Visible | None
    window: tuple[int, int]


def _scope(
    session: Session,
    kind: str | None,
    attributes: Mapping[str, Any] | None,
    related_to: uuid.UUID | None,
    relation: str | Sequence[str] | None,
    members: Collection[uuid.UUID] | None = None,
) -> tuple[str | None, Visible | None]:
    """(kind, query of entity ids) for the block scan: the entities the principal may see, narrowed to the cohort
    asked for (which then carries the kind)."""
    visible = access.visible_ids(session)
    types = _relation_types(relation, related_to)
    filters = dict(attributes or {})
    if not filters and related_to is None and members is None:
        return kind, visible  # the plain scan, which SQLite runs on the driver's own cursor
    _check_attribute_filters(session, kind, filters)
    if related_to is not None:
        entities.get_row(session, related_to)  # 404 unless it exists and the principal may see it
    if members is not None and len(members) > MAX_MEMBERS:
        raise InvalidInput(f"a cohort of {len(members):,} named entities is too many; at most {MAX_MEMBERS:,}")
    return None, cohorts.cohort(session, kind, filters, visible, related_to, types, members)


def _relation_types(relation: str | Sequence[str] | None, related_to: uuid.UUID | None) -> list[str]:
    if relation is not None and related_to is None:
        raise InvalidInput(
            "relation needs related_to: the cohort is the entities related to that entity by relations of this type "
            "(related_to=<entity id>&relation=treats)"
        )
    names = relations.type_names(relation)
    for name in names:
        if not relations.TYPE_NAME.fullmatch(name):
            raise InvalidInput(
                f"relation {name[:70]!r} is not a relation type: lowercase letters, digits, '_' or '-', starting "
                "with a letter, at most 64 characters"
            )
    return names


def _check_attribute_filters(session: Session, kind: str | None, filters: dict[str, Any]) -> None:
    """The entity list's rules: at most MAX_ATTRIBUTE_FILTERS, each a JSON number, boolean or string, and none on
    a field a de-identified reader may not filter by."""
    if len(filters) > entities.MAX_ATTRIBUTE_FILTERS:
        raise InvalidInput(
            f"an aggregate may carry at most {entities.MAX_ATTRIBUTE_FILTERS} attribute filters; this one has "
            f"{len(filters)}"
        )
    for key, value in filters.items():
        scalar = isinstance(value, str | bool) or (isinstance(value, int | float) and math.isfinite(value))
        if not scalar:
            raise InvalidInput(f"attribute filter '{key}': compare with a string, a finite number or a boolean")
    entities.check_deidentified_filters(session, kind, None, filters)  # the entity list's rule, not a copy of it


# --- buckets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucketing:
    """Where a step's values go: into the step itself (``name`` None), or into the fixed-length bucket (counted
    from a Monday midnight) or calendar month or year that holds its start. Times are µs of wall-clock time."""

    name: str | None
    length: int  # µs of a step or of a fixed-length bucket; 0 for months and years

    def floor(self, times: np.ndarray) -> np.ndarray:
        if self.name is None:
            return times
        if not self.length:
            return _calendar(times, self.name).astype("datetime64[us]").astype(np.int64)
        return _ANCHOR_US + (times - _ANCHOR_US) // self.length * self.length

    def after(self, start: int) -> int:
        """The start of the bucket after the one starting at ``start``."""
        if self.length:
            return start + self.length
        following = _calendar(np.array([start]), str(self.name)) + 1
        return int(following.astype("datetime64[us]").astype(np.int64)[0])

    def grid(self, times: np.ndarray) -> np.ndarray:
        """Every bucket start from the first of ``times`` (sorted starts) to the last. Steps of tensors whose
        origins lie off each other's grid keep their own grids, each filled between its first and last step."""
        if not self.length:
            months = _calendar(times, str(self.name)).astype(np.int64)
            _check_points(int(months[-1] - months[0]) + 1, self.name)
            full = np.arange(months[0], months[-1] + 1).astype(_CALENDAR[str(self.name)])
            return full.astype("datetime64[us]").astype(np.int64)
        phase = (times - times[0]) % self.length
        grids = [times[phase == p] for p in np.unique(phase).tolist()]
        _check_points(sum((int(g[-1] - g[0]) // self.length + 1) for g in grids), self.name)
        return np.unique(np.concatenate([np.arange(g[0], g[-1] + 1, self.length) for g in grids]))


def _calendar(times: np.ndarray, name: str) -> np.ndarray:
    return times.astype("datetime64[us]").astype(_CALENDAR[name])


def _check_points(size: int, name: str | None) -> None:
    if size > MAX_POINTS:
        raise InvalidInput(
            f"this aggregate spans {size:,} {name or 'step'}s from its first value to its last; an answer holds at "
            f"most {MAX_POINTS:,}: narrow it with from/to, or choose a coarser bucket"
        )


def bucketing(sdef: SchemaDef, bucket: str | None) -> Bucketing:
    """The bucketing of ``bucket`` for the schema: None (or a bucket as long as a step) is its own steps; a
    coarser bucket must hold a whole number of steps, so that no step straddles two."""
    step = sdef.time.seconds
    steps = Bucketing(None, step * 1_000_000)
    if bucket is None:
        return steps
    allowed = [name for name in BUCKETS if _holds_steps(name, step)]
    coarser = ", ".join(allowed) or "none beyond its own steps (leave bucket out)"
    choices = f"allowed for schema {sdef.name} (steps of {_steps(sdef)}): {coarser}"
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket {shown(bucket)} is not a bucket; {choices}{did_you_mean(bucket, BUCKETS)}")
    if BUCKETS[bucket] and BUCKETS[bucket] < step:
        raise InvalidInput(f"bucket '{bucket}' is finer than the steps of schema {sdef.name}; {choices}")
    if not _holds_steps(bucket, step):
        raise InvalidInput(f"bucket '{bucket}' does not hold a whole number of schema {sdef.name}'s steps; {choices}")
    return steps if BUCKETS[bucket] == step else Bucketing(bucket, BUCKETS[bucket] * 1_000_000)


def _holds_steps(bucket: str, step: int) -> bool:
    """Whether a ``bucket`` holds a whole number of steps of ``step`` seconds (a month: of whole days)."""
    seconds = BUCKETS[bucket]
    return BUCKETS["day"] % step == 0 if not seconds else seconds >= step and seconds % step == 0


def _steps(sdef: SchemaDef) -> str:
    return f"{sdef.time.step} {sdef.time.unit}{'s' if sdef.time.step != 1 else ''}"


def _window(buckets: Bucketing, zone: str, start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """(first, last) start of a step or bucket to keep, µs of wall-clock time: those holding ``start`` and ``end``
    and all between. A step holds a moment from its start to the next step's."""
    low = None if start is None else _wall(as_utc(start, "from"), zone)
    high = None if end is None else _wall(as_utc(end, "to"), zone)
    if low is not None and high is not None and low > high:
        raise InvalidInput(f"from ({_z(start)}) is after to ({_z(end)}); both ends are inclusive")
    if buckets.name is None:  # steps of tensors off each other's grid: any step under way at `from` counts
        first = -_OPEN if low is None else low - buckets.length + 1
    else:
        first = -_OPEN if low is None else int(buckets.floor(np.array([low]))[0])
    last = _OPEN if high is None else int(buckets.floor(np.array([high]))[0])
    return first, last


def _wall(when: datetime, zone: str) -> int:
    """``wall_us``, for any time: one whose local time falls outside the years 1..9999 is before or after every
    step a tensor of the zone can hold."""
    try:
        return wall_us(when, zone)
    except OverflowError:
        return -_OPEN if when.year == 1 else _OPEN


def _z(when: datetime | None) -> str:
    return "" if when is None else as_utc(when).isoformat().replace("+00:00", "Z")


# --- folding -----------------------------------------------------------------------------------------------


@dataclass
class _Points:
    """A series as arrays: start of each step or bucket (µs of wall-clock time), value, count of values."""

    times: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    hidden: np.ndarray | None = None  # True where a point is suppressed (the small-cohort rule)

    def kept(self, window: tuple[int, int]) -> _Points:
        keep = (self.times >= window[0]) & (self.times <= window[1])
        return self if keep.all() else _Points(self.times[keep], self.values[keep], self.counts[keep])

    def suppressed(self, contributors: tuple[np.ndarray, np.ndarray], least: int) -> _Points:
        """These points, those with fewer than ``least`` entities behind them (``contributors``: bucket starts and
        entity counts) suppressed: their value NaN, marked in ``hidden``."""
        starts, entities = contributors
        behind = np.zeros(self.times.size, np.int64)
        found = np.isin(self.times, starts)
        behind[found] = entities[np.searchsorted(starts, self.times[found])]
        hidden = behind < least
        return _Points(self.times, np.where(hidden, np.nan, self.values), self.counts, hidden)

    def as_dicts(self, zone: str) -> list[dict[str, Any]]:
        hidden = self.hidden.tolist() if self.hidden is not None else [False] * self.times.size
        return [
            {"time": from_wall_us(t, zone), "value": v if c and not h else None, "count": c} | SUPPRESSED[h]
            for t, v, c, h in zip(self.times.tolist(), self.values.tolist(), self.counts.tolist(), hidden, strict=True)
        ]


SUPPRESSED: dict[bool, dict[str, bool]] = {True: {"suppressed": True}, False: {}}  # said only where it is so
_NONE = _Points(np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))


def _accumulator(scan: _Scan, agg: str, buckets: Bucketing) -> _Accumulator:
    """An accumulator for the scan, reading only blocks that may hold a step of a bucket in the window."""
    position, index = scan.at
    step = scan.sdef.time.seconds * 1_000_000
    first, last = scan.window
    until = _OPEN if last == _OPEN else buckets.after(last)  # steps start before the bucket after the last
    return _Accumulator(agg, step, scan.at, _sliced(scan.sdef, position, index), scan.sdef.time.zone, (first, until))


def _read(session: Session, scan: _Scan, acc: _Accumulator) -> None:
    blocks = repo.schema_block_columns(session, scan.sdef.name, scan.kind, CHUNK_ROWS, acc.part, visible=scan.entities)
    for origins, numbers, steps, shapes, data, _ in blocks:
        acc.add_columns(origins, numbers, steps, shapes, data)


def _contributors(session: Session, scan: _Scan, buckets: Bucketing) -> tuple[np.ndarray, np.ndarray]:
    """(step or bucket starts, how many entities have a value in each), for the small-cohort rule.

    An entity has one tensor of a schema, so entities are counted as tensors: each tensor's blocks are sampled
    on their own and only the distinct buckets each holds a value in are kept (memory per tensor and bucket,
    not per value)."""
    acc = _accumulator(scan, "count", buckets)
    held: dict[Any, list[np.ndarray]] = {}  # per tensor: the buckets it holds values in
    blocks = repo.schema_block_columns(
        session, scan.sdef.name, scan.kind, CHUNK_ROWS, acc.part, visible=scan.entities, tensors=True
    )
    for origins, numbers, steps, shapes, data, tensors in blocks:
        rows_of: dict[Any, list[int]] = {}
        for row, tensor in enumerate(tensors):
            rows_of.setdefault(tensor, []).append(row)
        for tensor, rows in rows_of.items():
            acc.samples = []
            acc.add_columns(
                [origins[i] for i in rows],
                [numbers[i] for i in rows],
                [steps[i] for i in rows],
                [shapes[i] for i in rows],
                [data[i] for i in rows],
            )
            if acc.samples:
                starts = buckets.floor(np.concatenate([times for times, _ in acc.samples]))
                held.setdefault(tensor, []).append(np.unique(starts))
    if not held:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # a tensor's blocks may come in several chunks: its buckets are made distinct before they are counted
    each = [np.unique(np.concatenate(parts)) for parts in held.values()]
    return np.unique(np.concatenate(each), return_counts=True)


def _folded(session: Session, scan: _Scan, agg: str, buckets: Bucketing) -> _Points:
    """mean, min, max, sum or count per step or bucket, from per-step partials folded together."""
    points = _NONE
    for scale in (1.0, _SCALE):
        acc = _accumulator(scan, agg, buckets)
        acc.scale = scale  # 1: as stored; then, if a sum overflowed, scaled down
        with np.errstate(over="ignore", invalid="ignore"):  # a sum past float64: summed again, scaled
            _read(session, scan, acc)
            again = _finished(acc, buckets).kept(scan.window)
        points = _mended(points, again) if scale != 1.0 else again
        if agg not in ("mean", "sum") or np.isfinite(points.values).all():
            break
    return points


def _finished(acc: _Accumulator, buckets: Bucketing) -> _Points:
    """The accumulator's partials per bucket, as the values of its aggregate."""
    if not acc.parts:
        return _NONE
    part = acc._fold()
    times, counts, values = part.starts, part.counts[:, 0], part.values[:, 0]
    if buckets.name is not None:
        times, counts, values = _rebucketed(buckets.floor(times), counts, values, acc.agg)
    if acc.agg == "mean":
        values = values / counts / acc.scale
    elif acc.agg == "sum":
        values = values / acc.scale  # inf for a sum beyond float64
    elif acc.agg == "count":
        values = counts.astype(np.float64)
    return _Points(times, values, counts)


def _rebucketed(keys: np.ndarray, counts: np.ndarray, values: np.ndarray, agg: str) -> tuple[np.ndarray, ...]:
    """Per-step partials (sums, or extremes for min and max) folded into their buckets (``keys``, in order)."""
    times, slot = np.unique(keys, return_inverse=True)
    total = np.bincount(slot, weights=counts, minlength=times.size).astype(np.int64)
    if agg in ("min", "max"):
        folded = np.full(times.size, np.nan)
        (np.fmin if agg == "min" else np.fmax).at(folded, slot, values)
    else:
        folded = np.bincount(slot, weights=values, minlength=times.size)
    return times, total, folded


def _mended(first: _Points, scaled: _Points) -> _Points:
    """``first``, its sums that overflowed float64 along the way replaced by those of the ``scaled`` scan (read
    moments later: a bucket it lacks keeps its value)."""
    again = dict(zip(scaled.times.tolist(), scaled.values.tolist(), strict=True))
    values = first.values.copy()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        values[i] = again.get(int(first.times[i]), values[i])
    return _Points(first.times, values, first.counts)


def _percentiles(session: Session, scan: _Scan, agg: str, buckets: Bucketing) -> _Points:
    """p50 or p95 per step or bucket: every recorded value is kept (16 bytes each, with its step) and sorted
    within its bucket; between the closest ranks the value is interpolated linearly, as NumPy's percentile."""
    acc = _accumulator(scan, agg, buckets)
    acc.samples = []
    _read(session, scan, acc)
    if not acc.samples:
        return _NONE
    keys = buckets.floor(np.concatenate([times for times, _ in acc.samples]))
    values = np.concatenate([values for _, values in acc.samples])
    first, last = scan.window
    inside = (keys >= first) & (keys <= last)
    keys, values = keys[inside], values[inside]
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, keys.size])
    return _Points(keys[starts], _ranked(values, starts, counts, PERCENTILES[agg] / 100), counts)


def _ranked(ordered: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of each group of ``ordered`` (sorted within groups at ``starts``, ``counts`` long), by
    NumPy's linear method: rank (n-1)·q, between the values at its floor and the next rank."""
    rank = (counts - 1) * q
    below = np.floor(rank).astype(np.int64)
    gamma = rank - below
    a = ordered[starts + below]
    b = ordered[starts + np.minimum(below + 1, counts - 1)]
    with np.errstate(over="ignore", invalid="ignore"):
        diff = b - a
        # NumPy's lerp: from the nearer end, so that equal ends give that value exactly
        lerp = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        # two values a whole float64 range apart: their difference overflows, their weighted sum does not
        return np.where(np.isfinite(diff), lerp, a * (1 - gamma) + b * gamma)


def _with_gaps(points: _Points, buckets: Bucketing) -> _Points:
    """``points`` with every empty step or bucket between the first and the last as a gap (count 0)."""
    if not points.times.size:
        return points
    grid = buckets.grid(points.times)
    if grid.size == points.times.size:
        return points
    at = np.searchsorted(grid, points.times)
    values, counts = np.full(grid.size, np.nan), np.zeros(grid.size, np.int64)
    values[at], counts[at] = points.values, points.counts
    hidden = None
    if points.hidden is not None:
        hidden = np.zeros(grid.size, bool)
        hidden[at] = points.hidden
    return _Points(grid, values, counts, hidden)


def _sliced(sdef: SchemaDef, position: int, index: int) -> tuple[str, int, int] | None:
    """For a label of the first axis: (shape key, label index, labels of the axis), which blocks of the latest
    shape are then read as just the label's slice of (``codec.label_slice``: the index-th of that many equal
    parts). Other blocks, and labels of other axes, read whole."""
    if position != 0:
        return None
    return (codec.shape_key(sdef.shape), index, sdef.shape[0])


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
    within: tuple[int, int] = (-_OPEN, _OPEN)  # blocks are read only if a step of theirs starts in [first, until)
    parts: list[_Part] = field(default_factory=list)
    pending: int = 0
    scale: float = 1.0  # values are summed times this: see _SCALE
    samples: list[tuple[np.ndarray, np.ndarray]] | None = None  # for percentiles: (step starts, values) recorded
    _origin_us: dict[datetime, int] = field(default_factory=dict)

    def add_columns(
        self, origins: list[datetime], numbers: list[int], steps: list[int], shapes: list[str], data: list[bytes]
    ) -> None:
        """One batch of blocks: each tensor's origin, the block's number, the tensor's steps a block, the block's
        shape and data."""
        for origin in set(origins).difference(self._origin_us):
            self._origin_us[origin] = wall_us(origin, self.zone)
        starts = np.fromiter(map(self._origin_us.__getitem__, origins), dtype=np.int64, count=len(origins))
        lengths = np.asarray(steps, dtype=np.int64) * self.step_us
        starts += np.asarray(numbers, dtype=np.int64) * lengths
        first, until = self.within
        inside = (starts < until) & (starts + lengths > first)
        if not inside.all():  # a window: blocks wholly outside it are never decoded
            rows = np.flatnonzero(inside).tolist()
            starts, shapes, data = starts[rows], [shapes[i] for i in rows], [data[i] for i in rows]
            steps = [steps[i] for i in rows]
        shapes, data = self._plain(shapes, data)
        kinds = set(zip(shapes, steps, strict=True))
        if len(kinds) == 1:  # the usual case: one shape and length, one frombuffer for the whole batch
            self._add_blocks(starts, *kinds.pop(), b"".join(data))
        else:
            for key, length in kinds:
                rows = [i for i, kind in enumerate(zip(shapes, steps, strict=True)) if kind == (key, length)]
                self._add_blocks(starts[rows], key, length, b"".join(data[i] for i in rows))
        if self.pending > COMPACT_SLOTS:
            self.parts = [self._fold()]
            self.pending = 0

    def _plain(self, shapes: list[str], data: list[bytes]) -> tuple[list[str], list[bytes]]:
        """Sparse blocks (dust.engine.blocks), which the database sends whole, in the plain form, cut to the
        label's slice where the database cuts the plain blocks of their shape (``part``)."""
        if not any(key.endswith(codec.SPARSE) for key in shapes):
            return shapes, data
        shapes, data = list(shapes), list(data)
        for i, key in enumerate(shapes):
            if key.endswith(codec.SPARSE):
                shapes[i], data[i] = codec.dense(key, data[i])
                if self.part is not None and shapes[i] == self.part[0]:
                    _, index, parts = self.part
                    length = len(data[i]) // parts
                    data[i] = data[i][index * length : (index + 1) * length]
        return shapes, data

    def _add_blocks(self, starts: np.ndarray, key: str, steps: int, data: bytes) -> None:
        picked = self._picked(starts.size, key, steps, data)
        if picked is None:
            return  # written under a version without this label: nothing recorded for it
        if self.samples is not None:
            self._sample(starts, steps, picked)
            return
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

    def _sample(self, starts: np.ndarray, steps: int, picked: np.ndarray) -> None:
        """Keep every recorded value of the blocks with the start of its step."""
        assert self.samples is not None
        valid = ~np.isnan(picked)
        times = np.broadcast_to(starts[:, None, None] + np.arange(steps, dtype=np.int64) * self.step_us, picked.shape)
        self.samples.append((times[valid], picked[valid]))

    def _picked(self, n: int, key: str, steps: int, data: bytes) -> np.ndarray | None:
        """The label's values in ``n`` blocks of shape ``key`` and ``steps`` steps as (block, cell, time), or None
        if it has none."""
        position, index = self.at
        if self.part is not None and key == self.part[0]:  # the database sent just the label's slice
            return np.frombuffer(data, dtype=codec.VALUES).reshape(n, -1, steps) if data else None
        stored = codec.parse_shape(key)
        if index >= stored[position]:
            return None
        cube = np.frombuffer(data, dtype=codec.VALUES).reshape(n, *stored, steps)
        return cube.take(index, axis=position + 1).reshape(n, -1, steps)

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
