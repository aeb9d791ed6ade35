"""Figures, as pure functions of what the engine returns: testable without a browser or a database.

Colour scales are colour-blind safe: Viridis and Cividis for values, the Okabe-Ito palette for categories.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any common colour-vision deficiency.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
ANOMALY = "#D55E00"  # vermillion, drawn as an x: told apart by shape as well as colour
THRESHOLD = "#CC79A7"
MARGINS = {"l": 10, "r": 10, "t": 40, "b": 10}
CHAR_PX = 7  # about the width of a character of plotly's 12 px tick labels
# A plain white look. Not plotly's "plotly_white" template: every figure deep-copies a template, and that one's
# copy was most of the time the entity page took to build its four figures (0.3 of 0.4 s).
PLAIN = {"layout": {"plot_bgcolor": "white", "xaxis": {"gridcolor": "#EBF0F8"}, "yaxis": {"gridcolor": "#EBF0F8"}}}


@dataclass(frozen=True)
class Grid:
    """A tensor read flattened for drawing: one row per cell (the labels of every axis but time), one column per
    time step, with each row's unit."""

    rows: list[str]
    units: list[str]
    times: list[datetime]
    values: np.ndarray  # rows × times, NaN where nothing is recorded


def grid_of(view: Any) -> Grid:
    """A ``TensorView`` (every axis kept, time last) as a ``Grid``; row names join the labels with " · "."""
    axes = [d for d in view.dims if d != "time"]
    labels = [view.coords[d] for d in axes]
    rows = [" · ".join(combo) for combo in itertools.product(*labels)] if axes else ["value"]
    units_by_axis = {a.name: a.units for a in view.meta.axes}
    units = []
    for combo in itertools.product(*labels) if axes else [()]:
        unit = next(
            (
                units_by_axis[a].get(label, "")
                for a, label in zip(axes, combo, strict=True)
                if units_by_axis[a].get(label)
            ),
            "",
        )
        units.append(unit)
    values = np.asarray(view.values, dtype=float).reshape(len(rows), -1)
    return Grid(rows, units, list(view.timestamps), values)


def empty(message: str) -> go.Figure:
    """A blank figure that says what to do instead of an empty chart."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    figure.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=220, margin=MARGINS, template=PLAIN)
    return figure


def heatmap(grid: Grid, title: str = "") -> go.Figure:
    """Label × time; each row coloured on its own scale (its min to its max), so that a temperature and a blood
    pressure are both readable; hover shows the value and its unit."""
    if grid.values.size == 0 or np.isnan(grid.values).all():
        return empty("No values recorded yet: record one below, or import data.")
    recorded = ~np.isnan(grid.values).all(axis=1)
    if not recorded.all():  # labels with nothing in the window take no row; the title says how many
        left_out = int((~recorded).sum())
        title = f"{title} ({left_out} label{'s' if left_out > 1 else ''} without values here not drawn)".strip()
        kept = np.flatnonzero(recorded)
        grid = Grid([grid.rows[i] for i in kept], [grid.units[i] for i in kept], grid.times, grid.values[kept])
    low = np.nanmin(np.where(np.isnan(grid.values), np.inf, grid.values), axis=1, keepdims=True)
    high = np.nanmax(np.where(np.isnan(grid.values), -np.inf, grid.values), axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = (grid.values - low) / span
    # value and unit per cell, as objects: a string array would turn the numbers into text, which hover cannot format
    hover = np.empty((*grid.values.shape, 2), dtype=object)
    hover[..., 0] = grid.values.astype(object)
    hover[..., 0][np.isnan(grid.values)] = None  # JSON null: plotly's hover shows nothing there
    hover[..., 1] = np.asarray(grid.units, dtype=object)[:, None]
    figure = go.Figure(
        go.Heatmap(
            z=scaled,
            x=grid.times,
            y=grid.rows,
            customdata=hover,
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "per label<br>low → high"}, "tickvals": [0, 1], "ticktext": ["min", "max"]},
            hovertemplate="%{y}<br>%{x}<br>%{customdata[0]:.4g} %{customdata[1]}<extra></extra>",
            hoverongaps=False,
        )
    )
    figure.update_layout(
        title=title,
        height=max(220, 28 * len(grid.rows) + 90),
        template=PLAIN,
        yaxis={"autorange": "reversed"},  # the schema's first label on top, as listed
    )
    return fixed_margins(figure, left=CHAR_PX * max(len(r) for r in grid.rows) + 20, right=110, bottom=40)


def fixed_margins(figure: go.Figure, *, left: int, right: int, bottom: int) -> go.Figure:
    """Margins set here for the labels, colour bar and legend, not measured by plotly in the browser: its
    automatic margins draw each chart again once measured, which was half of a chart's drawing time (bench/ui.py)."""
    figure.update_layout(margin={"l": left, "r": right, "t": 40, "b": bottom})
    figure.update_xaxes(automargin=False)
    figure.update_yaxes(automargin=False)
    return figure


@dataclass(frozen=True)
class Mark:
    """An anomaly to mark on a line: when, which row, the value and its score."""

    time: datetime
    row: str
    value: float
    score: float


@dataclass(frozen=True)
class Threshold:
    """A trigger rule's threshold on one row: ``op`` ``value``, named by the rule."""

    row: str
    op: str
    value: float
    name: str


def lines(
    grid: Grid, picked: Sequence[str], marks: Sequence[Mark] = (), thresholds: Sequence[Threshold] = ()
) -> go.Figure:
    """The picked rows over time, anomalies marked with an x, trigger thresholds as dashed lines."""
    shown = [r for r in picked if r in grid.rows]
    if not shown:
        return empty("Pick a label to draw.")
    figure = go.Figure()
    for n, row in enumerate(shown):
        at = grid.rows.index(row)
        unit = grid.units[at]
        figure.add_trace(
            go.Scatter(
                x=grid.times,
                y=grid.values[at],
                name=f"{row} ({unit})" if unit else row,
                mode="lines+markers",
                connectgaps=False,
                line={"color": OKABE_ITO[n % len(OKABE_ITO)]},
                marker={"size": 6},
                hovertemplate=f"{row}<br>%{{x}}<br>%{{y:.4g}} {unit}<extra></extra>",
            )
        )
    flagged = [m for m in marks if m.row in shown]
    if flagged:
        figure.add_trace(
            go.Scatter(
                x=[m.time for m in flagged],
                y=[m.value for m in flagged],
                name="anomaly",
                mode="markers",
                marker={"symbol": "x", "size": 12, "color": ANOMALY, "line": {"width": 2}},
                customdata=[[m.row, m.score] for m in flagged],
                hovertemplate="anomaly on %{customdata[0]}<br>%{x}<br>%{y:.4g}, "
                "score %{customdata[1]:.2f}<extra></extra>",
            )
        )
    for threshold in (t for t in thresholds if t.row in shown):
        figure.add_hline(
            y=threshold.value,
            line={"dash": "dash", "color": THRESHOLD},
            annotation_text=f"{threshold.name}: {threshold.op} {threshold.value:g}",
            annotation_position="top left",
        )
    figure.update_layout(height=320, template=PLAIN, legend={"orientation": "h", "y": -0.2})
    return fixed_margins(figure, left=60, right=10, bottom=90)


def surface(
    values: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], x_name: str, y_name: str, title: str
) -> go.Figure:
    """A tensor with two axes at one time step as a surface that rotates (drag it); ``values`` is y × x."""
    if values.size == 0 or np.isnan(values).all():
        return empty("Nothing recorded at this time step: move the slider.")
    figure = go.Figure(
        go.Surface(
            z=values,
            x=list(range(len(x_labels))),
            y=list(range(len(y_labels))),
            colorscale="Cividis",
            customdata=np.array([[[y, x] for x in x_labels] for y in y_labels], dtype=object),
            hovertemplate=f"{y_name} %{{customdata[0]}}<br>{x_name} %{{customdata[1]}}<br>%{{z:.4g}}<extra></extra>",
            connectgaps=False,
        )
    )
    axis = {"tickmode": "array"}
    figure.update_layout(
        title=title,
        height=460,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        scene={
            "xaxis": {
                **axis,
                "title": {"text": x_name},
                "tickvals": list(range(len(x_labels))),
                "ticktext": list(x_labels),
            },
            "yaxis": {
                **axis,
                "title": {"text": y_name},
                "tickvals": list(range(len(y_labels))),
                "ticktext": list(y_labels),
            },
            "zaxis": {"title": {"text": "value"}},
        },
    )
    return figure


def trend(points: Sequence[Mapping[str, Any]], title: str) -> go.Figure:
    """An aggregate series (``insights.aggregate_by_step``): the value over time, the count of values under it."""
    if not points:
        return empty("No values for this cohort: widen it, or pick another schema or label.")
    times = [p["time"] for p in points]
    figure = go.Figure()
    figure.add_trace(
        go.Bar(x=times, y=[p["count"] for p in points], name="values counted", marker={"color": "#DDDDDD"})
    )
    figure.add_trace(
        go.Scatter(
            x=times,
            y=[p["value"] for p in points],
            name=title,
            mode="lines+markers",
            connectgaps=False,
            line={"color": OKABE_ITO[0]},
            yaxis="y2",  # the overlaying axis is drawn on top: the line over the bars
        )
    )
    suppressed = sum(1 for p in points if p.get("suppressed"))
    figure.update_layout(
        title=title + (f" ({suppressed} points withheld: cohort too small)" if suppressed else ""),
        height=360,
        template=PLAIN,
        yaxis={"title": {"text": "count"}, "side": "right", "showgrid": False},
        yaxis2={"title": {"text": "value"}, "overlaying": "y", "side": "left"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fixed_margins(figure, left=80, right=80, bottom=90)


def importances(names: Sequence[str], values: Sequence[float], title: str) -> go.Figure:
    """What a prediction leaned on, most first: bars right (blue) for what spoke for the class, left (vermillion)
    against it."""
    if not names:
        return empty("Nothing to show: the prediction leaned on no relation you may see.")
    figure = go.Figure(
        go.Bar(
            x=list(values),
            y=list(names),
            orientation="h",
            marker={"color": [OKABE_ITO[0] if v >= 0 else ANOMALY for v in values]},
            hovertemplate="%{y}: %{x:.3g}<extra></extra>",
        )
    )
    figure.update_layout(
        title=title,
        height=max(160, 26 * len(names) + 80),
        template=PLAIN,
        xaxis={"title": {"text": "importance (logit units)"}, "zeroline": True},
        yaxis={"autorange": "reversed"},  # the most important on top
    )
    return fixed_margins(figure, left=CHAR_PX * max(len(n) for n in names) + 20, right=10, bottom=50)
