"""The built-in streaming detectors of one univariate series, and scoring a whole series or CSV file with one.

Every detector keeps bounded state (fixed-size rings of recent values), costs O(window) per value, sees only
the values before the one it scores, and round-trips its state through JSON. NaN values are gaps: they score 0
and leave the state as it was. The first values of a series (the warm-up) score 0.

Scores share one scale: a detector turns its own measure of surprise ``z`` (MADs from a median, or a CUSUM
statistic in units of its decision limit) into ``1 - 2 ** -((z / flag_at) ** 2)``, so a value ``flag_at`` units
out scores 0.5 (``THRESHOLD``, where a detector flags and gives a reason) and one twice as far scores 0.94.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from dust.anomalies.base import Detector, Score
from dust.core.errors import InvalidInput, NotFound, did_you_mean

THRESHOLD = 0.5
MAD_TO_SIGMA = 1.4826  # a normal distribution's standard deviation is 1.4826 MADs
QUIET = Score(0.0)


class Ring:
    """The last ``size`` values in a fixed NumPy buffer. ``state`` keeps the physical layout, so a restored ring
    sums in the same order and gives bit-identical statistics."""

    def __init__(self, size: int, data: list[float] | None = None, pos: int = 0) -> None:
        self.data = np.zeros(size)
        self.count = len(data or [])
        self.data[: self.count] = data or []
        self.pos = pos

    def push(self, value: float) -> None:
        self.data[self.pos] = value
        self.pos = (self.pos + 1) % len(self.data)
        self.count = min(self.count + 1, len(self.data))

    def values(self) -> np.ndarray:
        """The values held, in buffer order (enough for order-free statistics)."""
        return self.data[: self.count]

    def ordered(self) -> np.ndarray:
        """The values held, oldest first."""
        if self.count < len(self.data):
            return self.data[: self.count]
        return np.concatenate((self.data[self.pos :], self.data[: self.pos]))

    def back(self, lag: int) -> float:
        """The value ``lag`` steps before the newest (lag 1 is the newest)."""
        return float(self.data[(self.pos - lag) % len(self.data)])

    def clear(self) -> None:
        self.count = self.pos = 0

    def state(self) -> dict[str, Any]:
        return {"data": self.values().tolist(), "pos": self.pos}

    @classmethod
    def load(cls, size: int, state: dict[str, Any]) -> Ring:
        return cls(size, state["data"], state["pos"])


def robust(values: np.ndarray) -> tuple[float, float]:
    """Median and scale (MADs in standard-deviation units). A series that is mostly one value has MAD 0; its mean
    absolute deviation then stands in, so the few other values do not each look infinitely far out."""
    median = float(np.median(values))
    deviations = np.abs(values - median)
    scale = float(np.median(deviations)) * MAD_TO_SIGMA or float(np.mean(deviations)) * 1.2533
    return median, max(scale, 1e-9 * max(1.0, abs(median)))  # a constant series: any change is news, not a crash


def squash(z: float, flag_at: float) -> float:
    """Surprise ``z`` (≥ 0) as a score in [0, 1) that is ``THRESHOLD`` at ``flag_at``."""
    if z > 0 and z / flag_at > 1e150:  # squaring it would raise OverflowError (a tiny flag_at): certain
        return 1.0
    return 1.0 - 2.0 ** -((z / flag_at) ** 2) if z > 0 else 0.0


def number(value: float) -> str:
    return f"{value:.4g}"


def direction(delta: float) -> str:
    return "above" if delta > 0 else "below"


class Component:
    """What the built-in detectors share: ``surprise`` measures a value against the state (signed, in the
    detector's units; ``flag_at`` of them score ``THRESHOLD``), ``explain`` says why, ``take`` learns the value."""

    flag_at: float
    warmup: int
    ring: Ring
    reference = 0.0  # what the value was compared with, set by ``surprise`` for ``explain``

    def ready(self) -> bool:
        """Whether the state is enough to judge a value (after the warm-up)."""
        return bool(self.ring.count >= self.warmup)

    def surprise(self, value: float) -> float:
        raise NotImplementedError

    def explain(self, value: float, z: float) -> str:
        raise NotImplementedError

    def take(self, value: float, z: float) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        raise NotImplementedError

    def update(self, time: float, value: float) -> Score:
        if math.isnan(value):
            return QUIET
        z = self.surprise(value)
        score = squash(abs(z), self.flag_at)
        reason = self.explain(value, z) if score >= THRESHOLD else None
        self.take(value, z)
        return Score(score, reason)


class Mad(Component):
    """How many MADs a value is from the median of the last ``window`` values."""

    name: ClassVar[str] = "mad"
    description: ClassVar[str] = "A value far from the rolling median, in rolling MADs (robust z-score)."

    def __init__(self, window: int = 100, warmup: int = 20, flag_at: float = 6.0) -> None:
        self.window, self.warmup, self.flag_at = window, warmup, flag_at
        self.ring = Ring(window)

    def surprise(self, value: float) -> float:
        if self.ring.count < self.warmup:
            return 0.0
        self.reference, scale = robust(self.ring.values())
        return (value - self.reference) / scale

    def explain(self, value: float, z: float) -> str:
        last = f"{{entity}}'s last {self.ring.count} values"
        return f"{{label}} {number(value)} is {abs(z):.1f} MADs {direction(z)} {last}"

    def take(self, value: float, z: float) -> None:
        self.ring.push(value)

    def state(self) -> dict[str, Any]:
        return {"ring": self.ring.state()}

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        detector.ring = Ring.load(detector.window, state["ring"])
        return detector


class Cusum(Component):
    """Level shifts: a two-sided CUSUM of robust z-scores against the median of the last ``window`` values.

    Each z is clipped to ``clip``, so one spike cannot raise an alarm alone; ``drift`` is the slack per value
    (half the smallest shift worth detecting, in standard deviations) and ``limit`` the decision interval; the
    surprise is the larger sum in units of ``limit``. After an alarm the reference restarts from the values of
    the new level (Page 1954; Montgomery, Introduction to Statistical Quality Control, ch. 9).
    """

    name: ClassVar[str] = "cusum"
    description: ClassVar[str] = "A sustained shift of level (two-sided CUSUM of robust z-scores)."
    flag_at = 1.0

    def __init__(
        self, window: int = 100, warmup: int = 20, drift: float = 0.5, limit: float = 8.0, clip: float = 4.0
    ) -> None:
        self.window, self.warmup, self.drift, self.limit, self.clip = window, warmup, drift, limit, clip
        self.ring = Ring(window)
        self.up = self.down = 0.0  # the two cumulative sums
        self.scale = 1.0  # of the reference, set with it
        self.cycle: int | None = None  # the period, when the values judged are less their seasonal expectation
        self.run: list[float] = []  # values since the sums last stood at 0, newest last (≤ window)

    def surprise(self, value: float) -> float:
        if self.ring.count < self.warmup:
            return 0.0
        self.reference, self.scale = robust(self.ring.values())
        z = max(-self.clip, min(self.clip, (value - self.reference) / self.scale))
        self.up = max(0.0, self.up + z - self.drift)
        self.down = max(0.0, self.down - z - self.drift)
        self.run = [*self.run[-self.window + 1 :], value] if max(self.up, self.down) > 0 else []
        return (self.up if self.up >= self.down else -self.down) / self.limit

    def explain(self, value: float, z: float) -> str:
        level = statistics.median(self.run[-5:])  # the run began with noise; its end is the new level
        if self.cycle:  # judging values less their seasonal expectation: the levels are of those differences
            return (
                f"{{label}} shifted {'up' if z > 0 else 'down'} by {number(abs(level - self.reference))} from "
                f"{{entity}}'s usual cycle of {self.cycle} values over the last {len(self.run)} values"
            )
        return (
            f"{{label}} shifted {'up' if z > 0 else 'down'} by {number(abs(level - self.reference))} (from about "
            f"{number(self.reference)} to {number(level)}) over the last {len(self.run)} values"
        )

    def take(self, value: float, z: float) -> None:
        self.ring.push(value)
        if abs(z) >= self.flag_at:  # the new level becomes the reference: a shift is reported once, not forever
            self.ring.clear()
            for kept in self.run:
                self.ring.push(kept)
            self.up = self.down = 0.0
            self.run = []

    def state(self) -> dict[str, Any]:
        return {"ring": self.ring.state(), "up": self.up, "down": self.down, "run": self.run}

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        detector.ring = Ring.load(detector.window, state["ring"])
        detector.up, detector.down, detector.run = state["up"], state["down"], list(state["run"])
        return detector


def find_period(
    values: np.ndarray,
    current: int | None = None,
    smallest: int = 4,
    min_correlation: float = 0.5,
    prominence: float = 0.2,
    margin: float = 0.05,
) -> int | None:
    """The lag (≤ a third of the values) with the strongest autocorrelation peak, if it is strong enough; the
    ``current`` period is kept unless another correlates better by more than ``margin``. Multiples of a period
    correlate about as well as the period itself, and a period that flips among them would restart the
    comparisons it is used for at every flip."""
    from scipy.signal import detrend, find_peaks

    x = detrend(values)
    power = np.abs(np.fft.rfft(x, 2 * len(x))) ** 2  # Wiener-Khinchin: the autocorrelation in O(n log n)
    lags = np.arange(len(x) // 3 + 1)
    acf = np.fft.irfft(power)[: len(lags)] / (len(x) - lags)  # unbiased: a long period is not penalised
    if acf[0] <= 0:
        return None  # constant (after the trend): nothing repeats
    acf = acf / acf[0]
    peaks, _ = find_peaks(acf, prominence=prominence)  # a real cycle's peak stands out of its troughs
    peaks = peaks[peaks >= smallest]
    if len(peaks) == 0:
        return None
    best = int(peaks[np.argmax(acf[peaks])])
    if current is not None and current < len(acf) and acf[current] >= max(acf[best] - margin, min_correlation):
        return current
    return best if acf[best] >= min_correlation else None


class Seasonal(Component):
    """A value far from the same phase of the last ``cycles`` periods, in MADs of recent such differences.

    The period (in values) is ``period`` if given, else the strongest autocorrelation peak of the last ``memory``
    values, re-estimated every ``every`` values.
    """

    name: ClassVar[str] = "seasonal"
    description: ClassVar[str] = "A value unlike the same phase of previous periods (period given or found online)."

    def __init__(
        self,
        period: int | None = None,
        memory: int = 2048,
        every: int = 256,
        cycles: int = 3,
        window: int = 200,
        warmup: int = 20,
        flag_at: float = 6.0,
        min_correlation: float = 0.5,
    ) -> None:
        self.min_correlation = min_correlation
        self.fixed, self.memory, self.every, self.cycles = period, memory, every, cycles
        self.warmup, self.flag_at = warmup, flag_at
        self.period = period
        self.seen = 0  # values taken in, for when to look for the period again
        self.ring = Ring(memory)
        self.residuals = Ring(window)

    def ready(self) -> bool:
        return self.period is not None and self.residuals.count >= self.warmup

    def expected(self) -> float | None:
        """The median of the same phase of the last ``cycles`` periods, if there is a period and enough of them."""
        if self.period is None or self.ring.count < self.cycles * self.period:
            return None
        return statistics.median(self.ring.back(k * self.period) for k in range(1, self.cycles + 1))

    def surprise(self, value: float) -> float:
        expected = self.expected()
        if expected is None:
            return 0.0
        self.reference = expected
        residual = value - expected
        z = 0.0
        if self.residuals.count >= self.warmup:
            median, scale = robust(self.residuals.values())
            z = (residual - median) / scale
        self.residuals.push(residual)
        return z

    def explain(self, value: float, z: float) -> str:
        return (
            f"{{label}} {number(value)} is {abs(z):.1f} MADs {direction(z)} the usual {number(self.reference)} at "
            f"this point of {{entity}}'s cycle of {self.period} values"
        )

    def take(self, value: float, z: float) -> None:
        self.ring.push(value)
        self.seen += 1
        if self.fixed is None and self.seen % self.every == 0:
            found = find_period(self.ring.ordered(), self.period, min_correlation=self.min_correlation)
            if found != self.period:
                self.period = found
                self.residuals.clear()  # residuals against another period are on another scale

    def state(self) -> dict[str, Any]:
        return {
            "ring": self.ring.state(),
            "residuals": self.residuals.state(),
            "period": self.period,
            "seen": self.seen,
        }

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        detector.ring = Ring.load(detector.memory, state["ring"])
        detector.residuals = Ring.load(len(detector.residuals.data), state["residuals"])
        detector.period, detector.seen = state["period"], state["seen"]
        return detector


class Default:
    """DUST's detector for live data: a spike (mad), a break of the seasonal pattern (seasonal) or a shift of
    level (cusum, of the values less their seasonal expectation once there is a period), each judged against its
    own recent record.

    A series that is spiky, steppy or irregular by nature keeps producing large surprises of some kind; what
    stands out in it is a surprise larger than that kind has produced over the last ``memory`` values. So each
    part's surprise is divided by the largest of its last ``memory`` ones (and by at least ``floor`` times its
    own flag level, so a calm series does not flag its first small wobble) before it is scored, and the part with
    the highest score gives the reason. After a flag, the next ``rest`` values are held under the threshold
    unless one scores higher: one alarm per episode, not one per value of it.
    """

    name: ClassVar[str] = "default"
    description: ClassVar[str] = "Spikes, level shifts and seasonal breaks, each judged against its recent record."

    def __init__(
        self,
        memory: int = 1000,
        warmup: int = 100,
        floor: float = 1.0,
        rest: int = 400,
        mad: dict[str, Any] | None = None,
        cusum: dict[str, Any] | None = None,
        seasonal: dict[str, Any] | None = None,
    ) -> None:
        self.memory, self.warmup, self.floor, self.rest = memory, warmup, floor, rest
        self.resting, self.flagged = 0, 0.0  # values left to rest after a flag, and that flag's score
        self.settings = {"mad": mad or {}, "cusum": cusum or {}, "seasonal": seasonal or {}}
        self.parts: dict[str, Component] = {
            "mad": Mad(**self.settings["mad"]),
            "seasonal": Seasonal(**self.settings["seasonal"]),
            "cusum": Cusum(**self.settings["cusum"]),
        }
        self.records = {name: Ring(memory) for name in self.parts}  # each part's last |surprise|s
        self.period: int | None = None  # the period the cusum's input is deseasonalised with

    def update(self, time: float, value: float) -> Score:
        if math.isnan(value):
            return QUIET
        best, reason = 0.0, None
        for name, part, x in self.inputs(value):
            ready = part.ready()
            z = part.surprise(x)
            size = min(abs(z), 1e6)  # a change of a constant series is infinitely surprising; keep it a number
            record = self.records[name]
            if record.count >= self.warmup:
                score = squash(size / max(float(record.values().max()), self.floor * part.flag_at), 1.0)
                if score > best:
                    best, reason = score, part.explain(x, z) if score >= THRESHOLD else None
            part.take(x, z)
            if ready:  # a part's record is of the surprises it could judge
                record.push(size)
        return self.after_flag(best, reason)

    def after_flag(self, score: float, reason: str | None) -> Score:
        """One flag per episode: for ``rest`` values after a flag, only a higher score is news; the rest of the
        episode is held just under the threshold, so it neither repeats the alarm nor looks normal."""
        if self.resting and score <= self.flagged:
            self.resting -= 1
            return Score(min(score, 0.9 * THRESHOLD))
        if score >= THRESHOLD:
            self.resting, self.flagged = self.rest, score
        return Score(score, reason)

    def inputs(self, value: float) -> list[tuple[str, Component, float]]:
        """Each part with what it judges: the value, or for the cusum the value less its seasonal expectation
        (a seasonal series' own swings are not shifts of level). A new period starts the cusum afresh."""
        seasonal = self.parts["seasonal"]
        assert isinstance(seasonal, Seasonal)
        expected = seasonal.expected()
        if (seasonal.period if expected is not None else None) != self.period:
            self.period = seasonal.period if expected is not None else None
            self.parts["cusum"] = self.cusum()
            self.records["cusum"] = Ring(self.memory)
        shift = value if expected is None else value - expected
        return [("mad", self.parts["mad"], value), ("seasonal", seasonal, value), ("cusum", self.parts["cusum"], shift)]

    def cusum(self) -> Cusum:
        detector = Cusum(**self.settings["cusum"])
        detector.cycle = self.period
        return detector

    def state(self) -> dict[str, Any]:
        parts = {name: part.state() for name, part in self.parts.items()}
        records = {name: ring.state() for name, ring in self.records.items()}
        return {"parts": parts, "records": records, "period": self.period, "rest": [self.resting, self.flagged]}

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        for name, part in detector.parts.items():
            detector.parts[name] = type(part).restore(state["parts"][name], **detector.settings[name])
            detector.records[name] = Ring.load(detector.memory, state["records"][name])
        detector.period = cusum_cycle = state["period"]
        cusum = detector.parts["cusum"]
        assert isinstance(cusum, Cusum)
        cusum.cycle = cusum_cycle
        detector.resting, detector.flagged = state["rest"]
        return detector


DETECTORS: dict[str, type[Detector]] = {d.name: d for d in (Default, Mad, Cusum, Seasonal)}


def make(name: str, **settings: Any) -> Detector:
    """A new detector by name — a built-in or a plugin's (``dust.plugins``) — with its settings."""
    from dust.plugins import registry

    known = registry.detectors()
    if name not in known:
        raise InvalidInput(f"unknown detector '{name}' (known: {', '.join(known)}){did_you_mean(name, known)}")
    try:
        return known[name](**settings)
    except TypeError as problem:  # a setting the detector does not take, or of the wrong type
        raise InvalidInput(f"detector '{name}' does not take these settings: {problem}") from None


def score_series(times: np.ndarray, values: np.ndarray, detector: str = "default", **settings: Any) -> np.ndarray:
    """The score of each value, each from the values before it only (a fresh detector, fed in order)."""
    scorer = make(detector, **settings)
    return np.array([scorer.update(t, v).score for t, v in zip(times.tolist(), values.tolist(), strict=True)])


def read_series(path: Path) -> pd.DataFrame:
    """A ``timestamp,value`` CSV as text columns (written back unchanged) plus parsed ``time`` (seconds since the
    epoch) and ``number`` (NaN for an empty value, a gap). Names the line of the first row it cannot parse."""
    if not path.is_file():
        raise NotFound(f"no file {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as problem:
        raise InvalidInput(f"{path} is not a readable CSV file ({problem})") from None
    if list(frame.columns) != ["timestamp", "value"]:
        raise InvalidInput(f"{path}: the header must be 'timestamp,value', not {','.join(map(str, frame.columns))!r}")
    stamps = pd.to_datetime(frame["timestamp"], errors="coerce", format="ISO8601")
    numbers = pd.to_numeric(frame["value"].where(frame["value"].str.strip() != ""), errors="coerce")
    bad = stamps.isna() | (numbers.isna() & (frame["value"].str.strip() != ""))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise InvalidInput(f"{path}, line {row + 2}: cannot read {','.join(frame.iloc[row])!r} as timestamp,value")
    frame["time"] = stamps.to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9
    frame["number"] = numbers.astype(float)
    return frame


def score_csv(path: Path, detector: str = "default") -> pd.DataFrame:
    """The rows of a ``timestamp,value`` CSV with an ``anomaly_score`` column (what ``dust anomalies score``
    writes); the parsed ``time`` and ``number`` columns are kept for callers that want them."""
    make(detector)  # an unknown name fails before the file is read
    frame = read_series(path)
    frame["anomaly_score"] = score_series(frame["time"].to_numpy(), frame["number"].to_numpy(), detector)
    return frame
