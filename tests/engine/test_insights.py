"""dust.engine.insights: aggregates across tensors per step or bucket, against a NumPy reference.

The reference knows nothing of blocks or wall-clock microseconds: it puts each recorded value at its step's start
(computed with zoneinfo from the tensor's origin), each step into the bucket holding its start (local midnight,
Monday, first of the month or year), applies NumPy to each bucket's values, and fills every empty bucket between
the first and last as a gap, walking from bucket to bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from dust.core.errors import Forbidden, InvalidInput, NotFound
from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import access, insights, relations, schemas, tensors
from dust.engine.relations import RelationCreate
from dust.engine.schemas import Axis, SchemaUpdate
from tests.engine.conftest import principal

BASE = datetime(2026, 1, 1, tzinfo=UTC)
AGGS = ["mean", "min", "max", "sum", "count", "p50", "p95"]
NUMPY: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean,
    "min": np.min,
    "max": np.max,
    "sum": np.sum,
    "count": np.size,
    "p50": lambda v: np.percentile(v, 50),
    "p95": lambda v: np.percentile(v, 95),
}
Written = list[tuple[datetime, int, np.ndarray]]  # (origin, start index, array (*cells, time))
Expected = list[tuple[datetime, float | None, int]]


# --- the reference -----------------------------------------------------------------------------------------


class Grid:
    """A schema's steps as the reference counts them: fixed lengths in UTC, or local days in a zone."""

    def __init__(self, step: timedelta, zone: str = "UTC") -> None:
        self.step, self.zone = step, ZoneInfo(zone)

    def at(self, origin: datetime, index: int) -> datetime:
        if self.zone.key == "UTC":
            return origin + index * self.step
        wall = origin.astimezone(self.zone).replace(tzinfo=None) + index * self.step
        return wall.replace(tzinfo=self.zone).astimezone(UTC)

    def after(self, when: datetime) -> datetime:
        return self.at(when, 1)


def local_bucket(name: str, zone: str = "UTC") -> tuple[Callable[[datetime], datetime], Callable[[datetime], datetime]]:
    """(floor, after) of a bucket: the start of the one holding a time, and the start of the next one."""
    tz = ZoneInfo(zone)

    def floor(when: datetime) -> datetime:
        local = when.astimezone(tz).replace(tzinfo=None)
        day = local.date()
        start = {
            "hour": local.replace(minute=0, second=0, microsecond=0),
            "day": datetime.combine(day, datetime.min.time()),
            "week": datetime.combine(day - timedelta(days=day.weekday()), datetime.min.time()),
            "month": datetime(day.year, day.month, 1),
            "year": datetime(day.year, 1, 1),
        }[name]
        return start.replace(tzinfo=tz).astimezone(UTC)

    def after(start: datetime) -> datetime:
        local = start.astimezone(tz).replace(tzinfo=None)
        if name == "month":
            following = date(local.year + local.month // 12, local.month % 12 + 1, 1)
            nxt = datetime.combine(following, datetime.min.time())
        elif name == "year":
            nxt = datetime(local.year + 1, 1, 1)
        else:
            nxt = local + {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[name]
        return nxt.replace(tzinfo=tz).astimezone(UTC)

    return floor, after


def reference(written: Written, grid: Grid, pick: Any) -> dict[datetime, np.ndarray]:
    """Every recorded value of the picked cells, by the start of its step."""
    found: dict[datetime, list[np.ndarray]] = {}
    for origin, start, array in written:
        picked = array[pick].reshape(-1, array.shape[-1])
        for t in range(array.shape[-1]):
            found.setdefault(grid.at(origin, start + t), []).append(picked[:, t])
    values = {when: np.concatenate(parts) for when, parts in found.items()}
    return {when: v[~np.isnan(v)] for when, v in sorted(values.items()) if (~np.isnan(v)).any()}


def expected(
    ref: dict[datetime, np.ndarray],
    agg: str,
    after: Callable[[datetime], datetime],
    floor: Callable[[datetime], datetime] = lambda t: t,
    keep: Callable[[datetime], bool] = lambda b: True,
) -> Expected:
    """NumPy's ``agg`` per bucket, with a gap for each empty bucket between two that hold values (walking
    ``after`` from one: steps off each other's grid are walked apart)."""
    buckets: dict[datetime, list[np.ndarray]] = {}
    for when, values in ref.items():
        if keep(floor(when)):
            buckets.setdefault(floor(when), []).append(values)
    filled: dict[datetime, tuple[float | None, int]] = {}
    for start, parts in buckets.items():
        values = np.concatenate(parts)
        filled[start] = (float(NUMPY[agg](values)), int(values.size))
    last = max(buckets, default=None)
    for start in list(buckets):
        run, cursor = [], after(start)
        while last is not None and cursor <= last and cursor not in buckets:
            run.append(cursor)
            cursor = after(cursor)
        if last is not None and cursor <= last:  # the walk met a bucket with values: what it passed are gaps
            filled.update((gap, (None, 0)) for gap in run)
    return [(start, *filled[start]) for start in sorted(filled)]


def assert_matches(got: list[dict[str, Any]], want: Expected) -> None:
    assert [g["time"] for g in got] == [w[0] for w in want]
    assert [g["count"] for g in got] == [w[2] for w in want]
    assert [g["value"] is None for g in got] == [w[1] is None for w in want]
    values = [(g["value"], w[1]) for g, w in zip(got, want, strict=True) if w[1] is not None]
    np.testing.assert_allclose([v[0] for v in values], [v[1] for v in values], rtol=1e-12, atol=1e-9)
    assert all(g["time"].tzinfo is not None and g["time"].utcoffset() == timedelta(0) for g in got)


# --- data ----------------------------------------------------------------------------------------------------


def make_schema(db: Dust, name: str = "vitals", **time: Any) -> None:
    db.create_schema(
        {
            "name": name,
            "axes": [{"name": "metric", "labels": ["hr", "temp", "spo2"]}],
            "time": {"unit": "day", "step": 1, **time},
        }
    )


def add_tensor(
    db: Dust,
    schema: str,
    origin: datetime,
    array: np.ndarray,
    start: int = 0,
    kind: str = "patient",
    **attributes: Any,
) -> uuid.UUID:
    entity = db.create_entity(kind=kind, name=f"{kind} {origin:%j}", attributes=attributes)
    tensor = db.create_tensor(entity.id, schema, origin=origin)
    if not np.isnan(array).all():
        db.write_array(tensor.id, array, start)
    return tensor.id


def random_array(rng: np.random.Generator, cells: tuple[int, ...], steps: int, missing: float = 0.3) -> np.ndarray:
    array = rng.normal(70, 15, size=(*cells, steps)).round(3)
    array[rng.random(array.shape) < missing] = np.nan
    return array


DAY = Grid(timedelta(days=1))


# --- per step ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg", AGGS)
def test_aggregate_aligns_origins_and_skips_missing(db: Dust, agg: str) -> None:
    make_schema(db)
    rng = np.random.default_rng(7)
    written: Written = []
    # different origins (whole days apart), lengths across block boundaries, one tensor written from index 100
    for offset, steps, start in [(0, 150, 0), (3, 64, 0), (10, 200, 0), (70, 1, 0), (-5, 90, 100), (30, 130, 0)]:
        origin = BASE + timedelta(days=offset)
        array = random_array(rng, (3,), steps)
        add_tensor(db, "vitals", origin, array, start)
        written.append((origin, start, array))
    nothing = np.full((3, 5), np.nan)
    add_tensor(db, "vitals", BASE, nothing)  # a tensor with no blocks adds nothing
    with db.session() as s:
        got = insights.aggregate_by_step(s, "vitals", "temp", agg)
    assert_matches(got, expected(reference(written, DAY, 1), agg, DAY.after))
    assert max(g["count"] for g in got) >= 4  # several tensors meet on the same days
    assert any(g["count"] == 0 for g in got)  # and the days between are gaps


@pytest.mark.parametrize("agg", AGGS)
def test_tensors_sharing_origins_fold_together(db: Dust, agg: str) -> None:
    make_schema(db)
    axes = [{"name": "m", "labels": ["a", "b"]}, {"name": "s", "labels": ["x", "y"]}]
    db.create_schema({"name": "grid", "axes": axes})
    rng = np.random.default_rng(5)
    flat: Written = []
    grid: Written = []
    for i in range(12):  # many tensors on two origins: blocks with equal starts fold before indexing by time
        origin = BASE + timedelta(days=7 * (i % 2))
        steps = 70 + 10 * i
        flat.append((origin, 0, random_array(rng, (3,), steps, missing=0.5)))
        grid.append((origin, 0, random_array(rng, (2, 2), steps, missing=0.5)))
        add_tensor(db, "vitals", origin, flat[-1][2])
        add_tensor(db, "grid", origin, grid[-1][2])
    with db.session() as s:
        assert_matches(
            insights.aggregate_by_step(s, "vitals", "spo2", agg), expected(reference(flat, DAY, 2), agg, DAY.after)
        )
        assert_matches(
            insights.aggregate_by_step(s, "grid", "b", agg), expected(reference(grid, DAY, 1), agg, DAY.after)
        )


def test_embedded_aggregate_and_kind_filter(db: Dust) -> None:
    make_schema(db)
    rng = np.random.default_rng(1)
    patients: Written = []
    for offset in (0, 2):
        array = random_array(rng, (3,), 80)
        add_tensor(db, "vitals", BASE + timedelta(days=offset), array)
        patients.append((BASE + timedelta(days=offset), 0, array))
    add_tensor(db, "vitals", BASE, random_array(rng, (3,), 80), kind="device")
    got = db.aggregate("vitals", "hr", kind="patient")
    assert_matches(got, expected(reference(patients, DAY, 0), "mean", DAY.after))
    everyone = db.aggregate("vitals", "hr", agg="count")
    assert sum(g["count"] for g in everyone) > sum(g["count"] for g in got)
    assert db.aggregate("vitals", "hr", kind="nobody") == []


@pytest.mark.parametrize("agg", ["mean", "max", "p95"])
def test_origins_off_the_common_grid_stay_apart(db: Dust, agg: str) -> None:
    """Steps of tensors off each other's grid are not merged, and each grid gets its own gaps."""
    make_schema(db, "hourly", unit="hour")
    rng = np.random.default_rng(3)
    written: Written = []
    for origin in (BASE, BASE + timedelta(minutes=30), BASE + timedelta(hours=5), BASE + timedelta(days=400)):
        array = random_array(rng, (3,), 70, missing=0.1)
        add_tensor(db, "hourly", origin, array)
        written.append((origin, 0, array))
    hour = Grid(timedelta(hours=1))
    with db.session() as s:
        got = insights.aggregate_by_step(s, "hourly", "spo2", agg)
    assert_matches(got, expected(reference(written, hour, 2), agg, hour.after))
    assert any(g["time"].minute == 30 for g in got)


@pytest.mark.parametrize("agg", AGGS)
def test_cells_of_other_axes_and_older_schema_versions(db: Dust, agg: str) -> None:
    db.create_schema(
        {
            "name": "ward",
            "axes": [{"name": "metric", "labels": ["hr", "temp"]}, {"name": "site", "labels": ["a", "b"]}],
        }
    )
    rng = np.random.default_rng(11)
    old = random_array(rng, (2, 2), 100)
    old_id = add_tensor(db, "ward", BASE, old)
    with db.session() as s:
        schemas.publish(
            s,
            "ward",
            SchemaUpdate(
                axes=[Axis(name="metric", labels=["hr", "temp", "rr"]), Axis(name="site", labels=["a", "b", "c"])]
            ),
        )
    new = random_array(rng, (3, 3), 100)
    add_tensor(db, "ward", BASE + timedelta(days=20), new)
    # the old tensor moves to v2 and gets a later block in the new shape; its first blocks keep the old shape
    with db.session() as s:
        tensors.update(s, old_id, tensors.TensorUpdate(schema_version=2))
    later = random_array(rng, (3, 3), 40)
    db.write_array(old_id, later, start=128)
    written: Written = [(BASE, 0, old), (BASE + timedelta(days=20), 0, new), (BASE, 128, later)]
    with db.session() as s:
        hr = insights.aggregate_by_step(s, "ward", "hr", agg)
        rr = insights.aggregate_by_step(s, "ward", "rr", agg)  # not in the old blocks at all
        site_c = insights.aggregate_by_step(s, "ward", "c", agg, axis="site")
    assert_matches(hr, expected(reference(written, DAY, 0), agg, DAY.after))
    assert_matches(rr, expected(reference(written[1:], DAY, 2), agg, DAY.after))
    assert_matches(site_c, expected(reference(written[1:], DAY, (slice(None), 2)), agg, DAY.after))


# --- buckets and windows -------------------------------------------------------------------------------------


def bucket_world(db: Dust, unit: str, zone: str = "UTC") -> tuple[Written, Grid]:
    """Tensors a few steps apart with NaN gaps, a stretch none of them recorded, and one three years later, so
    that every kind of bucket has empty ones; a tensor written from index 100 too."""
    make_schema(db, "series", unit=unit, zone=zone)
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1)}[unit]
    origin = datetime(2026, 1, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    rng = np.random.default_rng(23)
    written: Written = []
    for offset, steps, start in [(0, 400, 0), (3, 380, 0), (10, 300, 0), (1, 50, 100), (3 * 365 + 5, 60, 0)]:
        array = random_array(rng, (3,), steps)
        array[..., 120:200] = np.nan
        at = origin + offset * step if zone == "UTC" else Grid(step, zone).at(origin, offset)
        add_tensor(db, "series", at, array, start)
        written.append((at, start, array))
    if unit == "hour":  # off the grid: a step from 23:30 to 00:30 counts in the day of its start
        late = random_array(rng, (3,), 48, missing=0.0)
        add_tensor(db, "series", origin + timedelta(hours=23, minutes=30), late)
        written.append((origin + timedelta(hours=23, minutes=30), 0, late))
    return written, Grid(step, zone)


BUCKET_CASES = [
    pytest.param("day", "UTC", "week", id="day-by-week"),
    pytest.param("day", "UTC", "month", id="day-by-month"),
    pytest.param("day", "UTC", "year", id="day-by-year"),
    pytest.param("hour", "UTC", "day", id="hour-by-day"),
    pytest.param("day", "Europe/Berlin", "week", id="berlin-day-by-week"),
    pytest.param("day", "Europe/Berlin", "month", id="berlin-day-by-month"),
]


@pytest.mark.parametrize(("unit", "zone", "bucket"), BUCKET_CASES)
@pytest.mark.parametrize("agg", AGGS)
def test_buckets_match_numpy(db: Dust, unit: str, zone: str, bucket: str, agg: str) -> None:
    written, grid = bucket_world(db, unit, zone)
    floor, after = local_bucket(bucket, zone)
    with db.session() as s:
        got = insights.aggregate_by_step(s, "series", "hr", agg, bucket=bucket)
    want = expected(reference(written, grid, 0), agg, after, floor)
    assert_matches(got, want)
    assert any(w[2] == 0 for w in want)  # empty buckets between full ones


@pytest.mark.parametrize(
    ("bucket", "start", "end"),
    [
        pytest.param(None, "2026-02-03T08:00:00Z", "2026-03-10T23:59:59Z", id="steps-inside"),
        pytest.param(None, None, "2026-02-01T00:00:00Z", id="steps-open-start"),
        pytest.param("week", "2026-02-04T12:00:00Z", "2026-05-02T00:00:00Z", id="weeks-mid-week"),
        pytest.param("month", "2026-03-15T00:00:00Z", None, id="months-open-end"),
        pytest.param("week", "2026-05-20T00:00:00Z", "2026-06-10T00:00:00Z", id="weeks-empty-stretch"),
    ],
)
def test_from_to_keep_whole_steps_and_buckets_holding_them(
    db: Dust, bucket: str | None, start: str | None, end: str | None
) -> None:
    written, grid = bucket_world(db, "day")
    low = None if start is None else datetime.fromisoformat(start)
    high = None if end is None else datetime.fromisoformat(end)
    floor, after = local_bucket(bucket or "day")

    def kept(b: datetime) -> bool:  # a bucket holding a moment from `from` to `to`
        return (high is None or b <= high) and (low is None or after(b) > low)

    with db.session() as s:
        got = insights.aggregate_by_step(s, "series", "temp", "p50", bucket=bucket, start=low, end=high)
    assert_matches(got, expected(reference(written, grid, 1), "p50", after, floor, kept))


@pytest.mark.parametrize(
    ("time", "bucket", "message"),
    [
        pytest.param(
            {"unit": "day"},
            "hour",
            "finer than the steps of schema s; allowed for schema s (steps of 1 day): day, week, month, year",
            id="finer",
        ),
        pytest.param(
            {"unit": "day", "step": 2},
            "week",
            "whole number of schema s's steps; allowed for schema s (steps "
            "of 2 days): none beyond its own steps (leave bucket out)",
            id="unaligned-week",
        ),
        pytest.param({"unit": "week"}, "month", "allowed for schema s (steps of 1 week): week", id="unaligned-month"),
        pytest.param({"unit": "hour", "step": 7}, "day", "(steps of 7 hours): week", id="unaligned-day"),
        pytest.param({"unit": "day"}, "weak", "did you mean 'week'?", id="unknown"),
    ],
)
def test_buckets_finer_or_unaligned_are_refused_naming_those_allowed(
    db: Dust, time: dict[str, Any], bucket: str, message: str
) -> None:
    db.create_schema({"name": "s", "axes": [{"name": "metric", "labels": ["hr"]}], "time": time})
    with pytest.raises(InvalidInput, match="bucket") as refused:
        db.aggregate("s", "hr", bucket=bucket)
    assert message in refused.value.detail


def test_a_bucket_as_long_as_a_step_is_the_steps_themselves(db: Dust) -> None:
    make_schema(db, "hourly", unit="hour")
    add_tensor(db, "hourly", BASE + timedelta(minutes=30), np.array([[1.0, 2.0], [np.nan] * 2, [np.nan] * 2]))
    assert db.aggregate("hourly", "hr", bucket="hour") == db.aggregate("hourly", "hr")
    assert [g["time"].minute for g in db.aggregate("hourly", "hr", bucket="hour")] == [30, 30]


def test_an_answer_is_bounded_and_says_how_to_narrow_it(db: Dust, monkeypatch: pytest.MonkeyPatch) -> None:
    make_schema(db)
    add_tensor(db, "vitals", BASE, np.full((3, 1), 1.0))
    add_tensor(db, "vitals", BASE + timedelta(days=40), np.full((3, 1), 1.0))
    monkeypatch.setattr(insights, "MAX_POINTS", 30)
    with pytest.raises(InvalidInput, match=r"spans 41 steps.*at most 30: narrow it with from/to, or choose a coars"):
        db.aggregate("vitals", "hr")
    assert len(db.aggregate("vitals", "hr", bucket="week")) == 7


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        pytest.param("America/New_York", "0001-01-01T00:00:00Z", None, id="before-year-1-locally"),
        pytest.param("Asia/Tokyo", None, "9999-12-31T23:00:00Z", id="after-year-9999-locally"),
    ],
)
def test_bounds_past_the_calendar_in_the_schemas_zone_are_open_ends(
    db: Dust, zone: str, start: str | None, end: str | None
) -> None:
    make_schema(db, zone=zone)
    add_tensor(db, "vitals", BASE, np.full((3, 2), 1.0))
    assert sum(p["count"] for p in db.aggregate("vitals", "hr", bucket="month", start=start, end=end)) == 2


def test_from_after_to_is_refused(db: Dust) -> None:
    make_schema(db)
    with pytest.raises(InvalidInput, match=r"from \(2026-02-01T00:00:00Z\) is after to \(2026-01-01T00:00:00Z\)"):
        db.aggregate("vitals", "hr", start="2026-02-01T00:00:00Z", end="2026-01-01")


# --- cohorts -------------------------------------------------------------------------------------------------

PATIENTS = {  # attributes; each patient's value is 2**i, so a sum names exactly who was counted
    "p0": {"ward": "A", "age": 51},
    "p1": {"ward": "B", "age": "51"},
    "p2": {"ward": "A", "age": 51.0, "icu": True},
    "p3": {"ward": "C"},
    "p4": {"ward": "A"},
}


@pytest.fixture
def cohort_world(db: Dust) -> dict[str, uuid.UUID]:
    """Dr House treats p0 and p2, consults p3, treated p4 (the relation ended), and p1 "treats" House (a relation
    the other way round); every patient has 3 days of one value, 2**i."""
    make_schema(db)
    ids = {"house": db.create_entity("doctor", "Dr House").id}
    for i, (name, attributes) in enumerate(PATIENTS.items()):
        entity = db.create_entity("patient", name, attributes=attributes)
        tensor = db.create_tensor(entity.id, "vitals", origin=BASE)
        db.write_array(tensor.id, np.full((3, 3), float(2**i)))
        ids[name] = entity.id
    house = ids["house"]
    db.relate(house, ids["p0"], "treats")
    db.relate(house, ids["p2"], "treats")
    db.relate(ids["p1"], house, "treats")
    db.relate(house, ids["p3"], "consults")
    db.relate(house, ids["p4"], "treats", valid_from="2020-01-01T00:00:00Z", valid_to="2021-01-01T00:00:00Z")
    return ids


@pytest.mark.parametrize(
    ("filters", "who"),
    [
        pytest.param({"ward": "A"}, {"p0", "p2", "p4"}, id="text"),
        pytest.param({"age": 51}, {"p0", "p2"}, id="number-matches-51.0-not-text"),
        pytest.param({"age": "51"}, {"p1"}, id="text-not-number"),
        pytest.param({"icu": True}, {"p2"}, id="boolean"),
        pytest.param({"ward": "A", "icu": True}, {"p2"}, id="both"),
        pytest.param({"related_to": "house", "relation": "treats"}, {"p0", "p1", "p2"}, id="treats-either-way-now"),
        pytest.param({"related_to": "house"}, {"p0", "p1", "p2", "p3"}, id="any-type"),
        pytest.param({"related_to": "house", "relation": "consults,treats"}, {"p0", "p1", "p2", "p3"}, id="types"),
        pytest.param({"related_to": "house", "relation": "treats", "ward": "A"}, {"p0", "p2"}, id="related-and-attr"),
        pytest.param({"related_to": "house", "kind": "doctor"}, set(), id="related-of-another-kind"),
        pytest.param({"ward": "Z"}, set(), id="nobody"),
    ],
)
def test_cohorts_by_attributes_and_relations(
    db: Dust, cohort_world: dict[str, uuid.UUID], filters: dict[str, Any], who: set[str]
) -> None:
    if "related_to" in filters:
        filters = {**filters, "related_to": cohort_world[filters["related_to"]]}
    got = db.aggregate("vitals", "temp", agg="sum", **filters)
    total = sum(2**i for i, name in enumerate(PATIENTS) if name in who)
    assert [(g["value"], g["count"]) for g in got] == ([(float(total), len(who))] * 3 if who else [])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        pytest.param({"relation": "treats"}, InvalidInput, "relation needs related_to", id="relation-alone"),
        pytest.param({"related_to": "house", "relation": "Treats!"}, InvalidInput, "not a relation type", id="type"),
        pytest.param({"related_to": "nobody"}, NotFound, "does not exist", id="no-such-entity"),
        pytest.param({f"k{i}": 1 for i in range(17)}, InvalidInput, "at most 16 attribute filters", id="too-many"),
        pytest.param({"ward": [1, 2]}, InvalidInput, "a string, a finite number or a boolean", id="not-a-scalar"),
    ],
)
def test_cohort_filters_that_cannot_be_taken(
    db: Dust, cohort_world: dict[str, uuid.UUID], arguments: dict[str, Any], error: type, message: str
) -> None:
    if "related_to" in arguments:
        arguments = {**arguments, "related_to": cohort_world.get(arguments["related_to"], uuid.uuid4())}
    with pytest.raises(error, match=message):
        db.aggregate("vitals", "temp", **arguments)


# --- who sees what -------------------------------------------------------------------------------------------


def test_only_entities_the_reader_may_see_count(db: Dust) -> None:
    make_schema(db)
    mine = add_tensor(db, "vitals", BASE, np.full((3, 2), 10.0))
    theirs = add_tensor(db, "vitals", BASE, np.full((3, 2), 30.0))
    doctor = db.create_entity(kind="doctor", name="Dr A")
    with db.session() as s:
        patient = tensors.get_row(s, mine).entity_id
        other = tensors.get_row(s, theirs).entity_id
        relations.create(s, RelationCreate(source_id=doctor.id, target_id=patient, type="treats"))
    with db.session() as s:
        assert [p["value"] for p in insights.aggregate_by_step(s, "vitals", "hr")] == [20.0, 20.0]
        access.act_as(s, principal(Role.clinician, doctor.id))
        seen = insights.aggregate_by_step(s, "vitals", "hr")
        p95 = insights.aggregate_by_step(s, "vitals", "hr", "p95", bucket="week")
        with pytest.raises(NotFound, match=str(other)):  # a cohort around someone hidden is 404, as they are
            insights.aggregate_by_step(s, "vitals", "hr", related_to=other)
    assert [(p["value"], p["count"]) for p in seen] == [(10.0, 1), (10.0, 1)]
    assert [(p["value"], p["count"]) for p in p95] == [(10.0, 2)]


def test_an_analyst_aggregates_a_sensitive_schema_but_reads_no_tensor_of_it(db: Dust) -> None:
    db.create_schema({"name": "hiv", "sensitive": True, "axes": [{"name": "m", "labels": ["load"]}]})
    first = add_tensor(db, "hiv", BASE, np.array([[100.0, 200.0]]), ward="A", ssn="123")
    add_tensor(db, "hiv", BASE, np.array([[300.0, np.nan]]), ward="B")
    with db.session() as s:
        access.act_as(s, replace(principal(Role.analyst), min_cohort=1))  # cohorts of one: see the next test
        got = insights.aggregate_by_step(s, "hiv", "load", "sum")
        ward = insights.aggregate_by_step(s, "hiv", "load", "sum", attributes={"ward": "A"})
        with pytest.raises(Forbidden, match="sensitive"):
            tensors.read(s, first)
        with pytest.raises(Forbidden, match="attribute 'ssn' is sensitive"):
            insights.aggregate_by_step(s, "hiv", "load", attributes={"ssn": "123"})
    assert [(p["value"], p["count"]) for p in got] == [(400.0, 2), (200.0, 1)]
    assert [p["value"] for p in ward] == [100.0, 200.0]


@pytest.fixture
def small_cohorts(db: Dust) -> None:
    """Heart rates: three patients on days 0 and 1 (a Thursday and a Friday; two of them in ward A), a fourth
    alone on day 4 (the Monday after)."""
    make_schema(db)
    for ward in ("A", "A", "B"):
        add_tensor(db, "vitals", BASE, np.array([[70.0, 72.0], [np.nan] * 2, [np.nan] * 2]), ward=ward)
    add_tensor(db, "vitals", BASE, np.array([[90.0], [np.nan], [np.nan]]), start=4, ward="B")


SMALL_COHORTS = {  # (agg, bucket, attributes) -> [(value, suppressed)] per point, for an analyst with min_cohort 3
    "days": ("mean", None, {}, [(70.0, False), (72.0, False), (None, False), (None, False), (None, True)]),
    "weeks": ("mean", "week", {}, [(71.0, False), (None, True)]),
    "p95 by day": ("p95", None, {}, [(70.0, False), (72.0, False), (None, False), (None, False), (None, True)]),
    # two patients, four values in the week: entities count, not values
    "ward A by week": ("mean", "week", {"ward": "A"}, [(None, True)]),
}


@pytest.mark.parametrize(("agg", "bucket", "attributes", "points"), SMALL_COHORTS.values(), ids=SMALL_COHORTS)
def test_an_analyst_gets_no_point_with_fewer_entities_behind_it_than_the_least_cohort(
    db: Dust, small_cohorts: None, agg: str, bucket: str | None, attributes: dict[str, str], points: list[Any]
) -> None:
    with db.session() as s:
        access.act_as(s, replace(principal(Role.analyst), min_cohort=3))
        got = insights.aggregate_by_step(s, "vitals", "hr", agg, bucket=bucket, attributes=attributes)
    assert [(p["value"], p.get("suppressed", False)) for p in got] == points


def test_a_cohort_of_members_is_narrowed_like_the_others_and_still_suppressed(db: Dust) -> None:
    """``members``: a cohort given by entity ids (dust.ask's age- or value-picked cohorts), within the kind,
    attributes and access policy, and under the small-cohort rule."""
    make_schema(db)
    ids = [add_tensor(db, "vitals", BASE, np.array([[v], [np.nan], [np.nan]]), ward=w) for v, w in ((60.0, "A"),
           (70.0, "A"), (80.0, "B"))]  # fmt: skip
    owners = [db.get_tensor(t).entity_id for t in ids]
    with db.session() as s:
        assert [p["value"] for p in insights.aggregate_by_step(s, "vitals", "hr", members=owners[:2])] == [65.0]
        narrowed = insights.aggregate_by_step(s, "vitals", "hr", attributes={"ward": "B"}, members=owners[1:])
        assert [p["value"] for p in narrowed] == [80.0]
        assert insights.aggregate_by_step(s, "vitals", "hr", members=[]) == []
        assert insights.aggregate_by_step(s, "vitals", "hr", kind="nurse", members=owners) == []
        access.act_as(s, replace(principal(Role.analyst), min_cohort=3))
        [hidden] = insights.aggregate_by_step(s, "vitals", "hr", members=owners[:2])
    assert hidden["value"] is None and hidden["suppressed"]


def test_nobody_else_has_points_suppressed(db: Dust, small_cohorts: None) -> None:
    with db.session() as s:
        access.act_as(s, replace(principal(Role.admin), min_cohort=3))
        got = insights.aggregate_by_step(s, "vitals", "hr", bucket="week")
    assert [(p["value"], p["count"], "suppressed" in p) for p in got] == [(71.0, 6, False), (90.0, 1, False)]


# --- input and numbers ---------------------------------------------------------------------------------------


def test_unknown_schema_label_axis_or_agg_say_what_is_allowed(db: Dust) -> None:
    make_schema(db)
    db.create_schema(
        {"name": "pairs", "axes": [{"name": "src", "labels": ["x", "y"]}, {"name": "dst", "labels": ["x", "z"]}]}
    )
    with db.session() as s:
        with pytest.raises(NotFound, match="vitals"):
            insights.aggregate_by_step(s, "vitalz", "hr")
        with pytest.raises(InvalidInput, match="did you mean 'temp'") as label:
            insights.aggregate_by_step(s, "vitals", "tmp")
        assert "hr, temp, spo2" in label.value.detail
        with pytest.raises(InvalidInput, match="mean, min, max, sum, count, p50, p95"):
            insights.aggregate_by_step(s, "vitals", "hr", "median")
        with pytest.raises(InvalidInput, match="did you mean 'p95'"):
            insights.aggregate_by_step(s, "vitals", "hr", "p59")
        with pytest.raises(InvalidInput, match="several axes"):
            insights.aggregate_by_step(s, "pairs", "x")
        with pytest.raises(InvalidInput, match="not an axis"):
            insights.aggregate_by_step(s, "pairs", "x", axis="dest")
        assert insights.aggregate_by_step(s, "pairs", "x", axis="dst") == []


def test_aggregates_of_finite_values_near_float64s_largest_do_not_overflow(db: Dust) -> None:
    """Two tensors hold 1.5e308 on day 0: their sum is past float64 (inf, documented), their mean is not. Day 1's
    values sum back inside float64 after passing it; day 2's are tiny, and stay exact however the others are
    summed. Percentiles interpolate between values a whole float64 range apart without overflowing."""
    make_schema(db)
    big, tiny = 1.5e308, 5e-324
    add_tensor(db, "vitals", BASE, np.array([[big, big, tiny], [1.0] * 3, [1.0] * 3]))
    add_tensor(db, "vitals", BASE, np.array([[big, big, tiny], [1.0] * 3, [1.0] * 3]))
    add_tensor(db, "vitals", BASE, np.array([[1.0, -big, tiny], [1.0] * 3, [1.0] * 3]))
    with db.session() as s:
        got = {agg: [g["value"] for g in insights.aggregate_by_step(s, "vitals", "hr", agg)] for agg in AGGS}
        week = insights.aggregate_by_step(s, "vitals", "hr", "mean", bucket="week")
    np.testing.assert_allclose(got["mean"], [1e308, big / 3, tiny], rtol=1e-15)
    assert got["mean"][2] == tiny
    assert got["sum"] == [np.inf, big, 3 * tiny]
    assert got["max"] == [big, big, tiny] and got["min"] == [1.0, -big, tiny] and got["count"] == [3.0, 3.0, 3.0]
    assert got["p50"] == [big, big, tiny]
    np.testing.assert_allclose(got["p95"], [big, big, tiny], rtol=1e-15)
    np.testing.assert_allclose([w["value"] for w in week], [big / 3], rtol=1e-15)


@pytest.mark.parametrize(("agg", "want"), [("p50", 0.0), ("p95", 0.9 * 1.5e308)])
def test_percentiles_between_values_a_float64_range_apart(db: Dust, agg: str, want: float) -> None:
    make_schema(db)
    add_tensor(db, "vitals", BASE, np.array([[-1.5e308], [1.0], [1.0]]))
    add_tensor(db, "vitals", BASE, np.array([[1.5e308], [1.0], [1.0]]))
    [point] = db.aggregate("vitals", "hr", agg=agg)
    assert point["count"] == 2
    np.testing.assert_allclose(point["value"], want, rtol=1e-15, atol=1e-300)
