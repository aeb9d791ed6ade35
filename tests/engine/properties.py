"""Support for the property tests (test_*_properties.py): hypothesis profiles, strategies that make tensors
and writes, the model a tensor is checked against, and a read checked against the model.

The model of a tensor is a dict {(time index, cell): (value, write stamp)} and the list of replaced values;
a read is checked against it bit for bit (except the sign of zero, see ``assert_same``).

The ``db`` fixture is function-scoped and hypothesis runs many examples in one call of a test, so each example
makes its own schema, entity and tensor (or entities and relation types) under fresh names and looks only at
them: examples share the database without depending on each other. That is why the function-scoped-fixture
health check is suppressed, rather than a database made per example (a migrated PostgreSQL database per
example would cost more than the example).

Profiles: ``ci`` (the default) keeps the property tests to seconds; ``HYPOTHESIS_PROFILE=deep`` runs many more
examples. They are applied per test through ``examples``, not loaded globally, so other tests keep hypothesis'
defaults. Failing examples are kept under .pytest_cache/hypothesis and replayed first on the next run.
"""

from __future__ import annotations

import math
import os
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, note, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from dust.core.errors import InvalidInput, OutOfRange
from dust.embedded import Dust
from dust.engine import tensors
from dust.engine.schemas import UNIT_SECONDS
from dust.engine.timegrid import from_us

settings.register_profile(
    "ci",
    deadline=None,  # a database round trip is not a fixed cost
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # see the module docstring
    database=DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis")),
    print_blob=True,
)
settings.register_profile("deep", settings.get_profile("ci"))
PROFILE = "deep" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "ci"


def examples(ci: int, deep: int) -> settings:
    """This test's number of examples under the profile in use (the profiles are not loaded globally, so other
    modules keep hypothesis' defaults)."""
    return settings(settings.get_profile(PROFILE), max_examples=deep if PROFILE == "deep" else ci)


MAX_INDEX = 1_000_000  # the largest time index drawn (the grid allows 100,000,000; reads stay near the writes)
SPAN = 330  # time steps an example writes within, from its base index: five blocks and a bit
LAST_DAY = datetime(9999, 12, 29, tzinfo=UTC)  # the last time drawn, a margin short of what a tensor can hold
OFFSETS = st.one_of(st.sampled_from([0, 1, 62, 63, 64, 65, 127, 128, 129, 191, 192, 255]), st.integers(0, 255))
ZONES = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# Any label a schema takes as given: no commas, controls, surrogates, line separators or format characters
# (dust.engine.fields), already in NFC (a schema stores labels in NFC).
LABEL = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), exclude_characters=","),
    min_size=1,
    max_size=6,
).filter(lambda label: unicodedata.is_normalized("NFC", label))
Cell = tuple[int, ...]
Entry = tuple[int, Cell, float]  # time index, label index per axis, value


# --- the tensor's layout: axes, ranges, time grid, origin ---------------------------------------------------


@dataclass(frozen=True)
class Layout:
    labels: tuple[tuple[str, ...], ...]
    ranges: tuple[dict[str, tuple[float, float]], ...]  # each contains 0, so every cell accepts some value
    unit: str
    step: int
    origin: datetime  # as given, in any zone
    origin_in_schema: bool  # the schema's default origin rather than the tensor's own
    origin_as_text: bool
    zone: str | None = None  # the schema's IANA zone (day and week only); None: not given, UTC

    @property
    def days(self) -> int:
        """Local days a step of a zoned layout spans."""
        return self.step * (7 if self.unit == "week" else 1)

    @property
    def axes(self) -> list[str]:
        return [f"ax{i}" for i in range(len(self.labels))]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(labels) for labels in self.labels)

    @property
    def step_us(self) -> int:
        """A step's length, fixed for units without a zone (a zoned step is 23 or 25 hours across a change)."""
        return UNIT_SECONDS[self.unit] * self.step * 1_000_000

    @property
    def utc_origin(self) -> datetime:
        return self.origin.astimezone(UTC)

    @property
    def last_index(self) -> int:
        if self.zone is None:
            return min(MAX_INDEX, (LAST_DAY - self.utc_origin) // timedelta(microseconds=self.step_us))
        # Two steps short of LAST_DAY's local date, so that the step after the last one is still a datetime.
        return min(MAX_INDEX, (LAST_DAY.date() - self._wall().date()).days // self.days - 2)

    def _wall(self) -> datetime:
        """The origin's local wall-clock time in the layout's zone (naive)."""
        assert self.zone is not None
        return self.origin.astimezone(ZoneInfo(self.zone)).replace(tzinfo=None)

    def at(self, index: int) -> datetime:
        """The UTC instant step ``index`` starts at: fixed steps from the origin, or, in a zone, the origin's local
        time of day on the local date ``index × days`` after the origin's (the model of docs/api.md "Time", by date
        arithmetic and zoneinfo alone). A wall time the clocks skip is read with the offset before the change
        (fold 0: a skipped midnight starts its day when the clocks jump); one they repeat, at its first occurrence."""
        if self.zone is None:
            return self.utc_origin + timedelta(microseconds=index * self.step_us)
        wall = self._wall()
        day = wall.date() + timedelta(days=index * self.days)
        return datetime.combine(day, wall.time(), tzinfo=ZoneInfo(self.zone)).astimezone(UTC)

    def length_us(self, index: int) -> int:
        """Microseconds from the start of step ``index`` to the start of the next."""
        return (self.at(index + 1) - self.at(index)) // timedelta(microseconds=1)

    def index_of(self, moment: datetime) -> int:
        """The step holding ``moment``: a guess from local dates, then moved until at(i) <= moment < at(i + 1)."""
        if self.zone is None:
            return (moment - self.utc_origin) // timedelta(microseconds=self.step_us)
        local = moment.astimezone(ZoneInfo(self.zone)).date()
        index = (local - self._wall().date()).days // self.days
        while self.at(index) > moment:
            index -= 1
        while self.at(index + 1) <= moment:
            index += 1
        return index

    def bounds(self, cell: Cell) -> tuple[float, float]:
        """The valid range of a cell: the intersection of its labels' ranges."""
        low, high = -math.inf, math.inf
        for labels, ranges, index in zip(self.labels, self.ranges, cell, strict=True):
            lo, hi = ranges.get(labels[index], (-math.inf, math.inf))
            low, high = max(low, lo), min(high, hi)
        return low, high

    def labels_of(self, cell: Cell) -> dict[str, str]:
        return {name: labels[i] for name, labels, i in zip(self.axes, self.labels, cell, strict=True)}

    def axes_json(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "labels": list(labels), "ranges": {k: list(v) for k, v in ranges.items()}}
            for name, labels, ranges in zip(self.axes, self.labels, self.ranges, strict=True)
        ]

    def origin_arg(self) -> datetime | str:
        return self.origin.isoformat() if self.origin_as_text else self.origin


RANGE = st.tuples(  # a valid range that contains 0, so that every cell accepts some value
    st.floats(max_value=0, allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
)


def ranges_of(labels: Sequence[str]) -> st.SearchStrategy[dict[str, tuple[float, float]]]:
    return st.dictionaries(st.sampled_from(list(labels)), RANGE, max_size=len(labels))


# The days the clocks change in 2025 (and the zones drawn for day and week steps): origins are drawn near them.
CHANGES = {
    "UTC": [],
    "Europe/Berlin": [date(2025, 3, 30), date(2025, 10, 26)],
    "America/New_York": [date(2025, 3, 9), date(2025, 11, 2)],
    "Australia/Lord_Howe": [date(2025, 4, 6), date(2025, 10, 5)],  # half an hour, at 02:00
}
# Local times of day about the changes (02:00-03:00 in Berlin and New York, 01:30-02:30 on Lord Howe).
TIMES_OF_DAY = st.one_of(
    st.sampled_from([time(0), time(1), time(1, 30), time(2), time(2, 15), time(2, 30), time(3), time(23, 30)]),
    st.times(),
)


def schema_zones(unit: str) -> st.SearchStrategy[str | None]:
    """The IANA zone of a schema with ``unit``: for day and week steps none (the default, UTC) or one of
    ``CHANGES``, whose local days are 23 or 25 hours long across a change; no zone for the other units."""
    if unit not in ("day", "week"):
        return st.none()
    return st.sampled_from([None, *CHANGES])


@st.composite
def origins(draw: st.DrawFn, unit: str, zone: str | None) -> datetime:
    """An origin in any fixed offset: any time from 1900 to 2200, or in a zone, often a local time a few steps
    before one of its changes of the clocks (so that the steps written cross it)."""
    naive = draw(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
    if zone is not None and CHANGES[zone] and draw(st.integers(0, 2)):
        before = draw(st.integers(-3, 20 if unit == "day" else 60))
        naive = datetime.combine(draw(st.sampled_from(CHANGES[zone])) - timedelta(days=before), draw(TIMES_OF_DAY))
        return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(draw(ZONES))
    return naive.replace(tzinfo=draw(ZONES))


@st.composite
def layouts(draw: st.DrawFn, ranged: bool = False, zoned: bool = False) -> Layout:
    """1-3 axes of 1-5 labels, any time unit and step, an origin in any zone; ``ranged``: some label has a range;
    ``zoned``: day and week steps may be local days of a time zone (``schema_zones``)."""
    labels = draw(st.lists(st.lists(LABEL, min_size=1, max_size=5, unique=True), min_size=1, max_size=3))
    ranges = [draw(ranges_of(axis)) for axis in labels]
    if ranged and not any(ranges):
        axis = draw(st.integers(0, len(labels) - 1))
        ranges[axis] = {draw(st.sampled_from(labels[axis])): draw(RANGE)}
    unit = draw(st.sampled_from(list(UNIT_SECONDS)))
    zone = draw(schema_zones(unit)) if zoned else None
    return Layout(
        labels=tuple(tuple(axis) for axis in labels),
        ranges=tuple(ranges),
        unit=unit,
        step=draw(st.integers(1, 7)),
        origin=draw(origins(unit, zone)),
        origin_in_schema=draw(st.booleans()),
        origin_as_text=draw(st.booleans()),
        zone=zone,
    )


# --- writes: batches of entries, as write_values items or as an array ---------------------------------------


@dataclass
class Batch:
    entries: list[Entry]  # in write order; the model applies them in turn
    values: list[dict[str, Any]] | None = None  # write_values items, or
    array: np.ndarray | None = None  # a write_array array from ``start``
    start: int = 0


def cells(layout: Layout) -> st.SearchStrategy[Cell]:
    return st.tuples(*(st.integers(0, n - 1) for n in layout.shape))


def number(layout: Layout, cell: Cell) -> st.SearchStrategy[float]:
    low, high = layout.bounds(cell)
    return st.floats(
        min_value=None if low == -math.inf else low,
        max_value=None if high == math.inf else high,
        allow_nan=False,
        allow_infinity=False,
    )


@st.composite
def time_arg(draw: st.DrawFn, layout: Layout, index: int) -> Any:
    """Time index ``index`` in one of the forms the engine takes: an index (int, NumPy, text, integral float) or
    a timestamp anywhere inside the step (aware in any zone, naive = UTC, ISO 8601 text)."""
    forms = ["int", "numpy", "text", "float", "aware", "naive", "iso", "iso_z"]
    form = draw(st.sampled_from(forms + (["local", "local_iso"] if layout.zone else [])))
    if form in ("int", "numpy", "text", "float"):
        return {"int": index, "numpy": np.int64(index), "text": f" {index}", "float": float(index)}[form]
    length, hour = layout.length_us(index), 3_600_000_000
    edges = [0, 1, length - 1, hour - 1, hour, length - hour - 1, length - hour]  # a step's ends, an hour in
    into = draw(st.one_of(st.sampled_from([e for e in edges if 0 <= e < length]), st.integers(0, length - 1)))
    moment = layout.at(index) + timedelta(microseconds=into)
    assert layout.index_of(moment) == index  # the model is consistent: at() and index_of() agree
    if form == "naive":
        return moment.replace(tzinfo=None)
    if form == "iso_z":
        return moment.isoformat().replace("+00:00", "Z")
    local = moment.astimezone(ZoneInfo(layout.zone) if form.startswith("local") else draw(ZONES))
    return local if form in ("aware", "local") else local.isoformat()


@st.composite
def value_arg(draw: st.DrawFn, value: float) -> Any:
    """``value`` as a float, a NumPy float or (when integral) an int: all read back as the same float64."""
    forms = [value, np.float64(value)]
    if value.is_integer() and abs(value) < 2**53 and math.copysign(1, value) > 0:
        forms.append(int(value))
    return draw(st.sampled_from(forms))


@st.composite
def value_batches(draw: st.DrawFn, layout: Layout, base: int, pool: list[int]) -> Batch:
    """1-12 items at times from ``pool`` (offsets from ``base``), so that cells are often written twice."""
    entries: list[Entry] = []
    for _ in range(draw(st.integers(1, 12))):
        cell = draw(cells(layout))
        entries.append((base + draw(st.sampled_from(pool)), cell, draw(number(layout, cell))))
    values = [
        {
            "time": draw(time_arg(layout, t)),
            **dict(zip(layout.axes, layout.labels_of(cell).values(), strict=True)),
            "value": draw(value_arg(v)),
        }
        for t, cell, v in entries
    ]
    return Batch(entries, values=values)


@st.composite
def array_batches(draw: st.DrawFn, layout: Layout, base: int) -> Batch:
    """An array of 1-70 steps from a start near ``base`` with some cells recorded, NaN elsewhere."""
    start = base + draw(OFFSETS)
    steps = draw(st.integers(1, 70))
    keys = draw(st.lists(st.tuples(st.integers(0, steps - 1), cells(layout)), max_size=20, unique=True))
    array = np.full((*layout.shape, steps), np.nan)
    entries: list[Entry] = []
    for t, cell in keys:
        value = draw(number(layout, cell))
        array[(*cell, t)] = value
        entries.append((start + t, cell, value))
    return Batch(sorted(entries), array=array, start=start)


def bases(layout: Layout) -> st.SearchStrategy[int]:
    """Where an example writes: at 0, at a block boundary, or anywhere up to the last index."""
    top = layout.last_index - SPAN
    return st.one_of(st.just(0), st.integers(0, top // 64).map(lambda k: 64 * k), st.integers(0, top))


@dataclass
class Case:
    layout: Layout
    base: int
    pool: list[int]
    batches: list[Batch]


@st.composite
def cases(
    draw: st.DrawFn, batches: tuple[int, int] = (1, 4), arrays: bool = True, ranged: bool = False, zoned: bool = False
) -> Case:
    layout = draw(layouts(ranged, zoned))
    base = draw(bases(layout))
    pool = draw(st.lists(OFFSETS, min_size=1, max_size=6, unique=True))
    kinds = st.sampled_from(["values", "values", "array"] if arrays else ["values"])
    made = []
    for _ in range(draw(st.integers(*batches))):
        kind = draw(kinds)
        made.append(draw(value_batches(layout, base, pool) if kind == "values" else array_batches(layout, base)))
    return Case(layout, base, pool, made)


def make(db: Dust, layout: Layout, name: str | None = None) -> tuple[uuid.UUID, str]:
    """A new tensor under ``layout`` (its schema too, in the layout's zone, unless ``name`` names one made
    before)."""
    if name is None:
        name = f"s{uuid.uuid4().hex}"
        grid: dict[str, Any] = {"unit": layout.unit, "step": layout.step}
        if layout.zone is not None:
            grid["zone"] = layout.zone
        if layout.origin_in_schema:
            grid["origin"] = layout.origin_arg()
        db.create_schema({"name": name, "axes": layout.axes_json(), "time": grid})
    entity = db.create_entity(kind="probe", name=name)
    origin = None if layout.origin_in_schema else layout.origin_arg()
    return db.create_tensor(entity.id, name, origin=origin).id, name


def write(db: Dust, tensor_id: uuid.UUID, batch: Batch) -> None:
    """Write ``batch``; ``written`` counts the cells written, a cell given twice once."""
    distinct = len({(t, cell) for t, cell, _ in batch.entries})
    if batch.values is not None:
        assert db.write_values(tensor_id, batch.values).written == distinct
    else:
        assert batch.array is not None
        assert db.write_array(tensor_id, batch.array, batch.start).written == distinct


# --- the model ----------------------------------------------------------------------------------------------


@dataclass
class Model:
    """What the tensor holds: (time, cell) → (value, write stamp), and the history of replaced values."""

    cells: dict[tuple[int, Cell], tuple[float, int]] = field(default_factory=dict)
    history: list[tuple[int, Cell, float, int, int, float]] = field(default_factory=list)

    def write(self, entries: Sequence[Entry], stamp: int = 0) -> None:
        settled = {(t, cell): v for t, cell, v in entries}  # the last entry per cell wins
        for key, value in settled.items():
            old = self.cells.get(key)
            if old is not None and old[0] == value:
                continue  # a cell rewritten with its own value keeps its first write time
            if old is not None:
                self.history.append((key[0], key[1], old[0], old[1], stamp, value))
            self.cells[key] = (value, stamp)

    def values(self) -> dict[tuple[int, Cell], float]:
        return {key: value for key, (value, _) in self.cells.items()}

    @property
    def span(self) -> tuple[int | None, int | None]:
        times = [t for t, _ in self.cells]
        return (min(times), max(times)) if times else (None, None)


def dense(
    values: Mapping[tuple[int, Cell], float], first: int, last: int, picks: Sequence[Sequence[int]]
) -> np.ndarray:
    """The model's values over time ``first..last`` for the picked labels, as (*picked, time)."""
    where = [{label: position for position, label in enumerate(pick)} for pick in picks]
    array = np.full((*(len(p) for p in picks), last - first + 1), np.nan)
    for (t, cell), value in values.items():
        if first <= t <= last and all(c in w for c, w in zip(cell, where, strict=True)):
            array[(*(w[c] for c, w in zip(cell, where, strict=True)), t - first)] = value
    return array


def assert_same(actual: Any, expected: np.ndarray) -> None:
    """The same float64 bits, NaN (not recorded) where the model has none; except the sign of zero.

    The engine compares values as numbers: 0.0 written over -0.0 replaces nothing (no history, no new write
    time), and which of the two a read then gives depends on whether another cell of the block changed in that
    write; SQLite's REAL column also returns a replaced -0.0 from the history as 0.0. So zeros are compared
    as numbers.
    """
    actual = np.asarray(actual, dtype=np.float64)
    np.testing.assert_array_equal(actual, expected)
    recorded = ~np.isnan(expected)
    bits = (actual[recorded] + 0.0).view(np.int64), (expected[recorded] + 0.0).view(np.int64)  # -0.0 + 0.0 is 0.0
    assert (bits[0] == bits[1]).all(), f"bits differ at {np.argwhere(recorded)[bits[0] != bits[1]].tolist()}"


# --- reads --------------------------------------------------------------------------------------------------


@dataclass
class Read:
    kwargs: dict[str, Any]
    picks: list[list[int]]
    dropped: list[int]  # axes picked by a single label
    time: int | None  # a single time index (drops the time dim)
    start: int | None
    end: int | None  # inclusive, as start
    latest: bool


@st.composite
def reads(draw: st.DrawFn, layout: Layout, span: tuple[int | None, int | None]) -> Read:
    """A selection near the recorded range ``span``: all, one step (``time``) or a range (``start``/``end``),
    with one label, several or all per axis, and sometimes ``latest``."""
    low, high = span
    near = st.integers(max(0, (low or 0) - 70), min(layout.last_index, (high or 0) + 70))
    kwargs: dict[str, Any] = {}
    mode = draw(st.sampled_from(["all", "time", "range"]))
    time = start = end = None
    if mode == "time":
        time = draw(near if draw(st.booleans()) else st.integers(low or 0, high or 0))
        kwargs["time"] = draw(time_arg(layout, time))
    if mode == "range":
        start, end = draw(st.one_of(st.none(), near)), draw(st.one_of(st.none(), near))
        for key, index in (("start", start), ("end", end)):
            if index is not None:
                kwargs[key] = draw(time_arg(layout, index))
    picks: list[list[int]] = []
    dropped: list[int] = []
    labels: dict[str, str | list[str]] = {}
    for position, (name, names) in enumerate(zip(layout.axes, layout.labels, strict=True)):
        how = draw(st.sampled_from(["all", "one", "some"]))
        if how == "all":
            picks.append(list(range(len(names))))
        elif how == "one":
            picks.append([draw(st.integers(0, len(names) - 1))])
            dropped.append(position)
            labels[name] = names[picks[-1][0]]
        else:
            picks.append(draw(st.lists(st.integers(0, len(names) - 1), min_size=1, unique=True)))
            labels[name] = [names[i] for i in picks[-1]]
    if labels:
        kwargs["labels"] = labels
    latest = draw(st.integers(0, 4)) == 0
    if latest:
        kwargs["latest"] = True
    return Read(kwargs, picks, dropped, time, start, end, latest)


@st.composite
def points(draw: st.DrawFn, layout: Layout, model: Model) -> list[Read]:
    """Point reads (one time step, one label on every axis: ``tensors._value_at``'s answer): of recorded
    cells, of cells never recorded at a recorded time, and of times on either side of the recorded range."""
    low, high = model.span
    near = st.integers(max(0, (low or 0) - 3), min(layout.last_index, (high or 0) + 3))
    recorded = sorted(model.cells)
    found: list[Read] = []
    for _ in range(draw(st.integers(1, 6))):
        if recorded and draw(st.booleans()):
            time, cell = draw(st.sampled_from(recorded))
        else:
            time, cell = draw(near), tuple(draw(st.integers(0, n - 1)) for n in layout.shape)
        labels = {name: layout.labels[i][j] for i, (name, j) in enumerate(zip(layout.axes, cell, strict=True))}
        kwargs = {"time": draw(time_arg(layout, time)), "labels": labels}
        found.append(Read(kwargs, [[j] for j in cell], list(range(len(cell))), time, None, None, False))
    return found


def window(read: Read, span: tuple[int | None, int | None]) -> tuple[int, int] | type[Exception] | None:
    """The time steps the read covers, the error it must raise, or None (nothing recorded, nothing read)."""
    low, high = span
    if read.time is not None:
        if low is None or high is None or not low <= read.time <= high:
            return OutOfRange
        return read.time, read.time
    if read.start is not None and read.end is not None and read.start > read.end:
        return InvalidInput
    if low is None or high is None:
        return None
    first = low if read.start is None else read.start
    last = high if read.end is None else read.end
    if last < low or first > high:
        return OutOfRange
    return max(first, low), min(last, high)


def selection(layout: Layout, read: Read, expected: tuple[int, int] | None, **extra: Any) -> dict[str, Any]:
    """The ``selection`` a read gives: labels picked one by one, then the time steps read and asked for."""
    said: dict[str, Any] = {layout.axes[i]: layout.labels[i][read.picks[i][0]] for i in read.dropped}
    if read.time is not None:
        said["time"] = read.time
    else:
        first, last = expected or (None, None)
        said.update({"from": first, "to": last, "requested": {"from": read.start, "to": read.end}})
    if "as_of" in extra:
        said["as_of"] = extra["as_of"].astimezone(UTC)
    if read.latest:
        said["latest"] = True
    return said


def check_read(
    db: Dust,
    tensor_id: uuid.UUID,
    layout: Layout,
    read: Read,
    values: Mapping[tuple[int, Cell], float],
    span: tuple[int | None, int | None],
    **extra: Any,
) -> None:
    """``read`` gives what the model's ``values`` say, over the tensor's recorded range ``span``."""
    if currently_in_test_context():  # also used by plain tests
        note(f"read {read.kwargs} {extra}")
    expected = window(read, span)
    if isinstance(expected, type):
        with pytest.raises(expected) as raised:
            db.read_tensor(tensor_id, **read.kwargs, **extra)
        assert type(raised.value) is expected
        return
    view = db.read_tensor(tensor_id, **read.kwargs, **extra)
    assert (view.meta.time.start, view.meta.time.end) == span
    assert view.meta.time.origin == layout.utc_origin
    assert view.meta.time.zone == (layout.zone or "UTC")
    first, last = expected or (0, -1)
    array = dense(values, first, last, read.picks)
    kept = [i for i in range(len(layout.axes)) if i not in read.dropped]
    for i in kept:
        assert view.coords[layout.axes[i]] == [layout.labels[i][j] for j in read.picks[i]]
    assert view.selection == selection(layout, read, expected, **extra)
    if read.latest:
        latest, times = np.full(array.shape[:-1], np.nan), np.full(array.shape[:-1], -1)
        for at in np.ndindex(latest.shape):  # per cell, the last recorded step of the window
            recorded = np.flatnonzero(~np.isnan(array[at]))
            if recorded.size:
                latest[at], times[at] = array[at][recorded[-1]], first + recorded[-1]
        times = times.squeeze(axis=tuple(read.dropped))
        assert view.dims == [layout.axes[i] for i in kept]
        assert view.times is not None
        np.testing.assert_array_equal(view.times.filled(-1), times)
        np.testing.assert_array_equal(np.ma.getmaskarray(view.times), times == -1)
        stamps = np.array([None if i < 0 else layout.at(i) for i in times.reshape(-1).tolist()], dtype=object)
        assert view.timestamps == stamps.reshape(times.shape).tolist()
        assert_same(view.values, latest.squeeze(axis=tuple(read.dropped)))
        return
    array = array.squeeze(axis=tuple(read.dropped))
    if read.time is not None:
        assert view.dims == [layout.axes[i] for i in kept]
        assert view.timestamps == layout.at(read.time)
        assert_same(view.values, array[..., 0])
        return
    assert view.dims == [*(layout.axes[i] for i in kept), "time"]
    assert view.coords["time"] == list(range(first, last + 1))
    assert view.timestamps == [layout.at(i) for i in range(first, last + 1)]
    assert_same(view.values, array)


def everything(layout: Layout) -> Read:
    return Read({}, [list(range(n)) for n in layout.shape], [], None, None, None, False)


def check_all(db: Dust, tensor_id: uuid.UUID, layout: Layout, model: Model, **extra: Any) -> None:
    check_read(db, tensor_id, layout, everything(layout), model.values(), model.span, **extra)


def check_history(db: Dust, tensor_id: uuid.UUID, layout: Layout, model: Model) -> None:
    with db.session() as s:
        page = tensors.history(s, tensor_id, limit=tensors.MAX_HISTORY_LIMIT)
        got = [(h.time, h.labels, h.value, h.written_at, h.replaced_at, h.new_value) for h in page.items]
    expected = [
        (t, layout.labels_of(cell), old, from_us(written), from_us(replaced), new)
        for t, cell, old, written, replaced, new in model.history
    ]

    def key(h: tuple[Any, ...]) -> tuple[Any, ...]:
        return (h[0], h[4], sorted(h[1].items()))

    assert sorted(got, key=key) == sorted(expected, key=key)
