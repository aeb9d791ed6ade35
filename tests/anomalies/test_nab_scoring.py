"""bench/nab.py's re-implementation of NAB's scoring, on hand-made series where the answer is known."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "nab.py"
spec = importlib.util.spec_from_file_location("nab_bench", PATH)
assert spec is not None and spec.loader is not None
nab = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = nab  # a dataclass looks its module up there
spec.loader.exec_module(nab)

STANDARD = nab.PROFILES["standard"]
SERIES = nab.Series("one.csv", 1000, ((400, 499),))  # probation: the first 150 rows


def detections(*rows: int, length: int = 1000) -> list[np.ndarray]:
    scores = np.zeros(length)
    scores[list(rows)] = 1.0
    return [scores]


@pytest.mark.parametrize(("length", "rows"), [(100, 15), (4032, 604), (5000, 750), (22695, 750)])
def test_the_probationary_period_is_15_percent_at_most_750_rows(length: int, rows: int) -> None:
    assert nab.probation(length) == rows


@pytest.mark.parametrize(
    ("position", "expected"), [(-1.0, 2 / (1 + math.exp(-5)) - 1), (0.0, 0.0), (3.0, -1.0), (10.0, -1.0)]
)
def test_the_scaled_sigmoid(position: float, expected: float) -> None:
    assert nab.scaled_sigmoid(np.array(position)) == pytest.approx(expected)


def sigmoid(position: float) -> float:
    return 2 / (1 + math.exp(5 * position)) - 1


@pytest.mark.parametrize(
    ("row", "worth"),
    [
        pytest.param(400, 1.0, id="a-window's-first-row-earns-the-full-tp-weight"),
        pytest.param(450, sigmoid(-50 / 100) / sigmoid(-1), id="later-in-the-window-earns-less"),
        pytest.param(499, sigmoid(-1 / 100) / sigmoid(-1), id="its-last-row-earns-almost-nothing"),
        pytest.param(300, -0.11, id="before-any-window-a-full-false-positive"),
        pytest.param(520, 0.11 * sigmoid(21 / 99), id="just-after-a-window-a-small-false-positive"),
        pytest.param(900, -0.11, id="far-after-a-window-a-full-false-positive"),
    ],
)
def test_what_a_detection_is_worth(row: int, worth: float) -> None:
    weight, _ = nab.row_weights(SERIES, STANDARD)
    assert weight[row] == pytest.approx(worth)


def test_the_probationary_period_is_not_scored() -> None:
    _, window = nab.row_weights(SERIES, STANDARD)
    assert set(window[:150]) == {nab.PROBATION}
    assert set(window[150:400]) == set(window[500:]) == {nab.OUTSIDE}
    assert set(window[400:500]) == {0}


@pytest.mark.parametrize(
    ("rows", "total"),
    [
        pytest.param((400,), 1.0, id="detected-at-once"),
        pytest.param((400, 450, 499), 1.0, id="only-the-first-detection-in-a-window-counts"),
        pytest.param((100, 400), 1.0, id="detections-in-the-probationary-period-cost-nothing"),
        pytest.param((300, 400), 1.0 - 0.11, id="a-false-positive-costs-its-weight"),
    ],
)
def test_the_total_of_detections(rows: tuple[int, ...], total: float) -> None:
    assert nab.sweep(detections(*rows), [SERIES], STANDARD) == (1.0, pytest.approx(total))


def test_the_threshold_is_the_one_that_maximises_the_total() -> None:
    scores = np.zeros(1000)
    scores[420] = 0.6  # inside the window
    scores[[200, 210, 220]] = 0.8  # three false positives that only a threshold that also catches the window takes
    threshold, total = nab.sweep([scores], [SERIES], STANDARD)
    assert threshold == 0.6
    assert total == pytest.approx(sigmoid(-80 / 100) / sigmoid(-1) - 0.33)


@pytest.mark.parametrize("profile", nab.PROFILES)
def test_perfect_is_100_and_null_is_0(profile: str) -> None:
    weights = nab.PROFILES[profile]
    corpus = [SERIES, nab.Series("two.csv", 3000, ((1000, 1099), (2000, 2099)))]
    perfect = nab.sweep(nab.perfect_scores(corpus), corpus, weights)[1]
    null = nab.sweep([np.zeros(s.length) for s in corpus], corpus, weights)[1]
    assert nab.normalised(perfect, corpus, weights) == pytest.approx(100.0)
    assert nab.normalised(null, corpus, weights) == pytest.approx(0.0)


@pytest.mark.skipif(not (nab.DATA / "combined_windows.json").is_file(), reason="no NAB data in ../shared/data/nab")
def test_the_scorer_checks_itself_on_the_corpus() -> None:
    assert nab.check_scorer(nab.load_corpus(nab.DATA)) == []
