"""dust.engine.insights: aggregates across tensors per absolute time step, against a NumPy reference."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from dust.core.errors import InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import insights, schemas, tensors
from dust.engine.schemas import Axis, SchemaUpdate

BASE = datetime(2026, 1, 1, tzinfo=UTC)
AGGS = ["mean", "min", "max", "sum", "count"]
Written = list[tuple[datetime, int, np.ndarray]]  # (origin, start index, array (*cells, time))


def make_schema(db: Dust, name: str = "vitals", **time: Any) -> None:
    db.create_schema(
        {
            "name": name,
            "axes": [{"name": "metric", "labels": ["hr", "temp", "spo2"]}],
            "time": {"unit": "day", "step": 1, **time},
        }
    )


def add_tensor(
    db: Dust, schema: str, origin: datetime, array: np.ndarray, start: int = 0, kind: str = "patient"
) -> uuid.UUID:
    entity = db.create_entity(kind=kind, name=f"{kind} {origin:%j}")
    tensor = db.create_tensor(entity.id, schema, origin=origin)
    if not np.isnan(array).all():
        db.write_array(tensor.id, array, start)
    return tensor.id


def random_array(rng: np.random.Generator, cells: tuple[int, ...], steps: int, missing: float = 0.3) -> np.ndarray:
    array = rng.normal(70, 15, size=(*cells, steps)).round(3)
    array[rng.random(array.shape) < missing] = np.nan
    return array


def reference(written: Written, step: timedelta, pick: Any) -> dict[datetime, np.ndarray]:
    """Every recorded value of the picked cells, by absolute time."""
    times: list[datetime] = []
    values: list[np.ndarray] = []
    for origin, start, array in written:
        picked = array[pick].reshape(-1, array.shape[-1])
        for t in range(array.shape[-1]):
            times.append(origin + (start + t) * step)
            values.append(picked[:, t])
    by_time: dict[datetime, list[np.ndarray]] = {}
    for when, vals in zip(times, values, strict=True):
        by_time.setdefault(when, []).append(vals)
    out = {when: np.concatenate(parts) for when, parts in by_time.items()}
    return {when: vals[~np.isnan(vals)] for when, vals in sorted(out.items()) if (~np.isnan(vals)).any()}


def expected(ref: dict[datetime, np.ndarray], agg: str) -> list[tuple[datetime, float, int]]:
    fn = {"mean": np.mean, "min": np.min, "max": np.max, "sum": np.sum, "count": np.size}[agg]
    return [(when, float(fn(vals)), int(vals.size)) for when, vals in ref.items()]


def assert_matches(got: list[dict[str, Any]], want: list[tuple[datetime, float, int]]) -> None:
    assert [g["time"] for g in got] == [w[0] for w in want]
    assert [g["count"] for g in got] == [w[2] for w in want]
    np.testing.assert_allclose([g["value"] for g in got], [w[1] for w in want], rtol=1e-12, atol=1e-9)
    assert all(g["time"].tzinfo is not None and g["time"].utcoffset() == timedelta(0) for g in got)


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
    assert_matches(got, expected(reference(written, timedelta(days=1), 1), agg))
    assert max(g["count"] for g in got) >= 4  # several tensors meet on the same days


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
    day = timedelta(days=1)
    with db.session() as s:
        assert_matches(insights.aggregate_by_step(s, "vitals", "spo2", agg), expected(reference(flat, day, 2), agg))
        assert_matches(insights.aggregate_by_step(s, "grid", "b", agg), expected(reference(grid, day, 1), agg))


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
    assert_matches(got, expected(reference(patients, timedelta(days=1), 0), "mean"))
    everyone = db.aggregate("vitals", "hr", agg="count")
    assert sum(g["count"] for g in everyone) > sum(g["count"] for g in got)
    assert db.aggregate("vitals", "hr", kind="nobody") == []


def test_origins_off_the_common_grid_stay_apart(db: Dust) -> None:
    make_schema(db, "hourly", unit="hour")
    rng = np.random.default_rng(3)
    written: Written = []
    for origin in (BASE, BASE + timedelta(minutes=30), BASE + timedelta(hours=5), BASE + timedelta(days=400)):
        array = random_array(rng, (3,), 70, missing=0.1)
        add_tensor(db, "hourly", origin, array)
        written.append((origin, 0, array))
    with db.session() as s:
        for agg in ("mean", "max"):
            got = insights.aggregate_by_step(s, "hourly", "spo2", agg)
            assert_matches(got, expected(reference(written, timedelta(hours=1), 2), agg))
    assert any(g["time"].minute == 30 for g in got)


def test_cells_of_other_axes_and_older_schema_versions(db: Dust) -> None:
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
    day = timedelta(days=1)
    with db.session() as s:
        for agg in AGGS:
            got = insights.aggregate_by_step(s, "ward", "hr", agg)
            assert_matches(got, expected(reference(written, day, 0), agg))
        rr = insights.aggregate_by_step(s, "ward", "rr", "sum")  # not in the old blocks at all
        assert_matches(rr, expected(reference(written[1:], day, 2), "sum"))
        site_c = insights.aggregate_by_step(s, "ward", "c", "count", axis="site")
        assert_matches(site_c, expected(reference(written[1:], day, (slice(None), 2)), "count"))


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
        with pytest.raises(InvalidInput, match="mean, min, max, sum, count"):
            insights.aggregate_by_step(s, "vitals", "hr", "median")
        with pytest.raises(InvalidInput, match="several axes"):
            insights.aggregate_by_step(s, "pairs", "x")
        with pytest.raises(InvalidInput, match="not an axis"):
            insights.aggregate_by_step(s, "pairs", "x", axis="dest")
        assert insights.aggregate_by_step(s, "pairs", "x", axis="dst") == []


def test_only_entities_the_reader_may_see_count(db: Dust) -> None:
    from dust.core.security import Role
    from dust.engine import access, relations
    from dust.engine.relations import RelationCreate

    make_schema(db)
    mine = add_tensor(db, "vitals", BASE, np.full((3, 2), 10.0))
    add_tensor(db, "vitals", BASE, np.full((3, 2), 30.0))
    doctor = db.create_entity(kind="doctor", name="Dr A")
    with db.session() as s:
        patient = tensors.get_row(s, mine).entity_id
        relations.create(s, RelationCreate(source_id=doctor.id, target_id=patient, type="treats"))
    with db.session() as s:
        assert [p["value"] for p in insights.aggregate_by_step(s, "vitals", "hr")] == [20.0, 20.0]
        access.act_as(
            s,
            access.Principal(
                user_id=uuid.uuid4(),
                username="alice",
                role=Role.clinician,
                entity_id=doctor.id,
                secret="k" * 32,
                grant_types=["treats"],
                depth=1,
                default_sensitive=[],
            ),
        )
        seen = insights.aggregate_by_step(s, "vitals", "hr")
    assert [(p["value"], p["count"]) for p in seen] == [(10.0, 1), (10.0, 1)]


def test_aggregates_of_finite_values_near_float64s_largest_do_not_overflow(db: Dust) -> None:
    """Two tensors hold 1.5e308 on day 0: their sum is past float64 (inf, documented), their mean is not. Day 1's
    values sum back inside float64 after passing it; day 2's are tiny, and stay exact however the others are
    summed."""
    make_schema(db)
    big, tiny = 1.5e308, 5e-324
    add_tensor(db, "vitals", BASE, np.array([[big, big, tiny], [1.0] * 3, [1.0] * 3]))
    add_tensor(db, "vitals", BASE, np.array([[big, big, tiny], [1.0] * 3, [1.0] * 3]))
    add_tensor(db, "vitals", BASE, np.array([[1.0, -big, tiny], [1.0] * 3, [1.0] * 3]))
    with db.session() as s:
        got = {agg: [g["value"] for g in insights.aggregate_by_step(s, "vitals", "hr", agg)] for agg in AGGS}
    np.testing.assert_allclose(got["mean"], [1e308, big / 3, tiny], rtol=1e-15)
    assert got["mean"][2] == tiny
    assert got["sum"] == [np.inf, big, 3 * tiny]
    assert got["max"] == [big, big, tiny] and got["min"] == [1.0, -big, tiny] and got["count"] == [3.0, 3.0, 3.0]
