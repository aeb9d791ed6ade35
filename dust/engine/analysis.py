"""One series of a tensor analysed: its trend, its seasonality and a short forecast, with statsmodels.

- Trend: ordinary least squares of the recorded values on their time index (gaps are skipped, not filled): the
  slope per time unit of the schema, with its 95% confidence interval and p-value.
- Seasonality: the autocorrelation of the detrended series (gaps left out pairwise) at its highest peak beyond
  lag 1, which must clear the white-noise band with a Bonferroni correction for the lags searched and Bartlett's
  band for a series correlated up to that lag (95%, one-sided). A period found is then measured by STL: its
  strength is max(0, 1 - Var(remainder) / Var(seasonal + remainder)) (Wang, Smith & Hyndman 2006), and a period
  weaker than MIN_STRENGTH is not reported.
- Forecast: exponential smoothing (ETS with additive errors: no trend, a linear or a damped trend), the model
  with the least AICc, fitted to the last FIT_STEPS steps with gaps filled linearly; with a period, fitted to the
  series less its STL seasonal component, which is then carried on (as statsmodels' STLForecast does). The 95%
  prediction intervals are the model's. A short series thus gets a simple model, and a flat one a flat forecast.

Values are scaled into [-1, 1] before any of this, so that values near float64's largest cannot overflow.
The three are registered as analyses through the plugin hook ``dust_analyses``, as a plugin's are; theirs run
after them and appear under ``more``.
statsmodels (and pandas) are imported where they are used: seconds to import, which no other command should pay.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, did_you_mean
from dust.engine import schemas, tensors
from dust.engine.schemas import Axis, SchemaDef
from dust.engine.timegrid import TimeGrid
from dust.plugins import registry

MIN_POINTS = 8  # recorded values a series needs: a trend with a confidence interval and a model to forecast
HORIZON = 7
MAX_HORIZON = 365
MAX_STEPS = 20_000  # steps analysed, from the first recorded to the last (STL and ETS grow with them)
FIT_STEPS = 500  # the forecast model is fitted to the last this many steps: the recent past decides it
MAX_LAG = 1_000  # the longest period looked for, in steps
MIN_STRENGTH = 0.3  # weaker seasonality is not reported: noise and slow wandering reach about 0.2
LEVEL = 0.95
_MODELS = (("N", False), ("A", False), ("A", True))  # ETS trends: none, linear, damped
_Z = NormalDist().inv_cdf


class Trend(BaseModel):
    slope: float | None = Field(description="Change per time unit (`per`): OLS on the recorded values.")
    low: float | None = Field(description="Lower end of the slope's 95% confidence interval.")
    high: float | None = Field(description="Upper end of the slope's 95% confidence interval.")
    p_value: float | None = Field(description="Of the slope being 0; null for a series on an exact line.")
    per: str = Field(description="The schema's time unit.")


class Seasonality(BaseModel):
    period: int = Field(description="In steps of the schema's time axis.")
    strength: float = Field(description="STL seasonal strength, 0..1.")
    autocorrelation: float = Field(description="Of the detrended series at the period.")


class ForecastPoint(BaseModel):
    time: datetime
    index: int
    value: float | None
    low: float | None = Field(description="Lower end of the 95% prediction interval.")
    high: float | None = Field(description="Upper end of the 95% prediction interval.")


class Forecast(BaseModel):
    model: str = Field(description='The model chosen, e.g. "ETS(A,Ad,N)" or "STL + ETS(A,N,N)".')
    points: list[ForecastPoint]


class Analysis(BaseModel):
    tensor_id: uuid.UUID
    label: str
    selection: dict[str, str] = Field(description="The series: a label of each axis.")
    values: int = Field(description="Recorded values analysed.")
    start: datetime = Field(description="The step of the first recorded value analysed.")
    end: datetime = Field(description="The step of the last recorded value analysed.")
    trend: Trend
    seasonality: Seasonality | None = Field(description="The period found, or null when there is none.")
    forecast: Forecast
    more: dict[str, Any] = Field(
        default_factory=dict, description="What plugins' analyses (`dust_analyses`) found, by analysis name."
    )


@dataclass(frozen=True)
class Series:
    """The analysed span, from the first recorded value to the last, scaled: ``z`` = (value - center) / scale,
    NaN where nothing was recorded (the scale keeps values near float64's largest from overflowing)."""

    indices: np.ndarray
    z: np.ndarray
    center: float
    scale: float

    @property
    def recorded(self) -> np.ndarray:
        return ~np.isnan(self.z)

    def filled(self) -> np.ndarray:
        """``z`` with its gaps interpolated linearly."""
        at = np.flatnonzero(self.recorded)
        return np.interp(np.arange(self.z.size), at, self.z[at])

    def value(self, z: float) -> float | None:
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(self.center + z * self.scale)
        return value if np.isfinite(value) else None

    def values(self) -> np.ndarray:
        """The values as recorded (NaN in the gaps)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.center + self.z * self.scale


@dataclass
class Context:
    """What an analysis is given: the series, its schema and time grid, the forecast horizon asked for, and the
    results of the analyses run before it (by name: the built-ins run first, in the order trend, seasonality,
    forecast)."""

    series: Series
    sdef: SchemaDef
    grid: TimeGrid
    horizon: int
    results: dict[str, Any]


@dataclass(frozen=True)
class SeriesAnalysis:
    """One analysis of a series, registered through the plugin hook ``dust_analyses``. ``run`` returns a
    pydantic model or JSON-able data (None when there is nothing to say). The built-ins fill the answer's
    ``trend``, ``seasonality`` and ``forecast``; any other appears under ``more``, by its name."""

    name: str
    description: str
    run: Callable[[Context], Any]


BUILTIN = ("trend", "seasonality", "forecast")


def builtin_analyses() -> list[SeriesAnalysis]:
    return [
        SeriesAnalysis("trend", "Slope per time unit with a 95% CI (OLS).", lambda c: _trend(c.series, c.sdef)),
        SeriesAnalysis(
            "seasonality", "The period found (ACF, STL strength), if any.", lambda c: _seasonality(c.series)
        ),
        SeriesAnalysis(
            "forecast",
            "The next steps with 95% intervals (ETS of least AICc).",
            lambda c: _forecast(c.series, c.results["seasonality"], c.horizon, c.grid),
        ),
    ]


def analyse(
    session: Session,
    tensor_id: uuid.UUID,
    label: str,
    *,
    horizon: int = HORIZON,
    start: Any = None,
    end: Any = None,
    selection: Mapping[str, str] | None = None,
    max_cells: int = 5_000_000,
) -> Analysis:
    """Trend, seasonality and a ``horizon``-step forecast of the series of ``label`` (with one label of every other
    axis in ``selection``, unless the axis has just one) of a tensor, over ``start``..``end`` (inclusive, as a
    read takes them) or all it recorded. Read as a tensor read is: 404 for a tensor one may not see, 403 for a
    de-identified reader on a sensitive schema."""
    if not 1 <= horizon <= MAX_HORIZON:
        raise InvalidInput(f"horizon must be 1..{MAX_HORIZON} steps, not {horizon}")
    row = tensors.get_row(session, tensor_id)  # a tensor one may not see is 404 before anything is said of it
    sdef = schemas.get_def(session, row.schema_name, row.schema_version)
    picks = _series_picks(sdef, label, selection or {})
    view = tensors.read(session, tensor_id, start=start, end=end, labels=picks, max_cells=max_cells)
    series = _series(view.values, np.asarray(view.coords["time"], dtype=np.int64), label, tensor_id)
    context = Context(series, sdef, view.grid, horizon, results={})
    for analysis in registry.analyses().values():  # the built-ins first: later ones may use their results
        context.results[analysis.name] = analysis.run(context)
    found = context.results
    return Analysis(
        tensor_id=tensor_id,
        label=label,
        selection=picks,
        values=int(series.recorded.sum()),
        start=view.grid.timestamp(int(series.indices[0])),
        end=view.grid.timestamp(int(series.indices[-1])),
        trend=found["trend"],
        seasonality=found["seasonality"],
        forecast=found["forecast"],
        more={name: result for name, result in found.items() if name not in BUILTIN},
    )


def _series_picks(sdef: SchemaDef, label: str, selection: Mapping[str, str]) -> dict[str, str]:
    """A label of every axis: ``label`` on the one axis not in ``selection`` that has it, the only label of an axis
    with one, and ``selection``'s."""
    picks = {sdef.axis(name).name: wanted for name, wanted in selection.items()}
    free = [axis for axis in sdef.axes if axis.name not in picks]
    hits = [axis for axis in free if _has(sdef, axis, label)]
    if not hits:
        every = [lab for axis in free for lab in axis.labels]
        raise InvalidInput(f"label '{label}' is not in schema {sdef.name}{did_you_mean(label, every)}")
    if len(hits) > 1:
        names = ", ".join(axis.name for axis in hits)
        raise InvalidInput(
            f"label '{label}' is on several axes of schema {sdef.name} ({names}); name the others' "
            "labels as <axis>=<label>"
        )
    picks[hits[0].name] = label
    for axis in sdef.axes:
        if axis.name in picks:
            continue
        if len(axis.labels) > 1:
            raise InvalidInput(
                f"one series is analysed: name a label of axis {axis.name} too, as {axis.name}=<label> (labels: "
                f"{', '.join(axis.labels[:20])}{', …' if len(axis.labels) > 20 else ''})"
            )
        picks[axis.name] = axis.labels[0]
    return {axis.name: picks[axis.name] for axis in sdef.axes}


def _has(sdef: SchemaDef, axis: Axis, label: str) -> bool:
    try:
        sdef.label_index(axis, label)
    except InvalidInput:
        return False
    return True


def _series(values: np.ndarray, indices: np.ndarray, label: str, tensor_id: uuid.UUID) -> Series:
    """The span from the first recorded value to the last, scaled into [-1, 1]; 422 with too few values or steps."""
    recorded = np.flatnonzero(~np.isnan(values))
    if recorded.size < MIN_POINTS:
        raise InvalidInput(
            f"an analysis needs at least {MIN_POINTS} recorded values; {label} of tensor {tensor_id} has "
            f"{recorded.size} in the steps read"
        )
    first, last = int(recorded[0]), int(recorded[-1])
    if last - first + 1 > MAX_STEPS:
        raise InvalidInput(
            f"the series spans {last - first + 1:,} steps from its first recorded value to its last; an analysis "
            f"takes at most {MAX_STEPS:,}: narrow it with from/to"
        )
    span = values[first : last + 1]
    low, high = float(np.nanmin(span)), float(np.nanmax(span))
    center, scale = low / 2 + high / 2, high / 2 - low / 2  # halves: no overflow near float64's largest
    z = (span - center) / scale if scale else span - center
    return Series(indices[first : last + 1], z, center, scale)


def _trend(series: Series, sdef: SchemaDef) -> Trend:
    """OLS of the recorded values on their index; the slope per schema unit (a step is ``step`` units)."""
    from statsmodels.regression.linear_model import OLS

    recorded = series.recorded
    x = (series.indices[recorded] - series.indices[0]).astype(np.float64)
    fit = OLS(series.z[recorded], np.column_stack([np.ones(x.size), x])).fit()
    low, high = fit.conf_int(alpha=1 - LEVEL)[1]
    per_unit = series.scale / sdef.time.step
    return Trend(
        slope=_finite(fit.params[1] * per_unit),
        low=_finite(low * per_unit),
        high=_finite(high * per_unit),
        p_value=_finite(fit.pvalues[1]) if fit.bse[1] > 0 else None,
        per=sdef.time.unit,
    )


def _seasonality(series: Series) -> Seasonality | None:
    """The strongest significant period of the detrended series, if STL finds it strong enough."""
    from statsmodels.tsa.seasonal import STL
    from statsmodels.tsa.stattools import acf

    residual = _detrended(series)
    lags = min(series.z.size // 2, MAX_LAG)
    if lags < 3 or not np.nanvar(residual) > 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns of what it does with gaps
        r = acf(residual, nlags=lags, missing="conservative", fft=True)
    period = _period(r, int(series.recorded.sum()))
    if period is None:
        return None
    filled = np.interp(np.arange(residual.size), np.flatnonzero(series.recorded), residual[series.recorded])
    parts = STL(filled, period=period, robust=True).fit()
    noise = np.var(parts.resid)
    strength = max(0.0, 1 - noise / np.var(parts.seasonal + parts.resid)) if noise > 0 else 1.0
    if strength < MIN_STRENGTH:
        return None
    return Seasonality(period=period, strength=round(float(strength), 6), autocorrelation=round(float(r[period]), 6))


def _detrended(series: Series) -> np.ndarray:
    recorded = series.recorded
    slope, intercept = np.polyfit(np.flatnonzero(recorded), series.z[recorded], 1)
    return series.z - (intercept + slope * np.arange(series.z.size))


def _period(r: np.ndarray, n: int) -> int | None:
    """The lag (≥ 2) of the highest local peak of the autocorrelations ``r`` of ``n`` values that clears both bands,
    or of its smallest divisor that is also such a peak (a period's multiples peak too)."""
    searched = r.size - 2
    noise = _Z(1 - (1 - LEVEL) / searched) / np.sqrt(n)
    bartlett = _Z(LEVEL) * np.sqrt((1 + 2 * np.cumsum(np.r_[0.0, r[1:] ** 2])) / n)
    peaks = [
        k
        for k in range(2, r.size - 1)
        if r[k] > r[k - 1] and r[k] >= r[k + 1] and r[k] > noise and r[k] > bartlett[k - 1]
    ]
    if not peaks:
        return None
    best = max(peaks, key=lambda k: r[k])
    return next(k for k in peaks if best % k == 0)


def _forecast(series: Series, seasonality: Seasonality | None, horizon: int, grid: TimeGrid) -> Forecast:
    """The next ``horizon`` steps after the last recorded one, by the ETS model of least AICc."""
    window = series.filled()[-FIT_STEPS:]
    if np.ptp(window) == 0:  # nothing to fit: the value stays
        flat = np.full(horizon, window[-1])
        model, mean, low, high = "constant", flat, flat, flat
    else:
        model, mean, low, high = _smoothed(window, seasonality, horizon)
    last = int(series.indices[-1])
    points = []
    for h in range(horizon):
        try:
            time = grid.timestamp(last + 1 + h)
        except OverflowError:  # past the year 9999: the forecast ends with the calendar
            break
        values = [series.value(float(v[h])) for v in (mean, low, high)]
        points.append(ForecastPoint(time=time, index=last + 1 + h, value=values[0], low=values[1], high=values[2]))
    return Forecast(model=model, points=points)


def _smoothed(
    window: np.ndarray, seasonality: Seasonality | None, horizon: int
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(model, mean, low, high) of the best ETS model of ``window``, less its STL seasonal component if it has one."""
    from statsmodels.tsa.seasonal import STL

    period = seasonality.period if seasonality is not None and window.size >= 2 * seasonality.period else None
    seasonal = np.zeros(window.size) if period is None else STL(window, period=period, robust=True).fit().seasonal
    best = _best_ets(window - seasonal, horizon)
    if best is None:
        name, mean, low, high = "naive", *_naive(window - seasonal, horizon)
    else:
        name, mean, low, high = best
    if period is None:
        return name, mean, low, high
    # each phase's mean over the window: the last period alone carries that period's noise into every forecast
    phases = np.bincount(np.arange(window.size) % period, weights=seasonal) / np.bincount(
        np.arange(window.size) % period
    )
    ahead = phases[(window.size + np.arange(horizon)) % period]
    return f"STL + {name}", mean + ahead, low + ahead, high + ahead


def _best_ets(y: np.ndarray, horizon: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray] | None:
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    best: tuple[float, tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None = None
    for trend, damped in _MODELS:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # convergence warnings: a poor fit loses on AICc
                fit = ETSModel(pd.Series(y), error="add", trend=None if trend == "N" else "add", damped_trend=damped)
                result = fit.fit(disp=False)
                frame = result.get_prediction(start=y.size, end=y.size + horizon - 1).summary_frame(alpha=1 - LEVEL)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):  # a model the series cannot carry
            continue
        columns = [frame[c].to_numpy(dtype=np.float64) for c in ("mean", "pi_lower", "pi_upper")]
        if not np.isfinite(result.aicc) or not all(np.isfinite(c).all() for c in columns):
            continue
        name = f"ETS(A,{trend}{'d' if damped else ''},N)"
        if best is None or result.aicc < best[0]:
            best = (float(result.aicc), (name, *columns))
    return None if best is None else best[1]


def _naive(y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last value, within the spread of a random walk with the series' steps."""
    spread = _Z(0.5 + LEVEL / 2) * np.std(np.diff(y)) * np.sqrt(np.arange(1, horizon + 1))
    mean = np.full(horizon, y[-1])
    return mean, mean - spread, mean + spread


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None
