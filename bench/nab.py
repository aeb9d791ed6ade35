"""Score DUST's detectors on the Numenta Anomaly Benchmark (NAB) data in ../shared/data/nab.

The scoring re-implements NAB's method (Lavin & Ahmad 2015; NAB's sweeper and threshold optimiser) from its
description: every labelled anomaly has a window; a detection is a score at or above a threshold; the first
detection in a window earns the scaled sigmoid of its position (early is worth more), a window without one costs
the profile's FN weight; each detection outside windows costs the FP weight times the sigmoid of its distance
from the end of the window before it (the full weight when there is none); the first 15% of each file (at most
750 rows) is probationary and not scored. One threshold per profile is chosen to maximise the total over the
corpus, and the total is normalised so the null detector scores 0 and a perfect one 100.

    .venv/bin/python bench/nab.py                          # the default detector
    .venv/bin/python bench/nab.py --detector mad --detector cusum
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dust.anomalies.detectors import read_series, score_csv

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "nab"
OUT = ROOT / "bench" / "out" / "nab.json"

# NAB's config/profiles.json (the TN weight is unused by the score).
PROFILES = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
# NAB's published standard-profile scores over its whole corpus (58 files; this is a subset of 18).
PUBLISHED = {
    "ARTime": 74.9,
    "Numenta HTM": 70.1,
    "CAD OSE": 69.9,
    "Random Cut Forest": 51.7,
    "Windowed Gaussian": 39.6,
    "random": 11.0,
    "null": 0.0,
}
OUTSIDE = -1  # window id of a scored row outside every window
PROBATION = -2  # window id of a row in the probationary period


@dataclass(frozen=True)
class Series:
    """One NAB file: its length and its anomaly windows as (first, last) row indices."""

    name: str
    length: int
    windows: tuple[tuple[int, int], ...]


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward by relative position: ~0.987 at a window's left edge (-1), 0 at its right edge (0), falling to
    -1 past it, and exactly -1 from 3 window lengths past it."""
    return np.where(position >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0)


def probation(length: int) -> int:
    return int(min(math.floor(0.15 * length), 0.15 * 5000))


def row_weights(series: Series, profile: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, what a detection there is worth, and the id of the window it falls in (OUTSIDE, PROBATION)."""
    index = np.arange(series.length)
    weight = np.full(series.length, -profile["fp"])  # before any window: a full false positive
    window = np.full(series.length, OUTSIDE)
    for number, (first, last) in enumerate(series.windows):
        width = last - first + 1
        inside = slice(first, last + 1)
        tp = scaled_sigmoid(-(last - index[inside] + 1) / width) / scaled_sigmoid(np.array(-1.0))
        weight[inside], window[inside] = tp * profile["tp"], number
        end = series.windows[number + 1][0] if number + 1 < len(series.windows) else series.length
        after = index[last + 1 : end]
        weight[last + 1 : end] = scaled_sigmoid((after - last) / (width - 1)) * profile["fp"]
    window[: probation(series.length)] = PROBATION
    return weight, window


def sweep(scores: list[np.ndarray], corpus: list[Series], profile: dict[str, float]) -> tuple[float, float]:
    """The threshold that maximises the corpus total, and that total (raw, before normalising)."""
    parts = [row_weights(s, profile) for s in corpus]
    offsets = np.cumsum([0] + [len(s.windows) for s in corpus])
    score = np.concatenate(scores)
    weight = np.concatenate([w for w, _ in parts])
    window = np.concatenate([np.where(k >= 0, k + offsets[i], k) for i, (_, k) in enumerate(parts)])
    keep = window != PROBATION
    order = np.argsort(-score[keep], kind="stable")
    score, weight, window = score[keep][order], weight[keep][order], window[keep][order]
    best_window = np.full(offsets[-1], -profile["fn"])  # each window's worth so far: missed
    total = best = float(best_window.sum())
    threshold = math.inf  # nothing detected: the null detector's total
    for i in range(len(score)):  # descending scores: each step lowers the threshold to include one more row
        if window[i] == OUTSIDE:
            total += weight[i]
        elif weight[i] > best_window[window[i]]:  # only a window's earliest detection counts
            total += weight[i] - best_window[window[i]]
            best_window[window[i]] = weight[i]
        if (i + 1 == len(score) or score[i + 1] != score[i]) and total > best:
            best, threshold = total, float(score[i])
    return threshold, best


def normalised(raw: float, corpus: list[Series], profile: dict[str, float]) -> float:
    windows = sum(len(s.windows) for s in corpus)
    null, perfect = -profile["fn"] * windows, profile["tp"] * windows
    return 100.0 * (raw - null) / (perfect - null)


def load_corpus(data: Path) -> list[Series]:
    """Every file named in NAB's windows file, with its windows as row indices."""
    limits = json.loads((data / "combined_windows.json").read_text())
    corpus = []
    for name, windows in sorted(limits.items()):
        times = pd.to_datetime(read_series(data / "data" / name)["timestamp"]).to_numpy()
        rows = [(row(times, first), row(times, last)) for first, last in windows]
        corpus.append(Series(name, len(times), tuple(rows)))
    return corpus


def row(times: np.ndarray, stamp: str) -> int:
    """The index of the row at ``stamp`` (NAB's windows begin and end on rows of their file)."""
    at = int(np.searchsorted(times, np.datetime64(pd.Timestamp(stamp))))
    if at >= len(times) or times[at] != np.datetime64(pd.Timestamp(stamp)):
        raise ValueError(f"window limit {stamp} is not a timestamp of its file")
    return at


def perfect_scores(corpus: list[Series]) -> list[np.ndarray]:
    scores = [np.zeros(s.length) for s in corpus]
    for series, score in zip(corpus, scores, strict=True):
        score[[first for first, _ in series.windows]] = 1.0
    return scores


def check_scorer(corpus: list[Series]) -> list[str]:
    """Problems with the scorer itself: a perfect detector must score 100 and the null detector 0."""
    problems = []
    for name, profile in PROFILES.items():
        for detector, scores, expected in [
            ("perfect", perfect_scores(corpus), 100.0),
            ("null", [np.zeros(s.length) for s in corpus], 0.0),
        ]:
            got = normalised(sweep(scores, corpus, profile)[1], corpus, profile)
            if abs(got - expected) > 1e-9:
                problems.append(f"{detector} detector scores {got:.4f} on {name}, not {expected}")
    return problems


def score_detector(detector: str, corpus: list[Series], data: Path) -> dict[str, object]:
    """Run ``detector`` over every file (as `dust anomalies score` does) and score it on every profile."""
    started = time.perf_counter()
    scores = [score_csv(data / "data" / s.name, detector)["anomaly_score"].to_numpy() for s in corpus]
    seconds = time.perf_counter() - started
    profiles = {}
    for name, profile in PROFILES.items():
        threshold, raw = sweep(scores, corpus, profile)
        profiles[name] = {"score": normalised(raw, corpus, profile), "threshold": threshold, "raw": raw}
    return {"detector": detector, "seconds": seconds, "values": sum(s.length for s in corpus), "profiles": profiles}


def table(results: list[dict[str, object]]) -> str:
    lines = []
    for profile in PROFILES:
        lines += [f"\n{profile}", f"{'detector':<24}{'score':>8}{'threshold':>11}"]
        for result in results:
            row = result["profiles"][profile]  # type: ignore[index]
            lines.append(f"{'DUST ' + str(result['detector']):<24}{row['score']:>8.1f}{row['threshold']:>11.4f}")
        if profile == "standard":
            lines += [f"{name + ' (NAB, full corpus)':<36}{value:>8.1f}" for name, value in PUBLISHED.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append", help="a detector's name (repeatable; default: default)")
    parser.add_argument("--data", type=Path, default=DATA, help="NAB data directory")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON results")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no NAB data at {args.data}", file=sys.stderr)
        return 2
    corpus = load_corpus(args.data)
    problems = check_scorer(corpus)
    results = [score_detector(name, corpus, args.data) for name in args.detector or ["default"]]
    print(
        f"NAB subset: {len(corpus)} files, {sum(len(s.windows) for s in corpus)} windows, "
        f"{results[0]['values']:,} values"
    )
    print(table(results))
    for result in results:
        print(f"\n{result['detector']}: scored the corpus in {result['seconds']:.1f} s (limit 60 s)")
    slow = [r["detector"] for r in results if float(r["seconds"]) >= 60]  # type: ignore[arg-type]
    problems += [f"{name} took a minute or more" for name in slow]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checks = {"scorer_and_time": problems or "ok"}
    args.out.write_text(json.dumps({"results": results, "published_standard": PUBLISHED, "checks": checks}, indent=2))
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
