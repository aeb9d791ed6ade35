"""Property tests of the tensor engine (hypothesis) against a model: a dict {(time, cell): value} kept by the test
(tests/engine/properties.py has the model, the strategies and the profiles).

Checked: writes read back bit for bit through any selection (point reads of one cell among them, which take
their own way: ``tensors._value_at``); later writes win, in a batch and across batches;
a batch with one bad value changes nothing; reads "as of" each batch's write time give the state after that
batch; ``write_values``, ``write_array`` and ``write_arrays`` store the same; a tensor moved to a new schema
version keeps its values; and, differentially, a random run of writes and schema growth read "as of" any moment
gives what the model held then, with day and week steps on local days of a time zone (``schema_zones`` in
properties.py; the model steps by local dates, see ``Layout.at``).
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timezone
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine import schemas, tensors
from dust.engine.schemas import SchemaUpdate
from dust.engine.timegrid import MAX_TIME_INDEX, MIN_TIME_INDEX, from_us, to_us
from tests.engine.properties import (
    LABEL,
    ZONES,
    Batch,
    Case,
    Layout,
    Model,
    array_batches,
    assert_same,
    cases,
    cells,
    check_all,
    check_history,
    check_read,
    everything,
    examples,
    make,
    points,
    ranges_of,
    reads,
    value_batches,
    write,
)


@examples(ci=30, deep=1500)
@given(case=cases(), data=st.data())
def test_writes_read_back_through_any_selection(db: Dust, case: Case, data: st.DataObject) -> None:
    tensor_id, _ = make(db, case.layout)
    model = Model()
    for batch in case.batches:
        write(db, tensor_id, batch)
        model.write(batch.entries)
    check_all(db, tensor_id, case.layout, model)
    for _ in range(3):
        read = data.draw(reads(case.layout, model.span))
        check_read(db, tensor_id, case.layout, read, model.values(), model.span)
    for read in data.draw(points(case.layout, model), label="point reads"):
        check_read(db, tensor_id, case.layout, read, model.values(), model.span)


def test_an_array_of_nan_only_over_recorded_values_writes_nothing(db: Dust) -> None:
    # Found by the property above: an all-NaN array (nothing to write) once the tensor had values raised
    # IndexError in _Write.stored_candidates, and failed a whole write_arrays import with it.
    layout = Layout((("a", "b"),), ({},), "day", 1, datetime(2026, 1, 1, tzinfo=UTC), False, False)
    tensor_id, name = make(db, layout)
    db.write_values(tensor_id, [{"time": 3, "ax0": "a", "value": 1.5}])
    assert db.write_array(tensor_id, np.full((2, 4), np.nan), 1).written == 0
    other, _ = make(db, layout, name)
    db.write_values(other, [{"time": 0, "ax0": "b", "value": 2.0}])
    assert db.write_arrays({tensor_id: np.full((2, 1), np.nan), other: np.full((2, 1), 7.0)}) == {
        tensor_id: 0,
        other: 2,
    }
    model = Model()
    model.write([(3, (0,), 1.5)])
    check_all(db, tensor_id, layout, model)


def test_labels_picked_from_a_tensor_with_nothing_recorded_read_as_empty(db: Dust) -> None:
    # Found by the property above: with nothing recorded, a read kept every label of an axis whatever was
    # picked, so one label failed in TensorView.build ("cannot select an axis to squeeze out") and a list of
    # labels gave values of the wrong shape.
    layout = Layout((("a", "b"), ("x", "y", "z")), ({}, {}), "hour", 6, datetime(2026, 1, 1, tzinfo=UTC), False, True)
    tensor_id, _ = make(db, layout)
    one = db.read_tensor(tensor_id, labels={"ax0": "b"})
    nothing = {"from": None, "to": None, "requested": {"from": None, "to": None}}
    assert (one.dims, one.values.shape, one.selection) == (["ax1", "time"], (3, 0), {"ax0": "b", **nothing})
    some = db.read_tensor(tensor_id, labels={"ax1": ["z", "x"]}, latest=True)
    assert (some.dims, some.values.shape, some.coords["ax1"]) == (["ax0", "ax1"], (2, 2), ["z", "x"])
    assert np.isnan(some.values).all() and some.times is not None and some.times.mask.all()


def snapshot(db: Dust, tensor_id: uuid.UUID) -> tuple[np.ndarray, tuple[Any, Any], list[tuple[Any, ...]]]:
    """Values, recorded range and history of a tensor."""
    view = db.read_tensor(tensor_id)
    with db.session() as s:
        history = [
            tuple(h.model_dump().values()) for h in tensors.history(s, tensor_id, limit=tensors.MAX_HISTORY_LIMIT).items
        ]
    # Ordered by time and cell; a cell's replacements stay in the order they happened.
    history.sort(key=lambda h: (h[0], sorted(h[1].items())))
    return view.values, (view.meta.time.start, view.meta.time.end), history


@st.composite
def bad_items(draw: st.DrawFn, layout: Layout, good: dict[str, Any]) -> dict[str, Any]:
    """``good`` spoiled in one way: an unknown label, a missing or unknown field, a value that is not a finite
    number inside its range, a time before the origin or past the last index."""
    item = dict(good)
    axis = draw(st.sampled_from(layout.axes))
    bounds = {cell: layout.bounds(cell) for cell in np.ndindex(layout.shape)}
    ranged = [(cell, (low, high)) for cell, (low, high) in bounds.items() if math.isfinite(low) or math.isfinite(high)]
    kinds = ["label", "not a label", "no axis", "unknown field", "nan", "inf", "bool", "text value", "no time"]
    kinds += ["before the first index", "past the last index"] + (["out of range"] if ranged else [])
    kind = draw(st.sampled_from(kinds))
    note(f"bad item: {kind}")
    if kind == "label":
        labels = layout.labels[layout.axes.index(axis)]
        item[axis] = draw(LABEL.filter(lambda label: label not in labels))
    elif kind == "not a label":
        item[axis] = draw(st.sampled_from([0, None, ["a"]]))
    elif kind == "no axis":
        del item[axis]
    elif kind == "unknown field":
        item[draw(st.sampled_from(["unit", "values", "at"]))] = 1
    elif kind in ("nan", "inf"):
        item["value"] = draw(st.sampled_from([math.nan, np.float64("nan")] if kind == "nan" else [math.inf, -math.inf]))
    elif kind == "bool":
        item["value"] = draw(st.booleans())
    elif kind == "text value":
        item["value"] = "1.0"
    elif kind == "no time":
        del item["time"]
    elif kind == "before the first index":  # before the origin is backfill, down to MIN_TIME_INDEX
        item["time"] = draw(st.sampled_from([MIN_TIME_INDEX - 1, str(MIN_TIME_INDEX - 1), -(10**9)]))
    elif kind == "past the last index":
        item["time"] = MAX_TIME_INDEX + 1
    else:
        cell, (low, high) = draw(st.sampled_from(ranged))
        item.update(layout.labels_of(cell))
        outside = [math.nextafter(high, math.inf), high + abs(high) + 1] if math.isfinite(high) else []
        outside += [math.nextafter(low, -math.inf), low - abs(low) - 1] if math.isfinite(low) else []
        item["value"] = draw(st.sampled_from(outside))
    return item


@examples(ci=30, deep=1500)
@given(case=cases(batches=(0, 3), ranged=True), data=st.data())
def test_a_batch_with_one_bad_value_changes_nothing(db: Dust, case: Case, data: st.DataObject) -> None:
    layout = case.layout
    tensor_id, _ = make(db, layout)
    model = Model()
    for batch in case.batches:
        write(db, tensor_id, batch)
        model.write(batch.entries)
    before = snapshot(db, tensor_id)
    good = data.draw(value_batches(layout, case.base, case.pool))
    assert good.values is not None
    at = data.draw(st.integers(0, len(good.values)))
    spoiled = data.draw(bad_items(layout, good.values[min(at, len(good.values) - 1)]))
    with pytest.raises(InvalidInput) as raised:
        db.write_values(tensor_id, [*good.values[:at], spoiled, *good.values[at:]])
    assert [e["loc"] for e in raised.value.errors or []] == [["values", at]]
    after = snapshot(db, tensor_id)
    assert_same(after[0], before[0])
    assert after[1:] == before[1:]
    # Without the bad value the batch goes in, so it was refused for that value alone.
    write(db, tensor_id, good)
    model.write(good.entries)
    check_all(db, tensor_id, layout, model)


@st.composite
def bad_arrays(draw: st.DrawFn, layout: Layout, good: Batch) -> tuple[Any, int]:
    """``good``'s array spoiled: infinity in a cell, a value outside a range, a start before the first index, a
    wrong shape."""
    assert good.array is not None
    array, start = good.array.copy(), good.start
    ranged = [cell for cell in np.ndindex(layout.shape) if math.isfinite(layout.bounds(cell)[1])]
    kind = draw(st.sampled_from(["inf", "start", "shape", "no time"] + (["out of range"] if ranged else [])))
    note(f"bad array: {kind}")
    t = draw(st.integers(0, array.shape[-1] - 1))
    if kind == "inf":
        array[(*draw(cells(layout)), t)] = draw(st.sampled_from([math.inf, -math.inf]))
    elif kind == "out of range":
        cell = draw(st.sampled_from(ranged))
        array[(*cell, t)] = math.nextafter(layout.bounds(cell)[1], math.inf)
    elif kind == "start":
        start = MIN_TIME_INDEX - draw(st.integers(1, 100))
    elif kind == "shape":
        axis = draw(st.integers(0, len(layout.shape) - 1))
        array = np.concatenate([array, np.take(array, [0], axis=axis)], axis=axis)  # one label too many
    else:
        array = array[..., 0]
    return array, start


@examples(ci=20, deep=1000)
@given(case=cases(batches=(0, 3), ranged=True), data=st.data())
def test_an_array_with_one_bad_cell_changes_nothing(db: Dust, case: Case, data: st.DataObject) -> None:
    tensor_id, _ = make(db, case.layout)
    for batch in case.batches:
        write(db, tensor_id, batch)
    before = snapshot(db, tensor_id)
    good = data.draw(array_batches(case.layout, case.base))
    array, start = data.draw(bad_arrays(case.layout, good))
    with pytest.raises(InvalidInput):
        db.write_array(tensor_id, array, start)
    with pytest.raises(InvalidInput):
        db.write_arrays({tensor_id: array}, start)
    after = snapshot(db, tensor_id)
    assert_same(after[0], before[0])
    assert after[1:] == before[1:]


def clock(start: datetime) -> st.SearchStrategy[list[int]]:
    """Strictly increasing write stamps (µs since the epoch) from ``start``: one per batch."""
    gaps = st.lists(st.integers(1, 10**9), min_size=4, max_size=4)
    return gaps.map(lambda g: [int(s) + to_us(start) for s in np.cumsum(g)])


@examples(ci=25, deep=1200)
@given(case=cases(), stamps=clock(datetime(2031, 1, 1, tzinfo=UTC)), zone=ZONES, data=st.data())
def test_as_of_a_batch_reads_the_state_after_it(
    db: Dust, case: Case, stamps: list[int], zone: timezone, data: st.DataObject
) -> None:
    layout = case.layout
    tensor_id, _ = make(db, layout)
    model = Model()
    states = [Model()]  # the model before any batch, then after each
    for batch, stamp in zip(case.batches, stamps, strict=False):
        with mock.patch.object(tensors, "now_us", return_value=stamp):
            write(db, tensor_id, batch)
        model.write(batch.entries, stamp)
        states.append(copy.deepcopy(model))
    span, everywhere = model.span, everything(layout)
    for k, stamp in enumerate(stamps[: len(case.batches)]):
        # As of the batch's own write time: its values; a microsecond before: those of the batch before.
        check_read(db, tensor_id, layout, everywhere, states[k + 1].values(), span, as_of=from_us(stamp))
        check_read(db, tensor_id, layout, everywhere, states[k].values(), span, as_of=from_us(stamp - 1))
    # Any moment, in any zone, and any selection: the state of the last batch written by then.
    k = data.draw(st.integers(0, len(case.batches)), label="batches written by then")
    low = stamps[k - 1] if k else stamps[0] - 10**9
    high = stamps[k] - 1 if k < len(case.batches) else stamps[-1] + 10**9
    moment = from_us(data.draw(st.integers(low, high), label="as_of")).astimezone(zone)
    check_read(db, tensor_id, layout, data.draw(reads(layout, span)), states[k].values(), span, as_of=moment)
    check_history(db, tensor_id, layout, model)


@examples(ci=20, deep=1000)
@given(case=cases(arrays=False))
def test_write_values_write_array_and_write_arrays_store_the_same(db: Dust, case: Case) -> None:
    layout = case.layout
    by_values, name = make(db, layout)
    by_array, _ = make(db, layout, name)
    by_arrays, _ = make(db, layout, name)
    for batch in case.batches:
        settled = {(t, cell): v for t, cell, v in batch.entries}  # what an array can say: the last per cell
        start = min(t for t, _ in settled)
        array = np.full((*layout.shape, max(t for t, _ in settled) - start + 1), np.nan)
        for (t, cell), value in settled.items():
            array[(*cell, t - start)] = value
        write(db, by_values, batch)
        assert db.write_array(by_array, array, start).written == len(settled)
        assert db.write_arrays({by_arrays: array}, start) == {by_arrays: len(settled)}
    expected = snapshot(db, by_values)
    for other in (by_array, by_arrays):
        got = snapshot(db, other)
        assert_same(got[0], expected[0])
        assert got[1] == expected[1]
        assert [h[:3] + h[5:] for h in got[2]] == [h[:3] + h[5:] for h in expected[2]]  # write times differ


def new_to(old: tuple[str, ...]) -> Callable[[list[str]], list[str]]:
    return lambda labels: [label for label in labels if label not in old]


@st.composite
def new_versions(draw: st.DrawFn, layout: Layout) -> Layout:
    """``layout`` with 0-2 labels appended per axis and the ranges redrawn (each still containing 0)."""
    labels = tuple((*old, *draw(st.lists(LABEL, max_size=2, unique=True).map(new_to(old)))) for old in layout.labels)
    return replace(layout, labels=labels, ranges=tuple(draw(ranges_of(axis)) for axis in labels))


@examples(ci=20, deep=800)
@given(case=cases(batches=(1, 3)), stamps=clock(datetime(2032, 1, 1, tzinfo=UTC)), data=st.data())
def test_a_tensor_moved_to_a_new_schema_version_keeps_its_values(
    db: Dust, case: Case, stamps: list[int], data: st.DataObject
) -> None:
    old = case.layout
    tensor_id, name = make(db, old)
    model = Model()
    for batch, stamp in zip(case.batches, stamps, strict=False):
        with mock.patch.object(tensors, "now_us", return_value=stamp):
            write(db, tensor_id, batch)
        model.write(batch.entries, stamp)
    new = data.draw(new_versions(old), label="new version")
    assume(new.axes_json() != old.axes_json())  # an unchanged definition publishes nothing (tests/api/test_schemas.py)
    with db.session() as s:
        schemas.publish(s, name, SchemaUpdate.model_validate({"axes": new.axes_json()}))
    check_all(db, tensor_id, old, model)  # still on version 1 until moved
    with db.session() as s:
        tensors.update(s, tensor_id, tensors.TensorUpdate(schema_version=2))
    check_all(db, tensor_id, new, model)  # old values where they were; new labels not recorded
    for read in data.draw(points(new, model), label="point reads of blocks written before"):
        check_read(db, tensor_id, new, read, model.values(), model.span)
    before = copy.deepcopy(model)
    batch = data.draw(value_batches(new, case.base, case.pool), label="batch on the new version")
    with mock.patch.object(tensors, "now_us", return_value=stamps[-1]):
        write(db, tensor_id, batch)
    model.write(batch.entries, stamps[-1])
    check_all(db, tensor_id, new, model)
    check_read(db, tensor_id, new, everything(new), before.values(), model.span, as_of=from_us(stamps[-1] - 1))
    check_read(db, tensor_id, new, data.draw(reads(new, model.span)), model.values(), model.span)
    check_history(db, tensor_id, new, model)


@st.composite
def steps(draw: st.DrawFn) -> list[str]:
    """What a differential example does, in order: write a batch of values or an array, or grow the schema."""
    return draw(st.lists(st.sampled_from(["values", "values", "array", "grow"]), min_size=2, max_size=7))


@examples(ci=12, deep=800)
@given(case=cases(batches=(0, 0), zoned=True), plan=steps(), data=st.data())
def test_writes_schema_growth_and_as_of_interleaved_match_the_model(
    db: Dust, case: Case, plan: list[str], data: st.DataObject
) -> None:
    """Differential: a random run of writes (values or arrays) and schema growth (new versions appending labels,
    the tensor moved to each) at increasing write stamps, against the model. Then the tensor reads as the model
    says, and "as of" any moment (in any zone, through any selection of the latest layout) as the model said after
    the last write by then: labels added later read as not recorded then. Day and week steps may be local days of
    a time zone, often from an origin shortly before a change of the clocks: the model maps timestamps to steps
    and steps to ``timestamps`` by local dates (``Layout.at``), not through the engine's time grid."""
    layout = case.layout
    note(f"zone {layout.zone}, origin {layout.origin.astimezone(ZoneInfo(layout.zone)) if layout.zone else ''}")
    tensor_id, name = make(db, layout)
    model, version = Model(), 1
    stamp = to_us(datetime(2033, 1, 1, tzinfo=UTC))
    states: list[tuple[int, dict[tuple[int, tuple[int, ...]], float]]] = []  # (stamp, values after that write)
    for step in plan:
        if step == "grow":
            grown = data.draw(new_versions(layout), label="new version")
            if grown.axes_json() == layout.axes_json():
                continue  # an unchanged definition publishes nothing
            with db.session() as s:
                schemas.publish(s, name, SchemaUpdate.model_validate({"axes": grown.axes_json()}))
                version += 1
                tensors.update(s, tensor_id, tensors.TensorUpdate(schema_version=version))
            layout = grown
            continue
        batch = data.draw(
            value_batches(layout, case.base, case.pool) if step == "values" else array_batches(layout, case.base)
        )
        stamp += data.draw(st.integers(1, 10**9), label="µs since the write before")
        with mock.patch.object(tensors, "now_us", return_value=stamp):
            write(db, tensor_id, batch)
        model.write(batch.entries, stamp)
        states.append((stamp, model.values()))
    check_all(db, tensor_id, layout, model)
    check_history(db, tensor_id, layout, model)
    span = model.span
    first = states[0][0] if states else stamp
    check_read(db, tensor_id, layout, everything(layout), {}, span, as_of=from_us(first - 1))
    for k, (written, values) in enumerate(states):
        until = states[k + 1][0] - 1 if k + 1 < len(states) else written + 10**9
        moment = from_us(data.draw(st.integers(written, until), label=f"as_of after write {k}"))
        read = data.draw(reads(layout, span), label=f"read after write {k}")
        check_read(db, tensor_id, layout, read, values, span, as_of=moment.astimezone(data.draw(ZONES)))
