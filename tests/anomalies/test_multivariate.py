"""The multivariate detector (dust.anomalies.multivariate): all labels of a tensor at a step, judged together."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from dust.anomalies.detectors import robust, score_series
from dust.anomalies.multivariate import Multivariate, ledoit_wolf, robust_columns, score_matrix

NAMES = ["heart_rate", "temperature"]
JOINT = 60  # the step of the planted joint anomaly


def vitals(steps: int = 80, seed: int = 1) -> np.ndarray:
    """Heart rate and temperature that rise together (on very different scales), and at ``JOINT`` a heart rate
    2 sd high with a temperature 2 sd low: each usual alone, never seen together."""
    rng = np.random.default_rng(seed)
    heart_rate = 70 + 8 * rng.standard_normal(steps)
    temperature = 37 + 0.05 * (heart_rate - 70) + 0.05 * rng.standard_normal(steps)
    heart_rate[JOINT], temperature[JOINT] = 86.0, 36.2
    return np.c_[heart_rate, temperature]


def flagged(values: np.ndarray, **settings: float) -> list[int]:
    return [t for t, s in enumerate(score_matrix(NAMES, values, **settings)) if s.score >= 0.5]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_joint_anomaly_is_flagged_naming_both_labels(seed: int) -> None:
    values = vitals(seed=seed)
    assert flagged(values) == [JOINT]
    reason = score_matrix(NAMES, values)[JOINT].reason
    assert reason is not None
    named, rest = reason.split(" together are unusual for {entity} (distance ")
    assert sorted(named.split(" and ")) == ["heart_rate 86", "temperature 36.2"]
    assert float(rest.rstrip(")")) > 5


@pytest.mark.parametrize("label", [0, 1])
def test_each_label_alone_is_not_flagged_by_mad(label: int) -> None:
    values = vitals()
    scores = score_series(np.arange(len(values), dtype=float), values[:, label], "mad")
    assert scores.max() < 0.5


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_a_label_on_another_scale_neither_dominates_nor_hides(scale: float) -> None:
    values = vitals() * np.array([1.0, scale])
    assert flagged(values) == [JOINT]


def test_no_look_ahead_a_step_scores_the_same_whatever_follows() -> None:
    values = vitals()
    changed = values.copy()
    changed[JOINT + 1 :] = values[JOINT + 1 :] * 3 + 50  # a different future
    before = [s.score for s in score_matrix(NAMES, values)[: JOINT + 1]]
    assert [s.score for s in score_matrix(NAMES, changed)[: JOINT + 1]] == before


@pytest.mark.parametrize(("warmup", "quiet"), [(20, 20), (30, 30), (5, 5)])
def test_the_warm_up_scores_zero(warmup: int, quiet: int) -> None:
    scores = score_matrix(NAMES, vitals(), warmup=warmup)
    assert [s.score for s in scores[:quiet]] == [0.0] * quiet
    assert scores[quiet].score > 0


def test_a_constant_label_does_not_crash_and_its_change_is_news() -> None:
    values = vitals()
    values[:, 1] = 37.0
    values[70, 1] = 38.0
    scores = score_matrix(NAMES, values)
    assert all(np.isfinite(s.score) for s in scores)
    assert [t for t, s in enumerate(scores) if s.score >= 0.5] == [70]
    assert scores[70].reason is not None and scores[70].reason.startswith("temperature 38 is unusual for {entity}")


def test_missing_labels_are_left_out_of_a_step() -> None:
    values = vitals()
    values[::7, 1] = np.nan  # temperature not always recorded
    values[JOINT + 5, 0] = np.nan
    scores = score_matrix(NAMES, values)
    assert [t for t, s in enumerate(scores) if s.score >= 0.5] == [JOINT]
    assert scores[JOINT + 5].top == (1,)  # judged on the temperature alone


@pytest.mark.parametrize("settings", [{"window": 1}, {"warmup": 1}, {"warmup": 200}, {"flag_at": 0}, {"clip": -1}])
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="needs 2 ≤ warmup ≤ window"):
        Multivariate(NAMES, **settings)  # type: ignore[arg-type]


def test_the_window_round_trips_through_json_and_carries_on_as_if_never_stopped() -> None:
    values = vitals()
    values[::7, 1] = np.nan
    uninterrupted = score_matrix(NAMES, values, window=30)
    detector = Multivariate(NAMES, window=30)
    scores = [detector.update(row) for row in values[:45]]
    state = json.loads(json.dumps(detector.state(), allow_nan=False))
    again = Multivariate.restore(state, NAMES, window=30)
    scores += [again.update(row) for row in values[45:]]
    assert scores == uninterrupted


def test_a_restored_window_takes_its_columns_by_name() -> None:
    detector = Multivariate(NAMES, window=5, warmup=2)
    for row in vitals()[:3]:
        detector.update(row)
    again = Multivariate.restore(detector.state(), ["spo2", *NAMES], window=5, warmup=2)
    assert np.array_equal(np.array(again.past)[:, 1:], np.array(detector.past))
    assert np.isnan(np.array(again.past)[:, 0]).all()


@pytest.mark.parametrize(("steps", "labels"), [(100, 4), (30, 1), (5, 8), (50, 64)])
def test_the_covariance_and_scales_are_scikit_learns_and_robusts_to_the_bit(steps: int, labels: int) -> None:
    rng = np.random.default_rng(steps)
    window = np.clip(rng.standard_t(3, (steps, labels)), -5, 5)
    window[:, 0] = np.where(np.arange(steps) % 9, 1.0, window[:, 0])  # mostly one value: MAD 0
    assert np.array_equal(ledoit_wolf(window), sklearn_ledoit_wolf(window, assume_centered=True)[0])
    median, scale = robust_columns(window)
    assert [(m, s) for m, s in zip(median.tolist(), scale.tolist(), strict=True)] == [robust(c) for c in window.T]
