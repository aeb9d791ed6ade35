"""The built-in detectors on generated series: planted anomalies are flagged where they are, with the right
reason, and normal stretches are not; constant series, gaps, restarts and look-ahead."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from dust.anomalies.base import Score
from dust.anomalies.detectors import DETECTORS, THRESHOLD, make, score_series
from dust.core.errors import InvalidInput

N = 1200
AT = 900  # where anomalies are planted: after every detector's warm-up and the default's record-keeping


def noisy(seed: int = 7) -> np.ndarray:
    return 50 + np.random.default_rng(seed).normal(0, 1, N)


def spike() -> np.ndarray:
    values = noisy()
    values[AT] += 20
    return values


def level_shift() -> np.ndarray:
    values = noisy()
    values[AT:] += 6
    return values


def seasonal_break() -> np.ndarray:
    """A cycle of 48 values; at AT one cycle's peak goes missing (the values stay within the usual range)."""
    phase = np.arange(N) % 48
    values = 50 + 20 * np.sin(2 * np.pi * phase / 48) + np.random.default_rng(3).normal(0, 0.5, N)
    peak = (np.arange(N) >= AT) & (np.arange(N) < AT + 24)
    values[peak] = 50 + np.random.default_rng(4).normal(0, 0.5, peak.sum())
    return values


def run(name: str, values: np.ndarray) -> list[Score]:
    detector = make(name)
    return [detector.update(float(i * 300), float(v)) for i, v in enumerate(values)]


CASES = [
    pytest.param("mad", spike, 0, "MADs above", id="mad-spike"),
    pytest.param("default", spike, 0, "MADs above", id="default-spike"),
    pytest.param("cusum", level_shift, 10, "shifted up", id="cusum-shift"),
    pytest.param("default", level_shift, 10, "above", id="default-shift"),
    pytest.param("seasonal", seasonal_break, 24, "cycle of 48 values", id="seasonal-break"),
    pytest.param("default", seasonal_break, 24, "cycle of 48 values", id="default-seasonal-break"),
]


@pytest.mark.parametrize(("name", "series", "within", "reason"), CASES)
def test_a_planted_anomaly_is_flagged_where_it_is_with_its_reason(
    name: str, series: Callable[[], np.ndarray], within: int, reason: str
) -> None:
    scores = run(name, series())
    flagged = [i for i, s in enumerate(scores[AT : AT + within + 1]) if s.score >= THRESHOLD]
    assert flagged, f"{name} did not flag {series.__name__} within {within} values of {AT}"
    first = scores[AT + flagged[0]]
    assert first.reason is not None
    assert reason in first.reason
    assert "{label}" in first.reason


@pytest.mark.parametrize(("name", "series", "within", "reason"), CASES)
def test_the_normal_stretch_before_an_anomaly_is_not_flagged(
    name: str, series: Callable[[], np.ndarray], within: int, reason: str
) -> None:
    scores = [s.score for s in run(name, series())[:AT]]
    assert max(scores) < THRESHOLD


@pytest.mark.parametrize("name", DETECTORS)
def test_a_constant_series_scores_zero(name: str) -> None:
    assert {s.score for s in run(name, np.full(N, 3.25))} == {0.0}


@pytest.mark.parametrize("name", DETECTORS)
def test_a_change_after_a_constant_stretch_does_not_crash(name: str) -> None:
    values = np.full(N, 3.25)
    values[AT:] = 4.0
    scores = [s.score for s in run(name, values)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sum(s >= THRESHOLD for s in scores) < (N - AT) / 10  # a step is news for a while, not for ever


@pytest.mark.parametrize("name", DETECTORS)
def test_gaps_score_zero_and_leave_the_state_as_it_was(name: str) -> None:
    values = spike()
    gappy = values.copy()
    gappy[::7] = np.nan
    scores = run(name, gappy)
    assert all(s.score == 0.0 for s in scores[::7])
    assert sum(s.score >= THRESHOLD for s in scores) < N // 50
    kept = [s.score for i, s in enumerate(scores) if i % 7]
    assert kept == [s.score for s in run(name, values[np.arange(N) % 7 != 0])]


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("stop", [5, 300, 1000])
def test_restoring_the_state_carries_on_exactly(name: str, stop: int) -> None:
    values = seasonal_break() + spike() - 50
    first = make(name)
    straight = [first.update(float(i), float(v)) for i, v in enumerate(values)]
    before = make(name)
    for i, v in enumerate(values[:stop]):
        before.update(float(i), float(v))
    after = DETECTORS[name].restore(json.loads(json.dumps(before.state(), allow_nan=False)))
    resumed = [after.update(float(i), float(v)) for i, v in enumerate(values[stop:], start=stop)]
    assert resumed == straight[stop:]


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_do_not_look_ahead(name: str) -> None:
    values = seasonal_break()
    times = np.arange(N) * 300.0
    whole = score_series(times, values, name)
    prefix = score_series(times[:AT], values[:AT], name)
    assert np.array_equal(prefix, whole[:AT])


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_are_in_the_unit_interval(name: str) -> None:
    scores = score_series(np.arange(N) * 60.0, spike() * level_shift(), name)
    assert np.all((scores >= 0) & (scores <= 1)) and not np.isnan(scores).any()


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_names_and_describes_itself(name: str) -> None:
    assert DETECTORS[name].name == name
    assert DETECTORS[name].description


def test_an_unknown_detector_is_invalid_input_with_a_suggestion() -> None:
    with pytest.raises(InvalidInput, match="did you mean 'cusum'"):
        make("cusm")


def test_a_given_period_is_used_from_the_start() -> None:
    detector = make("seasonal", period=48)
    flagged = [i for i, v in enumerate(seasonal_break()) if detector.update(float(i), float(v)).score >= THRESHOLD]
    assert flagged and AT <= flagged[0] <= AT + 24
