"""Tensors through the Python API (``dust.Dust``): bulk writes, blocks, exports to NumPy, pandas and xarray."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sqlalchemy import select, text

from dust.core.errors import Conflict, InvalidInput, NotFound, OutOfRange, TooLarge
from dust.embedded import Dust
from dust.engine import access, entities, schemas, tensors
from dust.engine import blocks as codec
from dust.engine.entities import EntityCreate
from dust.engine.paging import encode_cursor
from dust.engine.schemas import SchemaUpdate
from dust.engine.tensors import TensorCreate
from dust.engine.timegrid import from_us
from dust.storage.db import AFTER_COMMIT, make_sessionmaker
from dust.storage.models import AuditRecord, Tensor, TensorBlock
from tests.api.conftest import ONE_BACKEND

Member = Callable[[str], access.Principal]
ORIGIN = "2026-01-01T00:00:00Z"
METRICS = ["heart_rate", "systolic_bp", "temperature"]
VITALS = {
    "name": "vitals",
    "axes": [{"name": "metric", "labels": METRICS, "ranges": {"heart_rate": [0, 300]}}],
    "time": {"unit": "day", "step": 1},
}
POSTURE = {
    "name": "posture",
    "axes": [
        {"name": "metric", "labels": ["systolic_bp", "diastolic_bp"]},
        {"name": "position", "labels": ["sitting", "standing", "lying"]},
    ],
    "time": {"unit": "hour", "step": 6},
}


def new_tensor(db: Dust, schema: dict = VITALS) -> uuid.UUID:
    """Jane's tensor under ``schema`` (created if missing), origin 2026-01-01."""
    if schema["name"] not in {s.name for s in db.schemas()}:
        db.create_schema(schema)
    jane = db.create_entity(kind="patient", name="Jane Doe")
    return db.create_tensor(jane.id, schema["name"], origin=ORIGIN).id


@pytest.fixture
def vitals(db: Dust) -> uuid.UUID:
    return new_tensor(db)


def test_write_array_stores_every_number_and_skips_nan(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": 1, "metric": "temperature", "value": 37.0}])
    array = np.array([[70.0, 71.0, 72.0], [120.0, np.nan, 122.0], [np.nan, np.nan, np.nan]])
    assert db.write_array(vitals, array).written == 5
    stored = db.read_tensor(vitals).to_numpy()
    assert stored.shape == (3, 3)
    np.testing.assert_array_equal(stored[:2], array[:2])
    # The NaN cell at time 1 left the earlier temperature in place.
    np.testing.assert_array_equal(stored[2], [np.nan, 37.0, np.nan])


def test_write_array_starts_at_the_given_time_index(db: Dust, vitals: uuid.UUID) -> None:
    db.write_array(vitals, np.full((3, 2), 80.0), start=10)
    view = db.read_tensor(vitals)
    assert view.coords["time"] == [10, 11]
    assert view.meta.time.start == 10 and view.meta.time.end == 11


@pytest.mark.parametrize(
    ("array", "start", "error"),
    [
        (np.full((2, 1), 60.0), 0, InvalidInput),  # wrong number of labels
        (np.full((3,), 60.0), 0, InvalidInput),  # no time axis
        (np.array([[400.0], [1.0], [1.0]]), 0, InvalidInput),  # heart_rate above 300
        (np.array([[np.inf], [1.0], [1.0]]), 0, InvalidInput),
        (np.full((3, 1), 60.0), -100_000_001, OutOfRange),  # below the least index
        (np.full((3, 2), 60.0), 100_000_000, OutOfRange),  # its second step is past the last index
        (np.array([["a"], ["b"], ["c"]]), 0, InvalidInput),
    ],
)
def test_write_array_refuses_bad_arrays_and_writes_nothing(
    db: Dust, vitals: uuid.UUID, array: np.ndarray, start: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        db.write_array(vitals, array, start=start)
    assert db.read_tensor(vitals).values.size == 0


def test_an_array_of_no_time_steps_writes_nothing(db: Dust, vitals: uuid.UUID) -> None:
    assert db.write_array(vitals, np.empty((3, 0))).written == 0
    assert db.write_arrays({vitals: np.empty((3, 0))}) == {vitals: 0}
    assert db.read_tensor(vitals).values.size == 0


def test_a_value_must_lie_in_the_range_of_every_label_of_its_cell(db: Dust) -> None:
    bounded = {
        "name": "bounded",
        "axes": [
            {"name": "metric", "labels": ["a", "b"], "ranges": {"a": [0, 100]}, "units": {"a": "mg"}},
            {"name": "site", "labels": ["x", "y"], "ranges": {"y": [50, 200]}},
        ],
    }
    tensor_id = new_tensor(db, bounded)
    with pytest.raises(InvalidInput, match=r"y 20 is outside its valid range 50\.\.200"):
        db.write_values(tensor_id, [{"time": 0, "metric": "a", "site": "y", "value": 20}])
    with pytest.raises(InvalidInput, match=r"a 150 mg is outside its valid range 0\.\.100 mg"):
        db.write_values(tensor_id, [{"time": 0, "metric": "a", "site": "y", "value": 150}])
    array = np.full((2, 2, 1), np.nan)
    array[1, 1, 0] = 10  # b has no range, but y does
    with pytest.raises(InvalidInput, match="y 10"):
        db.write_array(tensor_id, array)
    accepted = [("a", "y", 75), ("b", "x", -5), ("b", "y", 200), ("a", "x", 0)]
    db.write_values(tensor_id, [{"time": 0, "metric": m, "site": s, "value": v} for m, s, v in accepted])
    assert db.read_tensor(tensor_id, time=0).to_numpy().tolist() == [[0, 75], [-5, 200]]


def test_values_spanning_several_blocks_read_back_exactly(db: Dust, vitals: uuid.UUID) -> None:
    # Blocks of 3 cells hold 256 steps: 0 and 255 share the first, 256 opens the second, 800 sits in the fourth.
    times = [0, 255, 256, 800]
    db.write_values(vitals, [{"time": t, "metric": "heart_rate", "value": 50 + t / 10} for t in times])
    view = db.read_tensor(vitals, labels={"metric": "heart_rate"})
    assert view.coords["time"] == list(range(801))
    recorded = np.flatnonzero(~np.isnan(view.to_numpy()))
    assert recorded.tolist() == times
    assert view.to_numpy()[times].tolist() == [50 + t / 10 for t in times]
    # A read starting inside a later block sees only its part.
    tail = db.read_tensor(vitals, start=256, end=799, labels={"metric": "heart_rate"}).to_numpy()
    assert tail[0] == 75.6 and np.isnan(tail[1:]).all()


def test_a_large_bulk_write_round_trips(db: Dust, vitals: uuid.UUID) -> None:
    rng = np.random.default_rng(7)
    array = rng.uniform(30, 200, size=(3, 500))
    array[rng.random(array.shape) < 0.3] = np.nan
    db.write_array(vitals, array)
    np.testing.assert_array_equal(db.read_tensor(vitals).to_numpy(), array)


def test_to_xarray_has_named_dims_and_datetime_time(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": 2, "metric": "systolic_bp", "value": 128}])
    db.write_values(vitals, [{"time": 4, "metric": "heart_rate", "value": 70}])
    xr = db.read_tensor(vitals).to_xarray()
    assert xr.dims == ("metric", "time")
    assert list(xr.coords["metric"].values) == METRICS
    assert np.issubdtype(xr.coords["time"].dtype, np.datetime64)
    assert xr.coords["time"].values[0] == np.datetime64("2026-01-03T00:00:00")
    assert xr.coords["time_index"].values.tolist() == [2, 3, 4]
    assert float(xr.sel(metric="systolic_bp", time="2026-01-03")) == 128
    assert xr.attrs["tensor_id"] == str(vitals)


def test_to_pandas_is_long_form_with_one_row_per_recorded_cell(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(
        vitals,
        [
            {"time": 2, "metric": "systolic_bp", "value": 128},
            {"time": 4, "metric": "heart_rate", "value": 70},
            {"time": 4, "metric": "temperature", "value": 37.5},
        ],
    )
    frame = db.read_tensor(vitals).to_pandas()
    assert list(frame.columns) == ["metric", "time", "timestamp", "value"]
    rows = {(r.metric, r.time): r.value for r in frame.itertuples()}
    assert rows == {("systolic_bp", 2): 128, ("heart_rate", 4): 70, ("temperature", 4): 37.5}
    first = frame[frame.metric == "systolic_bp"].iloc[0]
    assert first.timestamp == pd.Timestamp("2026-01-03", tz="UTC")


def test_to_pandas_names_picked_labels_and_times(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": 3, "metric": "systolic_bp", "value": 128}])
    scalar = db.read_tensor(vitals, time=3, labels={"metric": "systolic_bp"})
    assert scalar.to_numpy().shape == ()
    (row,) = scalar.to_pandas().itertuples()
    assert (row.metric, row.time, row.value) == ("systolic_bp", 3, 128.0)
    assert row.timestamp == pd.Timestamp("2026-01-04", tz="UTC")
    latest = db.read_tensor(vitals, latest=True).to_pandas()
    assert latest[["metric", "time", "value"]].to_dict("records") == [
        {"metric": "systolic_bp", "time": 3, "value": 128.0}
    ]


def test_a_3d_tensor_exports_with_both_axes(db: Dust) -> None:
    tensor_id = new_tensor(db, POSTURE)
    array = np.full((2, 3, 2), np.nan)
    array[0, 1, 0], array[1, 2, 1] = 118, 70
    db.write_array(tensor_id, array)
    view = db.read_tensor(tensor_id)
    np.testing.assert_array_equal(view.to_numpy(), array)
    xr = view.to_xarray()
    assert xr.dims == ("metric", "position", "time")
    # Six-hour steps: index 1 is 06:00 on the first day.
    assert xr.coords["time"].values[1] == np.datetime64("2026-01-01T06:00:00")
    frame = view.to_pandas()
    assert frame[["metric", "position", "time", "value"]].to_dict("records") == [
        {"metric": "systolic_bp", "position": "standing", "time": 0, "value": 118.0},
        {"metric": "diastolic_bp", "position": "lying", "time": 1, "value": 70.0},
    ]
    latest = db.read_tensor(tensor_id, latest=True)
    assert latest.times is not None and latest.times.tolist() == [[None, 0, None], [None, None, 1]]


def test_numpy_integers_are_accepted_as_time_and_value(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": np.int64(5), "metric": "heart_rate", "value": np.float32(61.5)}])
    assert float(db.read_tensor(vitals, time=np.int64(5), labels={"metric": "heart_rate"}).to_numpy()) == 61.5


def test_as_of_a_written_at_time_is_exact_to_the_microsecond(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": 0, "metric": "heart_rate", "value": 60}])
    db.write_values(vitals, [{"time": 0, "metric": "heart_rate", "value": 65}])
    with db.session() as s:
        (entry,) = tensors.history(s, vitals).items
    assert entry.written_at.tzinfo is not None
    at_write = db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}, as_of=entry.written_at)
    assert float(at_write.to_numpy()) == 60
    at_replace = db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}, as_of=entry.replaced_at)
    assert float(at_replace.to_numpy()) == 65


def test_as_of_restores_replaced_values_into_a_picked_slice(db: Dust) -> None:
    tensor_id = new_tensor(db, POSTURE)
    first = {"time": 2, "metric": "diastolic_bp", "position": "lying", "value": 70}
    stamp = tensors.now_us()  # the writes' clock, set: a moment between them without sleeping around it
    with mock.patch.object(tensors, "now_us", return_value=stamp):
        db.write_values(tensor_id, [first, {**first, "position": "sitting", "value": 80}])
    with mock.patch.object(tensors, "now_us", return_value=stamp + 1_000):
        db.write_values(tensor_id, [{**first, "value": 75}])
    between = from_us(stamp + 500)
    picked = db.read_tensor(tensor_id, time=2, labels={"metric": "diastolic_bp", "position": ["lying", "sitting"]})
    assert picked.to_numpy().tolist() == [75, 80]
    then = db.read_tensor(
        tensor_id, time=2, labels={"metric": "diastolic_bp", "position": ["lying", "sitting"]}, as_of=between
    )
    assert then.to_numpy().tolist() == [70, 80]
    other = db.read_tensor(tensor_id, time=2, labels={"position": "standing"}, as_of=between)
    assert np.isnan(other.to_numpy()).all()


def test_rewriting_a_cell_with_its_own_value_keeps_its_first_write_time(db: Dust, vitals: uuid.UUID) -> None:
    """So "as of" a moment between the two writes still sees the value (moved here from tests/api: engine
    semantics, tested once)."""
    systolic = {"time": 3, "metric": "systolic_bp", "value": 120}
    stamp = tensors.now_us()
    for at in (stamp, stamp + 1_000):
        with mock.patch.object(tensors, "now_us", return_value=at):
            db.write_values(vitals, [systolic])
    assert db.read_tensor(vitals, time=3, labels={"metric": "systolic_bp"}, as_of=from_us(stamp + 500)).values == 120
    assert np.isnan(db.read_tensor(vitals, time=3, labels={"metric": "systolic_bp"}, as_of=from_us(stamp - 1)).values)


def test_concurrent_writes_to_one_block_are_all_kept(db: Dust, vitals: uuid.UUID) -> None:
    # Each write rewrites the whole block; unserialised, the later commit would drop the earlier one's cell.
    failures: list[Exception] = []

    def write(i: int) -> None:
        try:
            db.write_values(vitals, [{"time": i, "metric": METRICS[i % 3], "value": 60 + i}])
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    stored = db.read_tensor(vitals).to_numpy()
    assert [stored[i % 3, i] for i in range(12)] == [60 + i for i in range(12)]


def test_blocks_written_before_a_new_label_read_padded(db: Dust, vitals: uuid.UUID) -> None:
    db.write_array(vitals, np.array([[60.0, 61.0], [120.0, 121.0], [36.6, 36.7]]))
    update = SchemaUpdate(axes=[{"name": "metric", "labels": [*METRICS, "spo2"]}])  # type: ignore[list-item]
    with db.session() as s:
        schemas.publish(s, "vitals", update)
        tensors.update(s, vitals, tensors.TensorUpdate(schema_version=2))
    view = db.read_tensor(vitals)
    assert view.coords["metric"][-1] == "spo2"
    np.testing.assert_array_equal(view.to_numpy()[3], [np.nan, np.nan])
    db.write_values(vitals, [{"time": 1, "metric": "spo2", "value": 97}])
    np.testing.assert_array_equal(db.read_tensor(vitals, time=1).to_numpy(), [61.0, 121.0, 36.7, 97])


def test_a_tensors_metadata_follows_its_writes_and_versions_and_cannot_be_changed(db: Dust, vitals: uuid.UUID) -> None:
    """Reads share one metadata object per tensor version (``tensors.public``): none can be changed in place, and a
    write that widens the recorded range, or a later schema version, gives a read new metadata."""
    db.write_values(vitals, [{"time": 2, "metric": "heart_rate", "value": 60}])
    first = db.read_tensor(vitals, time=2).meta
    assert (first.shape, first.time.start, first.time.end) == ([3, 1], 2, 2)
    for change in (lambda: setattr(first.time, "end", 9), lambda: setattr(first, "schema_version", 5)):
        with pytest.raises(ValidationError, match="frozen"):
            change()
    db.write_values(vitals, [{"time": 5, "metric": "heart_rate", "value": 61}])
    wider = db.read_tensor(vitals, time=5).meta
    assert (wider.shape, wider.time.end, first.shape, first.time.end) == ([3, 4], 5, [3, 1], 2)
    update = SchemaUpdate(axes=[{"name": "metric", "labels": [*METRICS, "spo2"]}])  # type: ignore[list-item]
    with db.session() as s:
        schemas.publish(s, "vitals", update)
        tensors.update(s, vitals, tensors.TensorUpdate(schema_version=2))
    later = db.read_tensor(vitals, time=5).meta
    assert (later.schema_version, later.shape, later.axes[0].labels[-1]) == (2, [4, 4], "spo2")


def test_delete_tensor_removes_it(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": 0, "metric": "heart_rate", "value": 60}])
    db.delete_tensor(vitals)
    with pytest.raises(NotFound):
        db.read_tensor(vitals)


def test_timestamps_of_a_read_are_utc(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [{"time": "2026-01-05T08:00:00+02:00", "metric": "heart_rate", "value": 60}])
    view = db.read_tensor(vitals)
    assert view.coords["time"] == [4]
    assert view.timestamps == [datetime(2026, 1, 5, tzinfo=UTC)]


# --- read conventions: inclusive ranges, clipping said in `selection`, "not recorded" ---------------------------


@pytest.fixture
def days_2_to_6(db: Dust, vitals: uuid.UUID) -> uuid.UUID:
    """heart_rate 62..66 on days 2..6 (index = day), nothing else."""
    db.write_values(vitals, [{"time": t, "metric": "heart_rate", "value": 60 + t} for t in range(2, 7)])
    return vitals


def day(index: int) -> datetime:
    return datetime(2026, 1, 1 + index, tzinfo=UTC)


def test_start_and_end_are_both_inclusive(db: Dust, days_2_to_6: uuid.UUID) -> None:
    view = db.read_tensor(days_2_to_6, start=2, end=5, labels={"metric": "heart_rate"})
    assert view.coords["time"] == [2, 3, 4, 5] and view.to_numpy().tolist() == [62, 63, 64, 65]
    assert view.selection == {"metric": "heart_rate", "from": 2, "to": 5, "requested": {"from": 2, "to": 5}}
    assert view.timestamps == [day(2), day(3), day(4), day(5)]
    by_date = db.read_tensor(days_2_to_6, start="2026-01-04T12:00:00Z", end=datetime(2026, 1, 5, tzinfo=UTC))
    assert by_date.coords["time"] == [3, 4] and by_date.selection["requested"] == {"from": 3, "to": 4}


def test_a_range_partly_outside_the_record_is_clipped_and_says_so(db: Dust, days_2_to_6: uuid.UUID) -> None:
    view = db.read_tensor(days_2_to_6, start=0, end=40)
    assert view.coords["time"] == [2, 3, 4, 5, 6]
    assert view.selection == {"from": 2, "to": 6, "requested": {"from": 0, "to": 40}}
    open_end = db.read_tensor(days_2_to_6, start=5)
    assert open_end.selection == {"from": 5, "to": 6, "requested": {"from": 5, "to": None}}
    whole = db.read_tensor(days_2_to_6)
    assert whole.selection == {"from": 2, "to": 6, "requested": {"from": None, "to": None}}


def test_a_range_entirely_outside_the_record_is_out_of_range(db: Dust, days_2_to_6: uuid.UUID) -> None:
    with pytest.raises(OutOfRange, match=f"time range 10..12 is outside 2..6 recorded for tensor {days_2_to_6}"):
        db.read_tensor(days_2_to_6, start=10, end=12)
    with pytest.raises(OutOfRange, match=r"time range 7\.\. is outside 2\.\.6"):
        db.read_tensor(days_2_to_6, start=7)
    with pytest.raises(OutOfRange, match=r"time range \.\.1 is outside 2\.\.6"):
        db.read_tensor(days_2_to_6, end=1)
    with pytest.raises(InvalidInput, match=r"from \(5\) is after to \(3\)"):
        db.read_tensor(days_2_to_6, start=5, end=3)


def test_stop_is_refused_naming_end(db: Dust, days_2_to_6: uuid.UUID) -> None:
    with pytest.raises(TypeError, match="end="):
        db.read_tensor(days_2_to_6, start=2, stop=5)


def test_latest_times_are_masked_where_nothing_was_recorded(db: Dust, days_2_to_6: uuid.UUID) -> None:
    db.write_values(days_2_to_6, [{"time": 3, "metric": "temperature", "value": 37.0}])
    view = db.read_tensor(days_2_to_6, latest=True)
    assert view.times is not None and view.times.dtype == np.int64
    assert view.times.tolist() == [6, None, 3] and view.times.filled(-1).tolist() == [6, -1, 3]
    assert np.isnan(view.values[1]) and view.times.mask.tolist() == [False, True, False]
    assert view.timestamps == [day(6), None, day(3)]
    assert view.selection == {"from": 2, "to": 6, "requested": {"from": None, "to": None}, "latest": True}
    within = db.read_tensor(days_2_to_6, end=4, latest=True, labels={"metric": "heart_rate"})
    assert within.times is not None and (within.times.tolist(), float(within.values)) == (4, 64.0)
    assert within.timestamps == day(4)


def test_a_tensor_with_nothing_recorded(db: Dust, vitals: uuid.UUID) -> None:
    with pytest.raises(OutOfRange) as raised:
        db.read_tensor(vitals, time=0)
    assert raised.value.detail == f"tensor {vitals} has no values recorded yet; nothing to read at time index 0"
    nothing = {"from": None, "to": None, "requested": {"from": None, "to": None}}
    whole = db.read_tensor(vitals)
    assert (whole.values.shape, whole.selection, whole.timestamps) == ((3, 0), nothing, [])
    ranged = db.read_tensor(vitals, start=1, end=3)
    assert ranged.selection == {**nothing, "requested": {"from": 1, "to": 3}} and ranged.timestamps == []
    latest = db.read_tensor(vitals, latest=True)
    assert latest.times is not None and latest.times.tolist() == [None] * 3 and latest.timestamps == [None] * 3
    with pytest.raises(InvalidInput, match="ISO 8601"):  # checked though there is nothing to read
        db.read_tensor(vitals, start="yesterday")


THEN = datetime(2030, 1, 1, tzinfo=UTC)
READ_MODES: dict[str, dict[str, Any]] = {
    "whole": {},
    "one step": {"time": 3},
    "a timestamp": {"time": "2026-01-04T08:00:00Z"},
    "a range": {"start": 3, "end": 4},
    "one label": {"labels": {"metric": "heart_rate"}},
    "labels at one step": {"labels": {"metric": ["temperature", "heart_rate"]}, "time": 6},
    "latest": {"latest": True},
    "as of": {"as_of": THEN},
    "as of, zoned, to an end": {"as_of": "2030-01-01T01:00:00+01:00", "end": 3},
}


@pytest.mark.parametrize("mode", READ_MODES.values(), ids=READ_MODES.keys())
def test_every_read_mode_fills_selection_and_timestamps(db: Dust, days_2_to_6: uuid.UUID, mode: dict[str, Any]) -> None:
    """The REST body is the direct serialisation of the view: same selection, timestamps in Z, times as None."""
    view = db.read_tensor(days_2_to_6, **mode)
    body = view.to_json()
    assert view.selection and body["selection"] == {
        **view.selection,
        **({"as_of": "2030-01-01T00:00:00Z"} if "as_of" in mode else {}),
    }
    assert view.timestamps is not None and body["timestamps"] is not None
    stamps = body["timestamps"] if isinstance(body["timestamps"], list) else [body["timestamps"]]
    assert all(s is None or s.endswith("T00:00:00Z") for s in stamps)
    assert body.get("times") == (None if view.times is None else view.times.tolist())


def test_a_read_of_one_step_has_its_timestamp_and_as_of_keeps_its_moment(db: Dust, days_2_to_6: uuid.UUID) -> None:
    assert db.read_tensor(days_2_to_6, time=3).timestamps == day(3)
    assert db.read_tensor(days_2_to_6, as_of=THEN).selection["as_of"] == THEN


# --- the bulk path: create_many and write_arrays against their one-at-a-time forms -------------------------


def audit_trail(db: Dust) -> list[tuple[str, str, uuid.UUID | None]]:
    with db.session() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.resource == "tensor").order_by(AuditRecord.id))
        return [(r.action, r.resource, r.entity_id) for r in rows]


def stored(db: Dust, tensor_id: uuid.UUID) -> tuple[np.ndarray, Any, list[tuple[Any, ...]]]:
    """Values, recorded time range and history (without write times) of a tensor."""
    view = db.read_tensor(tensor_id)
    with db.session() as s:
        history = [(h.time, h.labels, h.value, h.new_value) for h in tensors.history(s, tensor_id).items]
    return view.to_numpy(), (view.meta.time.start, view.meta.time.end), history


def test_write_arrays_store_what_write_array_stores(db: Dust) -> None:
    rng = np.random.default_rng(11)
    first = [rng.uniform(30, 200, size=(3, 150)).round(1) for _ in range(3)]
    second = [rng.uniform(30, 200, size=(3, 100)).round(1) for _ in range(3)]
    for array in [*first, *second]:
        array[rng.random(array.shape) < 0.3] = np.nan
    second[0][:, :10] = first[0][:, 100:110]  # rewriting a cell with its own value replaces nothing
    singles = [new_tensor(db) for _ in range(3)]
    bulk = [new_tensor(db) for _ in range(3)]
    for tensor_id, array in zip(singles, first, strict=True):
        db.write_array(tensor_id, array)
    db.write_arrays(dict(zip(bulk, first, strict=True)))
    # From index 100: overlaps the first write (replaced values go to history) and runs past it into new blocks.
    expected = {t: db.write_array(t, a, start=100).written for t, a in zip(singles, second, strict=True)}
    written = db.write_arrays(dict(zip(bulk, second, strict=True)), start=100)
    assert list(written.values()) == list(expected.values()) == [int((~np.isnan(a)).sum()) for a in second]
    for one, many in zip(singles, bulk, strict=True):
        (values, span, history), (bulk_values, bulk_span, bulk_history) = stored(db, one), stored(db, many)
        np.testing.assert_array_equal(bulk_values, values)
        assert bulk_span == span == (0, 199)
        assert bulk_history == history and history


def test_write_arrays_is_all_or_nothing_and_names_the_tensor(db: Dust) -> None:
    good, bad = new_tensor(db), new_tensor(db)
    with pytest.raises(
        InvalidInput, match=f"tensor {bad}: time 0, metric=heart_rate: heart_rate 400 is outside its valid range"
    ):
        db.write_arrays({good: np.full((3, 5), 80.0), bad: np.array([[400.0], [1.0], [1.0]])})
    unknown = uuid.uuid4()
    with pytest.raises(NotFound, match=f"tensor {unknown} does not exist"):
        db.write_arrays({good: np.full((3, 5), 80.0), unknown: np.full((3, 5), 80.0)})
    assert db.read_tensor(good).values.size == 0
    assert db.write_arrays({}) == {}


def test_write_arrays_checks_access_and_audits_as_write_array_does(db: Dust, member: Member) -> None:
    db.create_schema(VITALS)
    with db.session() as s:
        access.act_as(s, member("alice"))
        people = entities.create_many(s, [EntityCreate(kind="patient", name=f"P{i}") for i in range(3)])
        made = tensors.create_many(s, [tensor_of(p.id) for p in people])
        tensors.write_array(s, made[0].id, np.full((3, 2), 70.0))
        tensors.write_arrays(s, {t.id: np.full((3, 2), 70.0) for t in made[1:]})
    trail = audit_trail(db)
    assert trail == [("create", "tensor", p.id) for p in people] + [("update", "tensor", p.id) for p in people]
    with db.session() as s:  # bob neither created these entities nor is related to them
        access.act_as(s, member("bob"))
        with pytest.raises(NotFound, match=f"tensor {made[2].id} does not exist"):
            tensors.write_arrays(s, {made[2].id: np.full((3, 2), 80.0)})
        with pytest.raises(NotFound, match=f"entity {people[0].id} does not exist"):
            tensors.create_many(s, [TensorCreate.model_validate({"entity_id": people[0].id, "schema": "posture"})])
    assert audit_trail(db) == trail


def tensor_of(entity_id: uuid.UUID, schema: str = "vitals") -> TensorCreate:
    return TensorCreate.model_validate({"entity_id": entity_id, "schema": schema, "origin": ORIGIN})


def test_create_many_gives_what_create_gives_in_order(db: Dust) -> None:
    db.create_schema(VITALS)
    db.create_schema(POSTURE)
    people = db.create_entities([{"kind": "patient", "name": f"P{i}"} for i in range(2)])
    single = db.create_tensor(people[0].id, "vitals", origin=ORIGIN)
    many = db.create_tensors(
        [tensor_of(people[1].id), tensor_of(people[0].id, "posture"), tensor_of(people[1].id, "posture")]
    )
    assert [(t.entity_id, t.schema_name) for t in many] == [
        (people[1].id, "vitals"),
        (people[0].id, "posture"),
        (people[1].id, "posture"),
    ]
    leave_out = {"id", "entity_id", "created_at"}
    assert many[0].model_dump(exclude=leave_out) == single.model_dump(exclude=leave_out)
    with db.session() as s:
        assert [tensors.get(s, t.id) for t in many] == many


@pytest.mark.parametrize("second", ["jane", "john"], ids=["taken already", "twice in the batch"])
def test_create_many_refuses_a_second_tensor_of_a_schema_and_creates_nothing(db: Dust, second: str) -> None:
    db.create_schema(VITALS)
    jane, john = db.create_entities([{"kind": "patient", "name": "Jane"}, {"kind": "patient", "name": "John"}])
    db.create_tensor(jane.id, "vitals")
    batch = [tensor_of(john.id), tensor_of({"jane": jane, "john": john}[second].id)]
    with pytest.raises(Conflict, match="already has a 'vitals' tensor; one per schema"):
        db.create_tensors(batch)
    with db.session() as s:
        assert tensors.of_entity(s, john.id) == []


def test_create_many_refuses_an_unknown_entity_and_of_nothing_makes_nothing(db: Dust) -> None:
    db.create_schema(VITALS)
    (john,) = db.create_entities([{"kind": "patient", "name": "John"}])
    unknown = uuid.uuid4()
    with pytest.raises(NotFound, match=f"entity {unknown} does not exist"):
        db.create_tensors([tensor_of(john.id), tensor_of(unknown)])
    assert db.create_tensors([]) == []


def test_a_refused_create_leaves_the_session_usable(db: Dust) -> None:
    # A clash is caught by ON CONFLICT, not by a failed statement, which PostgreSQL would not let us get past.
    db.create_schema(VITALS)
    jane, john = db.create_entities([{"kind": "patient", "name": "Jane"}, {"kind": "patient", "name": "John"}])
    db.create_tensor(jane.id, "vitals")
    with db.session() as s:
        for refused in ([tensor_of(jane.id)], [tensor_of(john.id), tensor_of(jane.id)]):
            with pytest.raises(Conflict, match=f"entity {jane.id} already has a 'vitals' tensor"):
                tensors.create_many(s, refused)
        made = tensors.create(s, tensor_of(john.id))
        tensors.write_array(s, made.id, np.full((3, 1), 60.0))
    assert db.read_tensor(made.id).to_numpy().tolist() == [[60.0]] * 3


# --- numbers: one rule on every write path -------------------------------------------------------------------


def _zero_signs(db: Dust, tensor: uuid.UUID) -> list[bool]:
    """Whether each stored value at time 0 is negative zero (NaN: False)."""
    return np.signbit(db.read_tensor(tensor, time=0).values).tolist()


@pytest.mark.parametrize("path", ["write_values", "write_values one by one", "write_array"])
def test_negative_zero_is_zero_whether_or_not_another_cell_of_its_block_changes(
    db: Dust, vitals: uuid.UUID, path: str
) -> None:
    """-0.0 == 0.0: written over 0.0 it changes nothing (no history), and it is stored as 0.0 even when the block is
    rewritten for another cell's sake, so what is read never depends on the rest of the write."""

    def write(hr: float, temperature: float) -> None:
        if path == "write_array":
            db.write_array(vitals, np.array([[hr], [np.nan], [temperature]]))
            return
        cells = [
            {"time": 0, "metric": "heart_rate", "value": hr},
            {"time": 0, "metric": "temperature", "value": temperature},
        ]
        if path == "write_values one by one":
            cells[0]["value"] = np.float64(hr)  # not a plain float: the value-by-value path
        db.write_values(vitals, cells)

    write(0.0, 36.0)
    write(-0.0, 36.0)  # nothing else changes
    assert _zero_signs(db, vitals) == [False, False, False]
    write(-0.0, 37.0)  # the block is rewritten for the temperature
    assert _zero_signs(db, vitals) == [False, False, False]
    assert [h.labels["metric"] for h in db.tensor_history(vitals).items] == ["temperature"]
    other = new_tensor(db)
    db.write_values(other, [{"time": 0, "metric": "heart_rate", "value": -0.0}])  # onto nothing
    assert _zero_signs(db, other) == [False, False, False]


BAD_NUMBERS = [
    (np.array([[10**400], [1], [1]], dtype=object), "not_finite", "time 0, metric=heart_rate"),
    (np.array([[1], [1], [-(10**400)]], dtype=object), "not_finite", "time 0, metric=temperature"),
    (np.array([[1.0], [np.inf], [1.0]]), "not_finite", "time 0, metric=systolic_bp"),
    (np.array([[1.0, 2.0], [1.0, 1.0], [1.0, np.longdouble("1e400")]], dtype=np.longdouble), "not_finite", "time 1"),
    (np.array([[1 + 2j], [1], [1]]), "not_a_number", "complex"),
    (np.array([[1 + 0j], [1], [1]]), "not_a_number", "complex"),
    (np.array([[True], [False], [True]]), "not_a_number", "booleans"),
    (np.array([[1.0], [True], [1.0]], dtype=object), "not_a_number", "time 0, metric=systolic_bp"),
    (np.array([[1.0], ["1.5"], [1.0]], dtype=object), "not_a_number", "time 0, metric=systolic_bp"),
    (np.array([["1.5"], ["1"], ["2"]]), "not_a_number", "text"),
    (np.array([[1.0], [1.0], [None]], dtype=object), "not_a_number", "time 0, metric=temperature"),
    (np.array([[400.0], [1.0], [1.0]]), "out_of_range", "time 0, metric=heart_rate: heart_rate 400"),
]


@pytest.mark.parametrize("path", ["write_array", "write_arrays"])
@pytest.mark.parametrize(("array", "code", "named"), BAD_NUMBERS)
def test_write_array_refuses_what_write_values_refuses_and_names_the_cell(
    db: Dust, vitals: uuid.UUID, array: np.ndarray, code: str, named: str, path: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        if path == "write_array":
            db.write_array(vitals, array)
        else:
            db.write_arrays({vitals: array, new_tensor(db): array})
    assert refused.value.code == code and named in refused.value.detail, refused.value.detail
    assert db.read_tensor(vitals).values.size == 0


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (10**400, "not_finite"),
        (-(10**400), "not_finite"),
        (float("inf"), "not_finite"),
        (True, "not_a_number"),
        (np.bool_(True), "not_a_number"),
        (1 + 0j, "not_a_number"),
        ("1.5", "not_a_number"),
        (None, "not_a_number"),
    ],
)
def test_write_values_refuses_the_same_numbers(db: Dust, vitals: uuid.UUID, value: Any, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        db.write_values(
            vitals,
            [{"time": 0, "metric": "temperature", "value": 1.0}, {"time": 0, "metric": "heart_rate", "value": value}],
        )
    assert refused.value.errors is not None
    assert [(e["loc"], e["type"]) for e in refused.value.errors] == [(["values", 1], code)]


@pytest.mark.parametrize(
    ("array", "stored"),
    [
        *(
            pytest.param(np.array([[1], [2], [3]], dtype=dtype), [[1.0], [2.0], [3.0]], id=np.dtype(dtype).name)
            for dtype in (np.int8, np.uint64, np.int64, np.float16, np.float32, np.longdouble)
        ),
        pytest.param(np.array([[250], [1.5], [2**64]], dtype=object), [[250.0], [1.5], [2.0**64]], id="object"),
    ],
)
def test_every_real_dtype_is_written_as_float64(
    db: Dust, vitals: uuid.UUID, array: np.ndarray, stored: list[list[float]]
) -> None:
    assert db.write_array(vitals, array).written == 3
    np.testing.assert_array_equal(db.read_tensor(vitals).values, stored)


# --- "as of", erasing and the history ---------------------------------------------------------------------


def hr(time: int, value: float | None = None) -> dict[str, Any]:
    """A heart-rate cell of the vitals tensor, with its value if given."""
    return {"time": time, "metric": "heart_rate", **({} if value is None else {"value": value})}


def test_a_clock_stepped_back_still_stamps_after_the_last_write(db: Dust, vitals: uuid.UUID) -> None:
    with mock.patch.object(tensors, "now_us", return_value=2_000_000_000_000_000):
        db.write_values(vitals, [hr(0, 70)])
    with mock.patch.object(tensors, "now_us", return_value=1_000_000_000_000_000):  # the clock went back
        db.write_values(vitals, [hr(0, 74)])
    (entry,) = db.tensor_history(vitals).items
    assert entry.written_at < entry.replaced_at == from_us(2_000_000_000_000_001)
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}, as_of=entry.written_at).values == 70
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}, as_of=entry.replaced_at).values == 74


def test_as_of_puts_back_values_of_a_label_picked_twice(db: Dust, vitals: uuid.UUID) -> None:
    stamp = tensors.now_us()  # the writes' clock, set: a moment between them without sleeping
    with mock.patch.object(tensors, "now_us", return_value=stamp):
        db.write_array(vitals, np.array([[70.0, 71.0], [120.0, 121.0], [36.5, 36.6]]))
    with mock.patch.object(tensors, "now_us", return_value=stamp + 1_000):
        db.write_array(vitals, np.array([[80.0, 81.0], [130.0, 131.0], [37.5, 37.6]]))
    between = from_us(stamp + 500)
    picked = {"metric": ["temperature", "heart_rate", "temperature"]}
    view = db.read_tensor(vitals, labels=picked, as_of=between)
    assert view.values.tolist() == [[36.5, 36.6], [70.0, 71.0], [36.5, 36.6]]


def test_an_erased_value_reads_as_nan_and_stays_in_history_and_as_of(db: Dust, vitals: uuid.UUID) -> None:
    stamp = tensors.now_us()  # the clock of the write and the erase, set: a moment between them without sleeping
    with mock.patch.object(tensors, "now_us", return_value=stamp):
        db.write_values(vitals, [hr(0, 70), hr(1, 71)])
    with mock.patch.object(tensors, "now_us", return_value=stamp + 1_000):
        assert db.erase_values(vitals, [hr(0), hr(5)]).erased == 1  # time 5 holds nothing: left as it is
    before = from_us(stamp + 500)
    assert np.isnan(db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}).values)
    assert db.read_tensor(vitals, labels={"metric": "heart_rate"}).values.tolist()[1] == 71
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}, as_of=before).values == 70
    (entry,) = db.tensor_history(vitals).items
    assert (entry.time, entry.value, entry.new_value) == (0, 70, None)
    assert (entry.written_at, entry.replaced_at) == (from_us(stamp), from_us(stamp + 1_000))
    db.write_values(vitals, [hr(0, 72)])  # a cell erased may be written again
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}).values == 72
    assert len(db.tensor_history(vitals).items) == 1  # nothing was replaced: the cell held nothing


def test_an_erase_naming_an_unknown_cell_erases_nothing(db: Dust, vitals: uuid.UUID) -> None:
    db.write_values(vitals, [hr(0, 70)])
    with pytest.raises(InvalidInput) as refused:
        db.erase_values(vitals, [hr(0), {"time": 0, "metric": "heart_rat"}, {"time": 0}])
    assert [e["loc"] for e in refused.value.errors] == [["values", 1], ["values", 2]]
    with pytest.raises(InvalidInput):
        db.erase_values(vitals, [])
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}).values == 70


def test_erasing_needs_the_tensor_to_be_visible(db: Dust, vitals: uuid.UUID, member: Member) -> None:
    db.write_values(vitals, [hr(0, 70)])
    with db.session() as s:
        access.act_as(s, member("mallory"))
        with pytest.raises(NotFound):
            tensors.erase_values(s, vitals, [hr(0)])
    assert db.read_tensor(vitals, time=0, labels={"metric": "heart_rate"}).values == 70


def test_history_comes_a_page_at_a_time(db: Dust, vitals: uuid.UUID) -> None:
    for value in (70, 71, 72):
        db.write_values(vitals, [hr(t, value + t) for t in range(3)])
    everything = db.tensor_history(vitals, limit=100)
    assert everything.next_cursor is None and len(everything.items) == 6
    pages, cursor = [], None
    while True:
        page = db.tensor_history(vitals, limit=4, cursor=cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        db.write_values(vitals, [hr(9, 60), hr(9, 61)])  # a write between pages: no entry repeated or skipped
    assert [len(p) for p in pages] == [4, 2]
    assert [p for page in pages for p in page] == everything.items
    assert [(h.time, h.value) for h in everything.items] == [(0, 70), (0, 71), (1, 71), (1, 72), (2, 72), (2, 73)]


@ONE_BACKEND  # refused before the tensor is read
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("nonsense", id="not a cursor"),
        pytest.param(encode_cursor("h", [1, 2]), id="two of three"),
        pytest.param(encode_cursor("h", [1, 2, True]), id="a boolean id"),
        pytest.param(encode_cursor("h", [0, 0, 2**63]), id="an id past bigint"),
    ],
)
def test_a_forged_history_cursor_is_invalid_input(db: Dust, vitals: uuid.UUID, bad: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        db.tensor_history(vitals, cursor=bad)


@ONE_BACKEND  # refused before the tensor is read
@pytest.mark.parametrize("limit", [0, tensors.MAX_HISTORY_LIMIT + 1])
def test_a_history_limit_out_of_bounds_is_invalid_input(db: Dust, vitals: uuid.UUID, limit: int) -> None:
    with pytest.raises(InvalidInput):
        db.tensor_history(vitals, limit=limit)


def test_as_of_answers_the_same_before_and_after_a_slow_writer_commits(db: Dust, vitals: uuid.UUID) -> None:
    """A writer stamps its value, then takes its time to commit; a reader asks "as of" a moment after the stamp,
    while the write is in flight. The reader waits for the commit, so asking again later answers the same."""
    db.write_values(vitals, [hr(0, 70)])
    reads = make_sessionmaker(db.engine, read_only=True)  # as a GET request reads
    stamped, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with db.session() as s:
            tensors.write_values(s, vitals, [hr(0, 80)])
            stamped.set()
            release.wait(5)
            time.sleep(0.3)  # still in flight when the reader asks

    def as_of(moment: datetime) -> float:
        with reads() as s, s.begin():
            s.info[AFTER_COMMIT] = []  # the read's audit record: not what this test is about
            return float(tensors.read(s, vitals, time=0, labels={"metric": "heart_rate"}, as_of=moment).values)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert stamped.wait(5)
    moment = datetime.now(UTC)  # after the writer's stamp, before its commit
    release.set()
    during = as_of(moment)
    writer.join()
    assert during == as_of(moment) == 80


# --- block lengths ------------------------------------------------------------------------------------------


def wide(cells: int, name: str = "wide") -> dict[str, Any]:
    """A schema of one axis of ``cells`` labels, daily."""
    return {"name": name, "axes": [{"name": "c", "labels": [f"c{i}" for i in range(cells)]}], "time": {"unit": "day"}}


def block_rows(db: Dust, tensor_id: uuid.UUID) -> tuple[int, list[tuple[int, int]]]:
    """The tensor's steps a block, and (number, steps held) of each stored block, as its bytes say."""
    with db.session() as s:
        steps = s.scalar(select(Tensor.block_steps).where(Tensor.id == tensor_id))
        found = s.execute(
            select(TensorBlock.block, TensorBlock.shape, TensorBlock.data)
            .where(TensorBlock.tensor_id == tensor_id)
            .order_by("block")
        )
        return int(steps or 0), [(number, codec.steps_of(shape, data)) for number, shape, data in found]


@pytest.mark.parametrize(("cells", "steps"), [(1, 1024), (500, 2)])
def test_blocks_hold_about_8_kib_of_values_whatever_the_cell_count(db: Dust, cells: int, steps: int) -> None:
    """A one-cell tensor holds 1,024 steps a block, a 500-cell one 2: reads, overwrites, erases, history, "as
    of" reads and aggregates across block boundaries (and before the origin) answer as a NumPy reference."""
    schema = wide(cells)
    db.create_schema(schema)
    origins = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)]  # three days apart
    ids = [
        db.create_tensor(db.create_entity(kind="thing", name=f"t{k}").id, "wide", origin=o).id
        for k, o in enumerate(origins)
    ]
    rng = np.random.default_rng(cells)
    span = (-3 * steps - 1, 3 * steps + 2)  # the last step of block -4 to the third step of block 3
    reference = np.full((2, cells, span[1] - span[0] + 1), np.nan)
    times = np.r_[span[0], rng.integers(*span, size=12), span[1], steps - 1, steps]  # both sides of a boundary
    for k, tensor_id in enumerate(ids):
        for t in np.unique(times).tolist():
            column = rng.normal(50, 10, size=cells).round(2)
            column[rng.random(cells) < 0.3] = np.nan
            db.write_array(tensor_id, column[:, None], start=t)
            reference[k, :, t - span[0]] = np.where(np.isnan(column), reference[k, :, t - span[0]], column)
    last = f"c{cells - 1}"
    marked = [(steps, "c0", 10.0), (steps - 1, last, 20.0), (span[0], "c0", 30.0)]  # cells that will change
    db.write_values(ids[0], [{"time": t, "c": c, "value": v} for t, c, v in marked])
    for t, c, v in marked:
        reference[0, int(c[1:]), t - span[0]] = v
    before = datetime.now(UTC)
    time.sleep(0.002)  # the next write's stamp is later than ``before``
    kept = reference.copy()
    db.write_values(ids[0], [{"time": steps, "c": "c0", "value": 1.5}, {"time": steps - 1, "c": last, "value": 2.5}])
    db.erase_values(ids[0], [{"time": span[0], "c": "c0"}])
    reference[0, 0, steps - span[0]], reference[0, cells - 1, steps - 1 - span[0]] = 1.5, 2.5
    reference[0, 0, 0] = np.nan

    step_count, stored = block_rows(db, ids[0])
    assert step_count == steps and {held for _, held in stored} == {steps}
    assert [n for n, _ in stored] == sorted({t // steps for t in times.tolist()})
    for k, tensor_id in enumerate(ids):
        view = db.read_tensor(tensor_id)
        first = view.coords["time"][0]
        np.testing.assert_array_equal(view.to_numpy(), reference[k, :, first - span[0] :])
    as_of = db.read_tensor(ids[0], as_of=before)
    np.testing.assert_array_equal(as_of.to_numpy(), kept[0, :, as_of.coords["time"][0] - span[0] :])
    history = db.tensor_history(ids[0]).items
    replaced = {(h.time, h.labels["c"], h.value, h.new_value) for h in history if h.replaced_at > before}
    assert replaced == {(steps, "c0", 10.0, 1.5), (steps - 1, last, 20.0, 2.5), (span[0], "c0", 30.0, None)}
    for agg in ("mean", "max", "count", "p95"):
        label = cells // 2
        expected: dict[datetime, list[float]] = {}
        for k, origin in enumerate(origins):
            for i, value in enumerate(reference[k, label]):
                if not np.isnan(value):
                    expected.setdefault(origin + (span[0] + i) * (origins[1] - origins[0]) / 3, []).append(value)
        got = {p["time"]: (p["value"], p["count"]) for p in db.aggregate("wide", f"c{label}", agg) if p["count"]}
        want = {t: (float(NUMPY_AGG[agg](np.array(v))), len(v)) for t, v in expected.items()}
        assert got.keys() == want.keys()
        for t in want:
            assert got[t][1] == want[t][1] and got[t][0] == pytest.approx(want[t][0], rel=1e-12)


NUMPY_AGG: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean,
    "max": np.max,
    "count": np.size,
    "p95": lambda v: np.percentile(v, 95),
}


def test_the_block_length_is_fixed_once_a_tensor_has_blocks(db: Dust) -> None:
    """A later schema version with many more labels: a tensor with blocks keeps its length (and its old blocks
    read padded), an empty one takes the length of its new cell count."""
    db.create_schema(wide(4, "grows"))
    used, empty = (db.create_tensor(db.create_entity(kind="thing", name=n).id, "grows", origin=ORIGIN).id for n in "ab")
    db.write_array(used, np.arange(4 * 300, dtype=float).reshape(4, 300))  # blocks 0 and 1 of 256 steps
    update = SchemaUpdate(axes=[{"name": "c", "labels": [f"c{i}" for i in range(200)]}])  # type: ignore[list-item]
    with db.session() as s:
        schemas.publish(s, "grows", update)
    for tensor_id in (used, empty):
        db.update_tensor(tensor_id, 2)
    assert block_rows(db, used)[0] == 256 and block_rows(db, empty)[0] == 4  # 1,024 / 200 is nearest 4
    db.write_values(used, [{"time": 299, "c": "c199", "value": 7.0}, {"time": 600, "c": "c150", "value": 8.0}])
    db.write_values(empty, [{"time": 299, "c": "c199", "value": 9.0}])
    assert [n for n, _ in block_rows(db, used)[1]] == [0, 1, 2] and [n for n, _ in block_rows(db, empty)[1]] == [74]
    view = db.read_tensor(used, end=299)
    np.testing.assert_array_equal(view.to_numpy()[:4], np.arange(4 * 300, dtype=float).reshape(4, 300))
    assert np.isnan(view.to_numpy()[4:, :299]).all() and view.to_numpy()[199, 299] == 7.0
    assert db.read_tensor(used, time=600, labels={"c": "c150"}).to_numpy() == 8.0
    total = db.aggregate("grows", "c199", "sum")
    assert [(p["value"], p["count"]) for p in total if p["count"]] == [(16.0, 2)]


def test_the_limit_of_blocks_a_write_touches_counts_the_tensors_blocks(db: Dust) -> None:
    db.create_schema(wide(1, "one"))
    tensor_id = db.create_tensor(db.create_entity(kind="thing", name="x").id, "one", origin=ORIGIN).id
    spread = [{"time": t, "c": "c0", "value": 1.0} for t in (0, 1023, 1024, 5000)]  # blocks 0, 0, 1 and 4
    with db.session() as s, pytest.raises(TooLarge, match="touches 3 blocks of 1024 time steps; at most 2"):
        tensors.write_values(s, tensor_id, spread, max_blocks=2)
    with db.session() as s:
        assert tensors.write_values(s, tensor_id, spread[:3], max_blocks=2).written == 3


def test_a_bulk_load_holds_no_lock_per_tensor_it_created(db: Dust) -> None:
    """PostgreSQL: a writer takes an advisory lock per tensor (what "as of" readers wait on), but not for
    tensors its own transaction created: nobody can wait on those, and ten thousand locks would fill the
    server's lock table (a demo of 10,000 patients failed with "out of shared memory")."""
    existing = new_tensor(db)
    with db.session() as session:
        jane = entities.create(session, EntityCreate(kind="patient", name="Jane Roe"))
        created = tensors.create(session, TensorCreate(entity_id=jane.id, schema_name="vitals", origin=ORIGIN)).id
        tensors.write_array(session, created, np.full((3, 2), 70.0))
        if session.get_bind().dialect.name == "postgresql":
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            assert session.execute(text(held)).scalar_one() == 0
            tensors.write_array(session, existing, np.full((3, 2), 70.0))
            assert session.execute(text(held)).scalar_one() == 1
    np.testing.assert_array_equal(db.read_tensor(created).to_numpy(), np.full((3, 2), 70.0))
