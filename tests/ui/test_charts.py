"""The figure builders, on plain values: what a reader sees drawn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from dust.ui.components import charts
from dust.ui.components.charts import Grid, Mark, Threshold

DAYS = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=n) for n in range(3)]


def _grid() -> Grid:
    values = np.array([[36.5, np.nan, 39.0], [120.0, 130.0, 110.0]])
    return Grid(["temperature", "systolic_bp"], ["Cel", "mm[Hg]"], DAYS, values)


def test_each_heatmap_row_is_scaled_on_its_own_and_hover_shows_value_and_unit() -> None:
    trace = charts.heatmap(_grid()).data[0]
    z = np.asarray(trace.z, dtype=float)
    assert z[0, 0] == 0 and z[0, 2] == 1 and np.isnan(z[0, 1])  # temperature: its own min..max
    assert z[1, 2] == 0 and z[1, 1] == 1  # blood pressure: its own
    assert trace.colorscale[0][1] == "#440154"  # Viridis: colour-blind safe
    assert trace.customdata[0][2][0] == 39.0 and trace.customdata[0][2][1] == "Cel"
    assert "%{customdata[1]}" in trace.hovertemplate


def test_an_empty_tensor_says_what_to_do() -> None:
    figure = charts.heatmap(Grid(["temperature"], ["Cel"], [], np.empty((1, 0))))
    assert "record one below" in figure.layout.annotations[0].text


def test_lines_mark_anomalies_and_draw_thresholds_of_the_rows_drawn() -> None:
    marks = [Mark(DAYS[2], "temperature", 39.0, 0.9), Mark(DAYS[0], "systolic_bp", 120.0, 0.8)]
    rules = [Threshold("temperature", ">=", 38.3, "fever"), Threshold("systolic_bp", "<", 90, "hypotension")]
    figure = charts.lines(_grid(), ["temperature"], marks, rules)
    names = [t.name for t in figure.data]
    assert names == ["temperature (Cel)", "anomaly"]
    assert list(figure.data[1].y) == [39.0]  # only the drawn row's anomaly
    shapes = figure.layout.shapes
    assert len(shapes) == 1 and shapes[0].y0 == 38.3
    assert "fever: >= 38.3" in figure.layout.annotations[0].text


def test_the_3d_view_is_a_surface_labelled_by_both_axes() -> None:
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # product × measure
    figure = charts.surface(values, ["stock", "sold"], ["p1", "p2", "p3"], "measure", "product", "at 2026-01-03")
    assert figure.data[0].type == "surface"
    assert list(figure.layout.scene.xaxis.ticktext) == ["stock", "sold"]
    assert list(figure.layout.scene.yaxis.ticktext) == ["p1", "p2", "p3"]
    assert (
        "move the slider"
        in charts.surface(np.full((2, 2), np.nan), ["a", "b"], ["c", "d"], "x", "y", "").layout.annotations[0].text
    )


def test_a_trend_says_when_points_were_withheld() -> None:
    points = [
        {"time": DAYS[0], "value": 36.9, "count": 12},
        {"time": DAYS[1], "value": None, "count": 2, "suppressed": True},
    ]
    figure = charts.trend(points, "mean temperature per day")
    assert "1 points withheld" in figure.layout.title.text
    assert list(figure.data[1].y) == [36.9, None]
    assert "widen it" in charts.trend([], "t").layout.annotations[0].text


def test_labels_without_values_take_no_heatmap_row_and_the_title_says_so() -> None:
    grid = Grid(["glucose", "calcium"], ["mg/dL", "mg/dL"], DAYS, np.array([[90.0, 95.0, 91.0], [np.nan] * 3]))
    figure = charts.heatmap(grid)
    assert list(figure.data[0].y) == ["glucose"]
    assert "1 label without values here not drawn" in figure.layout.title.text
