"""`dust anomalies score FILE.csv`: the rows back with a score each, from the rows before it only; clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from dust.cli import app

HEADER = "timestamp,value\n"


def rows(values: list[float | str]) -> str:
    stamps = pd.date_range("2014-04-01", periods=len(values), freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    return HEADER + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True))


def series(n: int = 400) -> list[float | str]:
    values: list[float | str] = [round(float(v), 3) for v in 10 + np.random.default_rng(1).normal(0, 1, n)]
    values[300] = 40.0
    values[50] = ""  # a gap
    return values


def score(tmp_path: Path, text: str, *options: str) -> Result:
    path = tmp_path / "series.csv"
    path.write_text(text)
    return CliRunner().invoke(app, ["anomalies", "score", str(path), *options])


@pytest.mark.parametrize("detector", ["default", "mad", "cusum", "seasonal"])
def test_rows_come_back_unchanged_with_a_score_in_the_unit_interval(tmp_path: Path, detector: str) -> None:
    text = rows(series())
    result = score(tmp_path, text, "--detector", detector)
    assert result.exit_code == 0, result.output
    out = pd.read_csv(io.StringIO(result.stdout), dtype={"value": str}, keep_default_na=False)
    given = pd.read_csv(io.StringIO(text), dtype={"value": str}, keep_default_na=False)
    assert list(out.columns) == ["timestamp", "value", "anomaly_score"]
    assert out[["timestamp", "value"]].equals(given)
    assert out["anomaly_score"].between(0, 1).all()
    assert out["anomaly_score"][50] == 0  # the gap


def test_the_default_detector_flags_the_spike(tmp_path: Path) -> None:
    result = score(tmp_path, rows(series()))
    scores = pd.read_csv(io.StringIO(result.stdout))["anomaly_score"]
    assert scores.idxmax() == 300
    assert scores[300] >= 0.5


def test_a_prefix_scores_the_same_as_the_start_of_the_whole(tmp_path: Path) -> None:
    values = series()
    whole = pd.read_csv(io.StringIO(score(tmp_path, rows(values)).stdout))
    prefix = pd.read_csv(io.StringIO(score(tmp_path, rows(values[:320])).stdout))
    assert prefix.equals(whole.iloc[:320])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("time,value\n2014-04-01 00:00:00,1\n", "header must be 'timestamp,value'", id="bad-header"),
        pytest.param(HEADER + "2014-04-01 00:00:00,1\nyesterday,2\n", "line 3", id="bad-timestamp"),
        pytest.param(HEADER + "2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n", "line 3", id="bad-value"),
        pytest.param("", "not a readable CSV", id="empty-file"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, text: str, message: str) -> None:
    result = score(tmp_path, text)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["anomalies", "score", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "no file" in result.stderr


def test_an_unknown_detector_exits_2_with_a_suggestion(tmp_path: Path) -> None:
    result = score(tmp_path, rows(series()), "--detector", "seasnal")
    assert result.exit_code == 2
    assert "did you mean 'seasonal'" in result.stderr
