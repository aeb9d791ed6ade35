"""dust.engine.analysis: trend, seasonality and forecast of one series, on generated series whose answers are
known (a slope, a period, none of either)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from dust.core.errors import Forbidden, InvalidInput, NotFound, OutOfRange
from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import access, analysis
from tests.api.conftest import ONE_BACKEND
from tests.engine.conftest import principal

BASE = datetime(2026, 1, 1, tzinfo=UTC)
# The statistics do not depend on the backend, whose read path the tensor tests cover: those cases run on one.
STATISTICS = ONE_BACKEND


def series(db: Dust, values: np.ndarray, unit: str = "day", step: int = 1, **schema: Any) -> uuid.UUID:
    """A tensor whose heart rates (sitting) are ``values`` from index 0; other cells hold nothing."""
    if not db.schemas():
        db.create_schema(
            {
                "name": "vitals",
                "axes": [{"name": "metric", "labels": ["hr", "temp"]}, {"name": "position", "labels": ["sit", "lie"]}],
                "time": {"unit": unit, "step": step},
                **schema,
            }
        )
    entity = db.create_entity("patient", "Pat")
    tensor = db.create_tensor(entity.id, "vitals", origin=BASE)
    array = np.full((2, 2, values.size), np.nan)
    array[0, 0] = values
    db.write_array(tensor.id, array)
    return tensor.id


def noisy(rng: np.random.Generator, n: int, slope: float = 0.0, period: int | None = None, gaps: float = 0.15):
    t = np.arange(n)
    clean = 70 + slope * t + (4 * np.sin(2 * np.pi * t / period) if period else 0)
    y = clean + rng.normal(0, 1, n)
    y[rng.random(n) < gaps] = np.nan
    y[[0, -1]] = clean[[0, -1]]  # recorded: the span is the whole series
    return y


@STATISTICS
@pytest.mark.parametrize(
    ("slope", "unit", "step", "n"),
    [
        pytest.param(0.3, "day", 1, 90, id="rising-daily"),
        pytest.param(-0.8, "day", 1, 40, id="falling-daily"),
        pytest.param(0.0, "day", 1, 60, id="level"),
        pytest.param(0.6, "day", 2, 60, id="two-day-steps-per-day"),
        pytest.param(0.05, "hour", 1, 300, id="hourly"),
    ],
)
def test_the_trend_interval_holds_the_known_slope_per_time_unit(
    db: Dust, slope: float, unit: str, step: int, n: int
) -> None:
    rng = np.random.default_rng(int(abs(slope) * 100) + n)
    tensor = series(db, noisy(rng, n, slope * step), unit, step)  # slope per unit: step units a step
    found = db.analysis(tensor, "hr", position="sit").trend
    assert found.per == unit
    assert found.low is not None and found.high is not None and found.slope is not None
    assert found.low <= slope <= found.high
    assert found.high - found.low < 0.2 + abs(slope)  # an interval that says something
    if slope:
        assert found.p_value is not None and found.p_value < 0.01


@STATISTICS
@pytest.mark.parametrize(("period", "n"), [(7, 60), (7, 200), (12, 120), (24, 400)])
def test_a_known_period_is_found_and_carried_into_the_forecast(db: Dust, period: int, n: int) -> None:
    rng = np.random.default_rng(period * n)
    tensor = series(db, noisy(rng, n, 0.02, period))
    result = db.analysis(tensor, "hr", horizon=2 * period, position="sit")
    assert result.seasonality is not None
    assert result.seasonality.period == period
    assert result.seasonality.strength > 0.5
    assert result.forecast.model.startswith("STL + ETS(")
    ahead = np.arange(n, n + 2 * period)
    truth = 70 + 0.02 * ahead + 4 * np.sin(2 * np.pi * ahead / period)  # the noiseless continuation
    points = result.forecast.points
    assert [p.index for p in points] == ahead.tolist()
    assert all(
        p.low is not None and p.high is not None and p.low <= t <= p.high for p, t in zip(points, truth, strict=True)
    )
    errors = np.array([p.value for p in points]) - truth
    assert np.abs(errors).mean() < 1.5  # the season, not a flat line (which would be off by 2.5 on average)


@STATISTICS
@pytest.mark.parametrize(
    ("name", "make"),
    [
        pytest.param("noise", lambda r: r.normal(70, 3, 150), id="noise"),
        pytest.param("trend", lambda r: 50 + 0.4 * np.arange(120) + r.normal(0, 1, 120), id="trend"),
        pytest.param("walk", lambda r: 70 + np.cumsum(r.normal(0, 1, 200)), id="random-walk"),
    ],
)
def test_no_period_is_claimed_where_there_is_none(db: Dust, name: str, make: Any) -> None:
    tensor = series(db, make(np.random.default_rng(42)))
    result = db.analysis(tensor, "hr", position="sit")
    assert result.seasonality is None
    assert result.forecast.model.startswith("ETS(")
    assert len(result.forecast.points) == analysis.HORIZON


def test_a_flat_series_has_no_slope_no_period_and_stays_flat(db: Dust) -> None:
    tensor = series(db, np.full(20, 36.6))
    result = db.analysis(tensor, "hr", horizon=3, position="sit")
    assert (result.trend.slope, result.trend.low, result.trend.high, result.trend.p_value) == (0.0, 0.0, 0.0, None)
    assert result.seasonality is None
    assert result.forecast.model == "constant"
    assert [(p.value, p.low, p.high) for p in result.forecast.points] == [(36.6, 36.6, 36.6)] * 3


@pytest.mark.parametrize("recorded", [0, 1, analysis.MIN_POINTS - 1])
def test_too_few_values_say_how_many_are_needed(db: Dust, recorded: int) -> None:
    values = np.full(30, np.nan)
    values[: recorded * 3 : 3] = 70.0
    tensor = series(db, values) if recorded else series(db, np.array([np.nan]))
    db.write_values(tensor, [{"time": 40, "metric": "temp", "position": "sit", "value": 37.0}])
    with pytest.raises(InvalidInput, match=f"at least {analysis.MIN_POINTS} recorded values; hr of tensor .* has "):
        db.analysis(tensor, "hr", position="sit")


@STATISTICS
@pytest.mark.parametrize("n", [analysis.MIN_POINTS, analysis.MIN_POINTS + 1, 12])
def test_the_shortest_series_analysed_get_a_simple_model(db: Dust, n: int) -> None:
    rng = np.random.default_rng(n)
    tensor = series(db, 70 + rng.normal(0, 2, n))
    result = db.analysis(tensor, "hr", position="sit")
    assert result.values == n
    assert all(p.low is not None and p.high is not None and p.low < p.high for p in result.forecast.points)


def test_the_forecast_continues_the_grid_after_the_last_value_and_from_to_narrow_the_span(db: Dust) -> None:
    values = 70 + np.random.default_rng(3).normal(0, 1, 40)
    values[35:] = np.nan
    tensor = series(db, values)
    whole = db.analysis(tensor, "hr", horizon=2, position="sit")
    assert (whole.start, whole.end, whole.values) == (BASE, BASE + timedelta(days=34), 35)
    assert [(p.index, p.time) for p in whole.forecast.points] == [
        (35, BASE + timedelta(days=35)),
        (36, BASE + timedelta(days=36)),
    ]
    part = db.analysis(tensor, "hr", start="2026-01-05T12:00:00Z", end=20, position="sit")
    assert (part.start, part.end, part.values) == (BASE + timedelta(days=4), BASE + timedelta(days=20), 17)
    assert part.model_dump(mode="json")["start"] == "2026-01-05T00:00:00Z"


@pytest.mark.parametrize(
    ("label", "selection", "message"),
    [
        pytest.param("hr", {}, "name a label of axis position too, as position=<label> (labels: sit, lie)", id="free"),
        pytest.param("hrr", {"position": "sit"}, "did you mean 'hr'", id="unknown-label"),
        pytest.param("hr", {"posture": "sit"}, "'posture' is not an axis of schema vitals", id="unknown-axis"),
        pytest.param("hr", {"position": "stand"}, "label 'stand' is not in axis position", id="unknown-pick"),
    ],
)
def test_a_series_is_one_label_of_each_axis(db: Dust, label: str, selection: dict[str, str], message: str) -> None:
    tensor = series(db, np.arange(10.0))
    with pytest.raises(InvalidInput) as refused:
        db.analysis(tensor, label, **selection)
    assert message in refused.value.detail


def test_an_axis_with_one_label_needs_no_pick_and_the_label_may_be_on_any_axis(db: Dust) -> None:
    db.create_schema({"name": "vitals", "axes": [{"name": "site", "labels": ["arm"]}, {"name": "m", "labels": ["hr"]}]})
    entity = db.create_entity("patient", "Pat")
    tensor = db.create_tensor(entity.id, "vitals", origin=BASE)
    db.write_array(tensor.id, (70 + np.arange(12.0)).reshape(1, 1, 12))
    result = db.analysis(tensor.id, "hr")
    assert result.selection == {"site": "arm", "m": "hr"}
    assert result.trend.slope == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        pytest.param({"horizon": 0}, InvalidInput, "horizon: Input should be greater than or equal to 1", id="zero"),
        pytest.param({"horizon": analysis.MAX_HORIZON + 1}, InvalidInput, "less than or equal to 365", id="long"),
        pytest.param({"start": 500}, OutOfRange, "outside 0..29 recorded", id="outside"),
    ],
)
def test_horizons_and_windows_out_of_bounds(db: Dust, arguments: dict[str, Any], error: type, message: str) -> None:
    tensor = series(db, 70 + np.arange(30.0))
    with pytest.raises(error, match=message):
        db.analysis(tensor, "hr", position="sit", **arguments)


def test_a_series_over_the_longest_span_says_to_narrow_it(db: Dust, monkeypatch: pytest.MonkeyPatch) -> None:
    tensor = series(db, 70 + np.arange(30.0))
    monkeypatch.setattr(analysis, "MAX_STEPS", 20)
    with pytest.raises(InvalidInput, match=r"spans 30 steps .* at most 20: narrow it with from/to"):
        db.analysis(tensor, "hr", position="sit")
    assert db.analysis(tensor, "hr", start=10, position="sit").values == 20


@STATISTICS
def test_values_near_float64s_largest_give_numbers_or_null_never_an_error(db: Dust) -> None:
    rng = np.random.default_rng(9)
    tensor = series(db, np.where(rng.random(30) < 0.5, 1.7e308, -1.7e308))
    result = db.analysis(tensor, "hr", position="sit").model_dump(mode="json")
    numbers = [result["trend"]["slope"], *(p["value"] for p in result["forecast"]["points"])]
    assert all(n is None or np.isfinite(n) for n in numbers)


@pytest.mark.parametrize(
    ("role", "sensitive", "error"),
    [
        pytest.param(Role.analyst, True, Forbidden, id="analyst-sensitive"),
        pytest.param(Role.analyst, False, None, id="analyst"),
        pytest.param(Role.clinician, False, NotFound, id="clinician-not-theirs"),
    ],
)
def test_read_as_a_tensor_read_is(db: Dust, role: Role, sensitive: bool, error: type | None) -> None:
    tensor = series(db, 70 + np.arange(10.0), sensitive=sensitive)
    with db.session() as s:
        access.act_as(s, principal(role, uuid.uuid4() if role is Role.clinician else None, sensitive=()))
        if error is None:
            assert analysis.analyse(s, tensor, "hr", selection={"position": "sit"}).values == 10
        else:
            with pytest.raises(error):
                analysis.analyse(s, tensor, "hr", selection={"position": "sit"})
