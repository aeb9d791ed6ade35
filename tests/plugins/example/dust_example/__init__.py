"""An example DUST plugin: a detector that flags values above a fixed limit, an analysis of a series' range, two
trigger actions (`note`, in the write's transaction; `append`, after commit), an importer (`dust import people`)
and a `dust hello` command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dust.anomalies.base import Score
from dust.engine import entities
from dust.engine.actions import Firing, Template, TriggerAction
from dust.engine.analysis import Context, SeriesAnalysis
from dust.importers.base import Importer, Progress
from dust.importers.report import Report
from dust.plugins import hookimpl
from dust.storage.repositories import entities as entity_repo


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


class Note(BaseModel):
    """Settings of the `note` action: which attribute of each target gets the message."""

    model_config = ConfigDict(extra="forbid")
    attribute: str = Field("note", pattern=r"^[a-z_]{1,64}$")
    message: Template = "{rule}: {label} {value}"


def note(firing: Firing, settings: Note) -> None:
    """Set the attribute of each target to the message, in the write's transaction."""
    for target in firing.targets:
        text = firing.render(settings.message, target)
        entities.update(firing.session, target, entities.EntityUpdate(attributes={settings.attribute: text}))


class Append(BaseModel):
    """Settings of the `append` action: the file a line goes to."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    message: Template = "{rule} fired on {entity.name}: {label} {value}"


def append(firing: Firing, settings: Append) -> dict[str, Any]:
    """Append the message to a file: I/O, so it runs after the write has committed."""
    with Path(settings.path).open("a") as out:
        out.write(firing.render(settings.message) + "\n")
    return {"appended_to": settings.path}


@hookimpl
def dust_trigger_actions() -> list[TriggerAction]:
    return [
        TriggerAction("note", "Sets an attribute of each target to a message.", Note, note),
        TriggerAction("append", "Appends a line to a file, after commit.", Append, append, after_commit=True),
    ]


def import_people(session: Session, paths: list[Path], progress: Progress) -> Report:
    """One person a line (their name, also their external id); a person already there is left as they are."""
    report = Report()
    for n, path in enumerate(paths):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                report.skip("lines", "empty", f"{path.name}:{number}")
            elif entity_repo.by_external_id(session, "person", name) is not None:
                report.existing["people"] += 1
            else:
                entities.create(session, entities.EntityCreate(kind="person", name=name, external_id=name))
                report.imported["people"] += 1
        progress(n + 1, len(paths))
    return report


@hookimpl
def dust_importers() -> list[Importer]:
    help_ = "Load people from text files, one name a line; again adds nothing."
    return [Importer("people", help_, "files", import_people, path_help="Text files of names.", metavar="FILE...")]
