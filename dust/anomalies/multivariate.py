"""A multivariate detector: the vector of a tensor's labels at one step, unusual as a whole.

Each label may look normal alone while the combination is not (a high heart rate with a low temperature, when
the two usually rise together). The detector keeps the last ``window`` vectors and judges each new one by its
Mahalanobis distance from them, never from later ones:

- every label is standardised robustly over the window (median, MAD), so labels on very different scales
  weigh alike, and winsorised at ``clip`` MADs, so one past outlier does not inflate the covariance;
- the covariance of the standardised labels is the Ledoit-Wolf estimate (scikit-learn's ``ledoit_wolf``,
  about the median; ``ledoit_wolf`` below computes it as scikit-learn does, without its per-call checks): shrunk
  towards the identity, it is invertible even for a constant label or fewer steps than labels, and costs a
  closed form per step where a Minimum Covariance Determinant refit costs an iterative search;
- ``d² = zᵀ Σ⁻¹ z`` follows a chi-square with as many degrees of freedom as labels present; its tail becomes
  the standard normal ``z`` with the same two-sided tail, scored as the univariate detectors score theirs
  (``flag_at`` such z score 0.5).

NaN labels are left out of a step: it is judged on the labels it has, against the past steps that have them
all. Until ``warmup`` such steps (and more than the labels judged) are at hand, a step scores 0.

The window round-trips through JSON (``state()`` / ``restore()``), so streaming scoring carries on after a
restart as if there had been none.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import special

from dust.anomalies.detectors import MAD_TO_SIGMA, THRESHOLD, number, squash

CONTRIBUTION = 0.8  # the labels named are the fewest whose contributions make up this share of d²
NAMED = 3  # and at most this many


@dataclass(frozen=True)
class JointScore:
    """How unusual one step's vector is: ``score`` in [0, 1], the Mahalanobis ``distance``, the positions of
    the labels contributing most (most first; empty when the step was not judged) and, when flagged, why
    (naming ``{entity}``, which the caller fills in)."""

    score: float
    distance: float = 0.0
    top: tuple[int, ...] = ()
    reason: str | None = None


QUIET = JointScore(0.0)


class Multivariate:
    """Steps whose labels together lie far from the last ``window`` steps (robust Mahalanobis distance)."""

    name: ClassVar[str] = "multivariate"
    description: ClassVar[str] = "All labels of a tensor at a step, unusual together (robust Mahalanobis distance)."

    def __init__(
        self, names: Sequence[str], window: int = 100, warmup: int = 20, flag_at: float = 6.0, clip: float = 5.0
    ) -> None:
        if window < 2 or warmup < 2 or warmup > window or flag_at <= 0 or clip <= 0:
            raise ValueError("needs 2 ≤ warmup ≤ window, flag_at > 0 and clip > 0")
        self.names, self.window, self.warmup, self.flag_at, self.clip = list(names), window, warmup, flag_at, clip
        self.past: deque[np.ndarray] = deque(maxlen=window)

    def update(self, values: np.ndarray) -> JointScore:
        """Score one step's vector (NaN: not recorded) from the steps before it, then keep it."""
        score = self.judge(np.asarray(values, dtype=np.float64))
        self.past.append(np.asarray(values, dtype=np.float64))
        return score

    def state(self) -> dict[str, Any]:
        """The window (NaN: null, as JSON has no NaN), with the names of its columns."""
        return {"names": self.names, "past": [as_json(row) for row in self.past]}

    @classmethod
    def restore(cls, state: dict[str, Any], names: Sequence[str], **settings: Any) -> Self:
        """One that carries on from ``state``. Columns are matched by name, so a window kept under an earlier
        schema version carries on under one with more labels (not recorded in it)."""
        detector = cls(names, **settings)
        column = {name: k for k, name in enumerate(state["names"])}
        take = np.array([column.get(name, -1) for name in detector.names], dtype=np.int64)
        for row in state["past"]:
            old = np.append(from_json(row), np.nan)  # position -1: a label the window has not seen
            detector.past.append(old[take])
        return detector

    def judge(self, values: np.ndarray) -> JointScore:
        present = np.flatnonzero(~np.isnan(values))
        if present.size == 0 or not self.past:
            return QUIET
        history = np.array(self.past)[:, present]
        history = history[~np.isnan(history).any(axis=1)]  # past steps with every label this one has
        if len(history) < max(self.warmup, present.size + 1):
            return QUIET
        z, past = self._standardised(values[present], history)
        covariance = ledoit_wolf(past)
        weighted = np.linalg.lstsq(covariance, z, rcond=None)[0]  # Σ⁻¹ z, without forming the inverse
        contributions = z * weighted
        d2 = max(float(contributions.sum()), 0.0)
        # scipy.stats' chi2.sf and norm.isf, without their argument handling (ten times the arithmetic)
        tail = float(special.chdtrc(present.size, d2))
        surprise = float(-special.ndtri(tail / 2)) if tail > 0 else float("inf")
        score = squash(surprise, self.flag_at) if surprise < float("inf") else 1.0
        top = tuple(int(present[i]) for i in _named(contributions))
        distance = float(np.sqrt(d2))
        reason = self._explain(values, top, distance) if score >= THRESHOLD else None
        return JointScore(score, distance, top, reason)

    def _standardised(self, current: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step and its history in robust z units of the history, the history winsorised at ``clip``.
        A constant label keeps ``robust``'s tiny scale: any change of it is news, measured, not a crash."""
        median, scale = robust_columns(history)
        z = np.minimum((current - median) / scale, 1e6)  # a change of a constant label: huge, but a number
        z = np.maximum(z, -1e6)
        return z, np.clip((history - median) / scale, -self.clip, self.clip)

    def _explain(self, values: np.ndarray, top: tuple[int, ...], distance: float) -> str:
        named = " and ".join(f"{self.names[i]} {number(values[i])}" for i in top)
        if len(top) == 1:
            return f"{named} is unusual for {{entity}} given its other labels (distance {distance:.1f})"
        return f"{named} together are unusual for {{entity}} (distance {distance:.1f})"


def robust_columns(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``dust.anomalies.detectors.robust`` of each column at once (the same operations, row by row of the
    transposed window, so the same bits): median and scale."""
    columns = np.ascontiguousarray(history.T)
    median = _medians(columns)
    deviations = np.abs(columns - median[:, None])
    scale = _medians(deviations) * MAD_TO_SIGMA
    if not scale.all():  # mostly one value
        scale = np.where(scale != 0, scale, np.mean(deviations, axis=1) * 1.2533)
    return median, np.maximum(scale, 1e-9 * np.maximum(1.0, np.abs(median)))


def _medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1)`` of rows without NaN: the same partition and mean of the middle two, without its
    argument handling (half the cost of a step)."""
    half = rows.shape[1] // 2
    if rows.shape[1] % 2:
        return np.partition(rows, half, axis=1)[:, half]
    parted = np.partition(rows, (half - 1, half), axis=1)
    return (parted[:, half - 1] + parted[:, half]) / 2


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """scikit-learn's ``sklearn.covariance.ledoit_wolf(x, assume_centered=True)``: its closed form, spelled as it
    computes it for fewer than 1,000 columns (the same operations, so the same bits; a test holds it to it),
    without its input checks, which cost ten times the arithmetic per step on the write path."""
    n, p = x.shape
    emp_cov = np.dot(x.T, x) / n
    if p == 1:
        return np.atleast_2d((x**2).mean())
    x2 = x**2
    emp_cov_trace = np.sum(x2, axis=0) / n
    mu = np.sum(emp_cov_trace) / p
    beta_ = np.sum(np.dot(x2.T, x2))
    delta_ = np.sum(np.dot(x.T, x) ** 2) / n**2
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: p + 1] += shrinkage * (np.sum(np.trace(emp_cov)) / p)
    return shrunk


def _named(contributions: np.ndarray) -> list[int]:
    """Positions of the fewest largest contributions to d² that make up ``CONTRIBUTION`` of its positive part
    (at most ``NAMED``), largest first."""
    order = np.argsort(-contributions, kind="stable")
    positive = np.clip(contributions[order], 0.0, None)
    total = positive.sum()
    if total <= 0:
        return [int(order[0])]
    enough = int(np.searchsorted(np.cumsum(positive) / total, CONTRIBUTION)) + 1
    return [int(i) for i in order[: min(enough, NAMED)]]


def as_json(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def from_json(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def score_matrix(names: Sequence[str], values: np.ndarray, **settings: Any) -> list[JointScore]:
    """The score of each row of ``values`` (steps × labels, in time order), each from the rows before it."""
    detector = Multivariate(names, **settings)
    return [detector.update(row) for row in values]
