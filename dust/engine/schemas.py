"""Tensor schemas: named axes with labels (unit and valid range per label) and a time axis; versioned."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound, did_you_mean
from dust.storage.repositories import schemas as repo

NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
RESERVED_AXES = {"time", "from", "to", "as_of", "value", "latest"}
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
TimeUnit = Literal["second", "minute", "hour", "day", "week"]


class Axis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME, description="Axis name, e.g. metric.")
    labels: list[str] = Field(min_length=1, max_length=10_000, description="Ordered, unique labels.")
    units: dict[str, str] = Field(default_factory=dict, description="Unit per label (UCUM), optional.")
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Valid [min, max] per label; values outside are refused."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not re.match(r"^[^\x00-\x1f,]{1,128}$", label):
                raise ValueError(f"label {label!r} must be 1-128 printable characters without commas")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if name in RESERVED_AXES:
            raise ValueError(f"axis name {name!r} is reserved; reserved names: {sorted(RESERVED_AXES)}")
        return name

    @model_validator(mode="after")
    def _known_labels(self) -> Axis:
        for field in ("units", "ranges"):
            for label in getattr(self, field):
                if label not in self.labels:
                    raise ValueError(f"{field} names label {label!r}, which is not in labels")
        for label, (low, high) in self.ranges.items():
            if not low <= high:
                raise ValueError(f"range of {label!r} must be [min, max] with min <= max")
        return self


class TimeAxis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: TimeUnit = "day"
    step: int = Field(1, ge=1, le=1_000_000, description="Grid spacing in units.")
    origin: datetime | None = Field(None, description="Default origin for this schema's tensors.")

    @property
    def seconds(self) -> int:
        return UNIT_SECONDS[self.unit] * self.step

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)


class SchemaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    description: str | None = Field(None, max_length=2000)
    axes: list[Axis] = Field(min_length=1, max_length=8)
    time: TimeAxis = Field(default_factory=TimeAxis)

    @model_validator(mode="after")
    def _unique_axes(self) -> SchemaCreate:
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError("axis names must be unique")
        cells = 1
        for axis in self.axes:
            cells *= len(axis.labels)
        if cells > 100_000:
            raise ValueError(f"a time step may hold at most 100000 cells; these axes make {cells}")
        return self


class SchemaUpdate(BaseModel):
    """A new version: the same axes and time axis, labels only appended; units and ranges may change."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=2000)
    axes: list[Axis] = Field(min_length=1, max_length=8)
    time: TimeAxis | None = None


class SchemaPublic(SchemaCreate):
    version: int
    created_at: datetime


@dataclass(frozen=True)
class SchemaDef:
    """A schema version ready for fast lookups while validating writes."""

    name: str
    version: int
    axes: list[Axis]
    time: TimeAxis

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.labels) for a in self.axes)

    def label_index(self, axis: Axis, label: str) -> int:
        try:
            return axis.labels.index(label)
        except ValueError:
            raise InvalidInput(
                f"label '{label}' is not in axis {axis.name}{did_you_mean(label, axis.labels)}"
                f" (labels: {', '.join(axis.labels[:20])}{', …' if len(axis.labels) > 20 else ''})"
            ) from None

    def axis(self, name: str) -> Axis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        names = [a.name for a in self.axes]
        raise InvalidInput(f"'{name}' is not an axis of schema {self.name}{did_you_mean(name, names)}")


def create(session: Session, data: SchemaCreate) -> SchemaPublic:
    if repo.latest(session, data.name) is not None:
        raise Conflict(f"schema '{data.name}' exists; PUT /schemas/{data.name} publishes a new version")
    row = repo.add(session, data.name, 1, data.model_dump(mode="json"))
    return _public(row)


def publish(session: Session, name: str, data: SchemaUpdate) -> SchemaPublic:
    """A compatible new version of ``name``: existing labels kept in order, new ones appended."""
    current = get_def(session, name)
    new = SchemaCreate(name=name, description=data.description, axes=data.axes, time=data.time or current.time)
    _check_compatible(current, new)
    row = repo.add(session, name, current.version + 1, new.model_dump(mode="json"))
    return _public(row)


def _check_compatible(old: SchemaDef, new: SchemaCreate) -> None:
    if [a.name for a in new.axes] != [a.name for a in old.axes]:
        raise Conflict(
            f"a new version must keep the axes {[a.name for a in old.axes]} in order; "
            "to change axes create a schema under another name"
        )
    for before, after in zip(old.axes, new.axes, strict=True):
        if after.labels[: len(before.labels)] != before.labels:
            raise Conflict(
                f"axis {before.name}: a new version may only append labels; it must start with {before.labels}"
            )
    if (new.time.unit, new.time.step) != (old.time.unit, old.time.step):
        raise Conflict("a new version must keep the time unit and step")


def get(session: Session, name: str, version: int | None = None) -> SchemaPublic:
    return _public(_row(session, name, version))


def get_def(session: Session, name: str, version: int | None = None) -> SchemaDef:
    row = _row(session, name, version)
    return definition(row.name, row.version, row.definition)


def definition(name: str, version: int, data: dict[str, Any]) -> SchemaDef:
    parsed = SchemaCreate.model_validate(data)
    return SchemaDef(name, version, parsed.axes, parsed.time)


def list_(session: Session) -> list[SchemaPublic]:
    return [_public(row) for row in repo.latest_of_each(session)]


def delete(session: Session, name: str) -> None:
    _row(session, name, None)
    used = repo.tensors_using(session, name)
    if used:
        raise Conflict(f"schema '{name}' is used by {used} tensor(s); delete them first")
    repo.delete(session, name)


def _row(session: Session, name: str, version: int | None) -> Any:
    row = repo.latest(session, name) if version is None else repo.version(session, name, version)
    if row is None:
        known = repo.names(session)
        if version is not None and name in known:
            raise NotFound(f"schema '{name}' has no version {version}")
        raise NotFound(f"schema '{name}' does not exist{did_you_mean(name, known)}")
    return row


def _public(row: Any) -> SchemaPublic:
    return SchemaPublic(**row.definition, version=row.version, created_at=row.created_at)
