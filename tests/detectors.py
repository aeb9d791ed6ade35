"""A small detector of the tests' own, so that tests of scoring do not depend on how the built-in detectors are
tuned: a value's distance from the mean of every value before it, in standard deviations (Welford's running
mean and variance)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from dust.anomalies.base import Score

NORMAL = [70.0, 72.0, 71.0, 69.0, 70.0, 73.0, 71.0, 70.0, 68.0, 72.0]  # heart rates that never flag


class Spike:
    name: ClassVar[str] = "spike"
    description: ClassVar[str] = "A value far from the mean of all before it, in standard deviations."

    def __init__(self, warmup: int = 5, flag_at: float = 4.0) -> None:
        self.warmup, self.flag_at = int(warmup), float(flag_at)
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, time: float, value: float) -> Score:
        z = 0.0
        if self.n >= self.warmup:
            sd = math.sqrt(self.m2 / (self.n - 1)) or 1e-9
            z = abs(value - self.mean) / sd
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        score = 1.0 - 2.0 ** -((z / self.flag_at) ** 2)
        if score < 0.5:
            return Score(score)
        return Score(score, f"{{label}} {value:g} is {z:.1f} sd from {{entity}}'s mean")

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        detector.n, detector.mean, detector.m2 = state["n"], state["mean"], state["m2"]
        return detector


def series(length: int, spikes: dict[int, float]) -> list[float]:
    """``length`` normal heart rates, with the values of ``spikes`` at their time indices."""
    return [spikes.get(t, NORMAL[t % len(NORMAL)]) for t in range(length)]


def flags(values: list[float], start: int = 0, **settings: Any) -> list[int]:
    """The time indices an uninterrupted run of one detector flags at threshold 0.5."""
    detector = Spike(**settings)
    return [start + i for i, value in enumerate(values) if detector.update(float(start + i), value).score >= 0.5]
