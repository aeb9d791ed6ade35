"""Time at the edges, on both backends: local days of a time zone across changes of the clocks, default origins on
one grid per schema, values before the origin (negative indices), and digits that could be a date."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from dust.core.errors import Conflict, InvalidInput, OutOfRange
from dust.embedded import Dust
from dust.engine import tensors
from dust.engine.timegrid import MIN_TIME_INDEX

BERLIN = ZoneInfo("Europe/Berlin")


def schema(name: str, unit: str = "day", step: int = 1, **time: object) -> dict[str, object]:
    return {
        "name": name,
        "axes": [{"name": "metric", "labels": ["steps", "weight"]}],
        "time": {"unit": unit, "step": step, **time},
    }


def tensor(db: Dust, schema_name: str, origin: object = None, name: str = "Jane") -> uuid.UUID:
    person = db.create_entity("patient", name)
    return db.create_tensor(person.id, schema_name, origin=origin).id


# --- time zones ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "short_day", "long_day"),
    [("Europe/Berlin", "2025-03-30", "2025-10-26"), ("America/New_York", "2025-03-09", "2025-11-02")],
)
def test_local_days_hold_their_local_times_across_both_changes(
    db: Dust, zone: str, short_day: str, long_day: str
) -> None:
    db.create_schema(schema("daily", zone=zone))
    local = ZoneInfo(zone)
    origin = datetime(2025, 1, 1, tzinfo=local)
    t = tensor(db, "daily", origin)
    days = {d: (datetime.fromisoformat(d) - datetime(2025, 1, 1)).days for d in (short_day, long_day)}
    # 00:30 and 23:30 local on each day of a change land on that day, written as timestamps with their offsets.
    cells = [
        {"time": datetime.fromisoformat(f"{d}T{hm}").replace(tzinfo=local).isoformat(), "metric": "steps", "value": v}
        for v, (d, hm) in enumerate((d, hm) for d in days for hm in ("00:30", "23:30"))
    ]
    db.write_values(t, cells)
    db.write_values(t, [{"time": days[d] + 1, "metric": "weight", "value": 70} for d in days])  # the days after
    view = db.read_tensor(t, labels={"metric": "steps"})
    assert {i: v for i, v in zip(view.coords["time"], view.values.tolist(), strict=True) if v == v} == {
        days[short_day]: 1.0,  # the later of the two writes to each day
        days[long_day]: 3.0,
    }
    # Timestamps are the UTC instants of local midnights: 23 and 25 hours apart on the days of the changes.
    for d, hours in ((short_day, 23), (long_day, 25)):
        i = days[d]
        start, end = db.read_tensor(t, start=i, end=i + 1, labels={"metric": "steps"}).timestamps
        assert start.astimezone(local).replace(tzinfo=None) == datetime.fromisoformat(d)
        assert end - start == timedelta(hours=hours)
        assert db.read_tensor(t, time=start).selection["time"] == i  # timestamp -> index -> timestamp
    assert db.get_tensor(t).time.zone == zone


def test_half_past_midnight_on_30_march_2025_in_berlin(db: Dust) -> None:
    db.create_schema(schema("daily", zone="Europe/Berlin"))
    t = tensor(db, "daily", "2025-03-01T00:00:00+01:00")
    db.write_values(t, [{"time": "2025-03-29T23:30:00Z", "metric": "steps", "value": 8000}])  # 00:30 CET
    view = db.read_tensor(t, time=29, labels={"metric": "steps"})  # 30 March
    assert view.values == 8000.0
    assert view.timestamps == datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert view.to_json()["timestamps"] == "2025-03-29T23:00:00Z"
    frame = db.read_tensor(t).to_pandas()
    assert frame["timestamp"].tolist() == [datetime(2025, 3, 29, 23, tzinfo=UTC)]
    assert db.read_tensor(t).to_xarray().coords["time"].values[0] == np.datetime64("2025-03-29T23:00:00")


def test_aggregates_fold_local_days_across_origins(db: Dust) -> None:
    db.create_schema(schema("daily", zone="Europe/Berlin"))
    one = tensor(db, "daily", "2025-03-28T00:00:00+01:00", "Jane")
    two = tensor(db, "daily", "2025-03-30T00:00:00+01:00", "John")  # 30 March: index 0 here, 2 in Jane's
    db.write_values(one, [{"time": i, "metric": "steps", "value": 10.0 * i} for i in range(5)])
    db.write_values(two, [{"time": i, "metric": "steps", "value": 1.0} for i in range(3)])
    series = db.aggregate("daily", "steps", "count")
    local_days = [(row["time"].astimezone(BERLIN).date().isoformat(), row["count"]) for row in series]
    assert local_days == [("2025-03-28", 1), ("2025-03-29", 1), ("2025-03-30", 2), ("2025-03-31", 2), ("2025-04-01", 2)]
    assert [row["time"].astimezone(BERLIN).hour for row in series] == [0] * 5  # local midnights, 23 h day included
    assert series[2]["time"] == datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert series[3]["time"] == datetime(2025, 3, 30, 22, tzinfo=UTC)


def test_a_zone_is_checked_and_kept_by_every_version(db: Dust) -> None:
    with pytest.raises(InvalidInput, match="'Europe/Berln' is not an IANA time zone"):
        db.create_schema(schema("daily", zone="Europe/Berln"))
    with pytest.raises(InvalidInput, match="zone 'Europe/Berlin' needs a unit of day or week"):
        db.create_schema(schema("hourly", "hour", zone="Europe/Berlin"))
    made = db.create_schema(schema("daily", zone="Europe/Berlin"))
    assert made.time.zone == "Europe/Berlin"
    assert db.create_schema(schema("utc")).time.zone == "UTC"
    moved = made.model_dump()
    moved["time"]["zone"] = "America/New_York"
    with pytest.raises(Conflict, match="must keep the time zone 'Europe/Berlin'"):
        db.update_schema("daily", moved)
    kept = made.model_dump()
    kept["axes"][0]["labels"].append("sleep")
    assert db.update_schema("daily", kept).time.zone == "Europe/Berlin"


# --- default origins ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "offset"), [("UTC", 0), ("Europe/Berlin", 1), ("America/New_York", -5)])
def test_tensors_of_a_weekly_schema_made_on_different_days_share_a_grid(
    db: Dust, monkeypatch: pytest.MonkeyPatch, zone: str, offset: int
) -> None:
    db.create_schema(schema("weekly", "week", zone=zone))
    origins = []
    for day in (5, 7, 11):  # Monday, Wednesday and Sunday of one week in January 2026
        monkeypatch.setattr(tensors, "utcnow", lambda day=day: datetime(2026, 1, day, 12, tzinfo=UTC))
        origins.append(db.get_tensor(tensor(db, "weekly", name=f"p{day}")).time.origin)
    monday = datetime(2026, 1, 5, tzinfo=UTC) - timedelta(hours=offset)  # local midnight of Monday 5 January
    assert origins == [monday] * 3


def test_a_schemas_origin_is_its_tensors_default(db: Dust) -> None:
    db.create_schema(schema("weekly", "week", origin="2026-01-07T06:00:00Z"))
    assert db.get_tensor(tensor(db, "weekly")).time.origin == datetime(2026, 1, 7, 6, tzinfo=UTC)


# --- values before the origin -------------------------------------------------------------------------------


@pytest.fixture
def backfilled(db: Dust) -> uuid.UUID:
    """Steps from day -130 (three blocks before the origin) to day 5; day -1 written twice."""
    db.create_schema(schema("daily"))
    t = tensor(db, "daily", "2026-01-01T00:00:00Z")
    db.write_values(t, [{"time": i, "metric": "steps", "value": float(i)} for i in (0, 5)])
    db.write_values(t, [{"time": "2025-12-31T08:00:00Z", "metric": "steps", "value": 1.0}])  # index -1
    db.write_values(
        t, [{"time": -1, "metric": "steps", "value": -1.0}, {"time": -130, "metric": "weight", "value": 80}]
    )
    return t


def test_values_before_the_origin_are_written_at_negative_indices(db: Dust, backfilled: uuid.UUID) -> None:
    meta = db.get_tensor(backfilled)
    assert (meta.time.start, meta.time.end, meta.shape[-1]) == (-130, 5, 136)
    assert meta.time.origin == datetime(2026, 1, 1, tzinfo=UTC)  # the origin did not move
    whole = db.read_tensor(backfilled)
    assert whole.coords["time"][0] == -130 and whole.coords["time"][-1] == 5
    assert whole.timestamps[0] == datetime(2026, 1, 1, tzinfo=UTC) - timedelta(days=130)
    steps = db.read_tensor(backfilled, start="2025-12-30", end=0, labels={"metric": "steps"})
    assert steps.coords["time"] == [-2, -1, 0] and steps.values.tolist()[1:] == [-1.0, 0.0]
    assert db.read_tensor(backfilled, time=-130, labels={"metric": "weight"}).values == 80.0
    assert db.read_tensor(backfilled, time="-1", labels={"metric": "steps"}).values == -1.0
    latest = db.read_tensor(backfilled, latest=True, end=-1)
    assert latest.times.tolist() == [-1, -130] and latest.values.tolist() == [-1.0, 80.0]
    frame = db.read_tensor(backfilled).to_pandas()
    assert sorted(frame["time"].tolist()) == [-130, -1, 0, 5]


def test_history_and_as_of_before_the_origin(db: Dust, backfilled: uuid.UUID) -> None:
    (replaced,) = db.tensor_history(backfilled).items
    assert (replaced.time, replaced.value, replaced.new_value) == (-1, 1.0, -1.0)
    assert [h.time for h in db.tensor_history(backfilled, start=-5, end=-1).items] == [-1]
    assert db.tensor_history(backfilled, start=0).items == []
    before = db.read_tensor(backfilled, time=-1, labels={"metric": "steps"}, as_of=replaced.written_at)
    assert before.values == 1.0


def test_write_array_and_aggregates_before_the_origin(db: Dust, backfilled: uuid.UUID) -> None:
    db.write_array(backfilled, np.array([[7.0, 8.0], [np.nan, 81.0]]), start=-65)
    assert db.read_tensor(backfilled, start=-65, end=-64, labels={"metric": "steps"}).values.tolist() == [7.0, 8.0]
    series = db.aggregate("daily", "weight", "max")
    assert [(row["time"], row["value"]) for row in series if row["count"]] == [  # the days between are gaps
        (datetime(2025, 8, 24, tzinfo=UTC), 80.0),
        (datetime(2025, 10, 29, tzinfo=UTC), 81.0),
    ]


def test_the_least_index_is_documented_and_enforced(db: Dust) -> None:
    db.create_schema(schema("secondly", "second"))
    t = tensor(db, "secondly", "2026-01-01T00:00:00Z")
    db.write_values(t, [{"time": MIN_TIME_INDEX, "metric": "steps", "value": 1}])
    assert db.get_tensor(t).time.start == MIN_TIME_INDEX
    with pytest.raises(InvalidInput, match="run from -100,000,000 to 100,000,000"):
        db.write_values(t, [{"time": MIN_TIME_INDEX - 1, "metric": "steps", "value": 1}])
    with pytest.raises(OutOfRange, match="-189388800 is out of range"):
        db.read_tensor(t, time="2020-01-01T00:00:00Z")  # -189 million seconds
    with pytest.raises(InvalidInput, match="out of range"):
        db.write_values(t, [{"time": "2020-01-01T00:00:00Z", "metric": "steps", "value": 1}])  # -189 million s


# --- digits that could be a date ----------------------------------------------------------------------------


EIGHT_DIGITS = "could be time index 20,260,105 or the date 2026-01-05"


def test_eight_digits_that_name_a_day_are_refused_everywhere(db: Dust) -> None:
    db.create_schema(schema("secondly", "second"))
    t = tensor(db, "secondly", "2026-01-01T00:00:00Z")
    with pytest.raises(InvalidInput, match=EIGHT_DIGITS) as caught:
        db.write_values(t, [{"time": "20260105", "metric": "steps", "value": 1}])
    assert caught.value.errors[0]["type"] == "ambiguous_time"
    db.write_values(t, [{"time": 20260105, "metric": "steps", "value": 1}])  # a number is an index
    db.write_values(t, [{"time": "2026-01-05", "metric": "steps", "value": 2}])  # a date with dashes a date
    assert db.read_tensor(t, time=20260105, labels={"metric": "steps"}).values == 1.0
    assert db.read_tensor(t, time="2026-01-05", labels={"metric": "steps"}).values == 2.0
    with pytest.raises(InvalidInput, match=EIGHT_DIGITS):
        db.tensor_history(t, start="20260105")
    assert db.read_tensor(t, time="345600", labels={"metric": "steps"}).values == 2.0  # other digits: an index


@pytest.mark.parametrize("selection", [{"time": "20260105"}, {"start": "20260105"}, {"end": " 20260105 "}], ids=repr)
def test_eight_digits_that_name_a_day_are_refused_in_a_read(db: Dust, selection: dict[str, str]) -> None:
    db.create_schema(schema("secondly", "second"))
    t = tensor(db, "secondly", "2026-01-01T00:00:00Z")
    db.write_values(t, [{"time": 20260105, "metric": "steps", "value": 1}])
    db.write_values(t, [{"time": "2026-01-05", "metric": "steps", "value": 2}])
    with pytest.raises(InvalidInput, match=EIGHT_DIGITS):
        db.read_tensor(t, **selection)
