"""An example DUST plugin: a detector that flags values above a fixed limit, an analysis of a series' range, and a
`dust hello` command."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import numpy as np
import typer

from dust.anomalies.base import Score
from dust.engine.analysis import Context, SeriesAnalysis
from dust.plugins import hookimpl


class Threshold:
    """Score 1 for a value above ``limit`` (default 100), else 0."""

    name: ClassVar[str] = "threshold"
    description: ClassVar[str] = "Flags every value above a fixed limit."

    def __init__(self, limit: float = 100.0) -> None:
        self.limit = limit
        self.seen = 0

    def update(self, time: float, value: float) -> Score:
        if math.isnan(value):
            return Score(0.0)
        self.seen += 1
        if value > self.limit:
            return Score(1.0, f"{{label}} {value:g} is above the limit of {self.limit:g}")
        return Score(0.0)

    def state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        detector = cls(**settings)
        detector.seen = int(state["seen"])
        return detector


@hookimpl
def dust_detectors() -> list[type]:
    return [Threshold]


def value_range(context: Context) -> dict[str, float]:
    """The lowest and highest value recorded."""
    values = context.series.values()
    return {"low": float(np.nanmin(values)), "high": float(np.nanmax(values))}


@hookimpl
def dust_analyses() -> list[SeriesAnalysis]:
    return [SeriesAnalysis("range", "The lowest and highest value recorded.", value_range)]


@hookimpl
def dust_commands(app: typer.Typer) -> None:
    @app.command("hello")
    def hello(name: str = "world") -> None:
        """Say hello (the example plugin's command)."""
        typer.echo(f"hello, {name}, from the example plugin")
