"""Tensor schemas: named axes with labels (unit and valid range per label) and a time axis; versioned."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, InvalidInput, NotFound, did_you_mean
from dust.engine import caches
from dust.engine.fields import NEVER_IN_NAMES, Integer, Plain, Timestamp, Unit
from dust.storage.repositories import schemas as repo

NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
# Read parameters, and keys of a read's `selection` beside the axes picked by one label.
RESERVED_AXES = {"time", "from", "to", "as_of", "value", "latest", "requested"}
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
TimeUnit = Literal["second", "minute", "hour", "day", "week"]
CALENDAR_UNITS = ("day", "week")  # the units whose steps follow a time zone's clock
MAX_CELLS = 100_000
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
_CACHE = "dust.schema_defs"  # session.info key of get_def's cache
# What a label may be, for the document; Axis._labels checks it (NUL to U+001F and commas are caught there).
Label = Annotated[
    Plain, Field(json_schema_extra={"pattern": rf"^[^{NEVER_IN_NAMES},]*$", "minLength": 1, "maxLength": 128})
]
# Stored definitions are JSON, which has no infinity or NaN: a non-finite bound would not read back.
Bound = Annotated[float, Field(allow_inf_nan=False)]


class Axis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME,
        description="Axis name, e.g. metric.",
        json_schema_extra={"not": {"enum": [name for name in sorted(RESERVED_AXES)]}},  # a list of JSON values
    )
    labels: list[Label] = Field(
        min_length=1, max_length=10_000, description="Ordered, unique labels.", json_schema_extra={"uniqueItems": True}
    )
    units: dict[str, Unit] = Field(
        default_factory=dict, description="Unit per label (UCUM), optional; at most 64 characters."
    )
    ranges: dict[str, tuple[Bound, Bound]] = Field(
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
    step: Integer = Field(1, ge=1, le=1_000_000, description="Grid spacing in units.")
    origin: Timestamp | None = Field(None, description="Default origin for this schema's tensors.")
    zone: str = Field(
        "UTC",
        max_length=64,
        description="IANA time zone whose local days the day and week steps follow (e.g. Europe/Berlin).",
        examples=["Europe/Berlin"],
    )

    @field_validator("zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            # "localtime" is whatever the server's clock is set to; right/ zones count leap seconds as seconds.
            if zone == "localtime" or zone.startswith("right/"):
                raise ZoneInfoNotFoundError(zone)
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # not the form of a name, or a folder of zones
            raise ValueError(
                f"{zone!r} is not an IANA time zone; name one such as Europe/Berlin, America/New_York or UTC"
            ) from None
        return zone

    @model_validator(mode="after")
    def _zone_of_a_calendar_unit(self) -> TimeAxis:
        if self.zone != "UTC" and self.unit not in CALENDAR_UNITS:
            raise ValueError(
                f"zone '{self.zone}' needs a unit of day or week: steps of {self.unit}s are a fixed length of absolute "
                "time, the same in every zone; leave zone out (UTC) and give the origin"
            )
        return self

    @property
    def seconds(self) -> int:
        return UNIT_SECONDS[self.unit] * self.step

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)


def _check_axes(axes: list[Axis]) -> list[Axis]:
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValueError("axis names must be unique")
    cells = 1
    for axis in axes:
        cells *= len(axis.labels)
    if cells > MAX_CELLS:
        raise ValueError(f"a time step may hold at most {MAX_CELLS} cells; these axes make {cells}")
    return axes


class SchemaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    description: Plain | None = Field(None, max_length=2000)
    sensitive: bool = Field(
        False, strict=True, description="Per-entity values are withheld from de-identified readers."
    )
    axes: list[Axis] = Field(min_length=1, max_length=8)
    time: TimeAxis = Field(default_factory=TimeAxis)

    _axes = field_validator("axes")(_check_axes)


class SchemaUpdate(BaseModel):
    """A new version: the same axes and time axis, labels only appended; units and ranges may change.

    The read-only fields a read returns (``name``, ``version``, ``created_at``) may come back with it, as read:
    a schema read, edited and sent back is a new version. They are checked, not taken (``check_read_only``).
    """

    model_config = ConfigDict(extra="forbid")

    description: Plain | None = Field(None, max_length=2000)
    sensitive: bool | None = Field(None, strict=True, description="Default: as the current version.")
    axes: list[Axis] = Field(min_length=1, max_length=8)
    time: TimeAxis | None = None
    name: str | None = Field(
        None, pattern=NAME, description="Read-only: if sent, the schema's name (the path's), else 422."
    )
    version: Integer | None = Field(
        None, ge=1, le=MAX_VERSION, description="Read-only: if sent, the current version's number, else 422."
    )
    created_at: Timestamp | None = Field(
        None, description="Read-only: if sent, when the current version was created (as read), else 422."
    )

    # Checked here too, so that a bad new version is refused as input rather than failing inside publish.
    _axes = field_validator("axes")(_check_axes)


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
    sensitive: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.labels) for a in self.axes)

    @cached_property
    def strides(self) -> np.ndarray:
        """Per axis, how far one label along it moves the flat cell index (C order, as ``bounds``)."""
        return np.cumprod((*self.shape[1:], 1)[::-1])[::-1]

    @cached_property
    def _positions(self) -> dict[str, dict[str, int]]:
        # A dict per axis: list.index would make a batch of n values over L labels cost n × L.
        return {a.name: {label: i for i, label in enumerate(a.labels)} for a in self.axes}

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per flat cell: the intersection of the ranges of the cell's labels, -inf..inf if none."""
        low, high = np.full(self.shape, -np.inf), np.full(self.shape, np.inf)
        for position, axis in enumerate(self.axes):
            for label, (lo, hi) in axis.ranges.items():
                at = tuple(
                    self._positions[axis.name][label] if i == position else slice(None) for i in range(len(self.axes))
                )
                low[at], high[at] = np.maximum(low[at], lo), np.minimum(high[at], hi)
        return low.reshape(-1), high.reshape(-1)

    def label_index(self, axis: Axis, label: str) -> int:
        position = self._positions[axis.name].get(label)
        if position is None and not label.isascii():  # labels are stored in NFC; "café" may come decomposed
            position = self._positions[axis.name].get(unicodedata.normalize("NFC", label))
        if position is None:
            raise InvalidInput(
                f"label '{label}' is not in axis {axis.name}{did_you_mean(label, axis.labels)}"
                f" (labels: {', '.join(axis.labels[:20])}{', …' if len(axis.labels) > 20 else ''})",
                code="unknown_label",
            )
        return position

    def axis(self, name: str) -> Axis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        names = [a.name for a in self.axes]
        raise InvalidInput(f"'{name}' is not an axis of schema {self.name}{did_you_mean(name, names)}")


def create(session: Session, data: SchemaCreate) -> SchemaPublic:
    if repo.latest(session, data.name) is not None:
        raise _exists(data.name)
    _forget(session, data.name)  # one of this name that another session deleted may still be cached here
    return _public(_add(session, data, 1, _exists(data.name)))


def _exists(name: str) -> Conflict:
    return Conflict(
        f"schema '{name}' exists; publish a new version with PUT /schemas/{name} (in Python: update_schema)"
    )


def _add(session: Session, data: SchemaCreate, version: int, clash: Conflict) -> Any:
    """Insert one version; a concurrent request that took the same (name, version) first makes it a 409."""
    try:
        with session.begin_nested():
            return repo.add(session, data.name, version, data.model_dump(mode="json"))
    except IntegrityError:
        raise clash from None


def publish(session: Session, name: str, data: SchemaUpdate) -> SchemaPublic:
    """A compatible new version of ``name``: existing labels kept in order, new ones appended; the current
    version itself if ``data`` changes nothing."""
    return put(session, name, data)[0]


def put(session: Session, name: str, data: SchemaUpdate) -> tuple[SchemaPublic, bool]:
    """``publish``, and whether it made a new version: ``data`` the same as the current version makes none."""
    row = _row(session, name, None)
    current = definition(row.name, row.version, row.definition)
    check_read_only(row, data)
    new = SchemaCreate(
        name=name,
        description=data.description,
        sensitive=current.sensitive if data.sensitive is None else data.sensitive,
        axes=data.axes,
        time=data.time or current.time,
    )
    if new.model_dump(mode="json") == SchemaCreate.model_validate(row.definition).model_dump(mode="json"):
        return _public(row), False
    _check_compatible(current, new)
    clash = Conflict(f"version {current.version + 1} of schema '{name}' was just published; read it and retry")
    _forget(session, name)  # the cached latest is no longer the latest
    return _public(_add(session, new, current.version + 1, clash)), True


def check_read_only(row: Any, data: SchemaUpdate) -> None:
    """The read-only fields sent back must be as a read of the current version gives them."""
    if data.name is not None and data.name != row.name:
        raise InvalidInput(
            f"name '{data.name}' is not this schema's: the path names '{row.name}'. name is read-only; send it "
            "unchanged or leave it out (a schema is renamed by creating it under the new name)"
        )
    if data.version is not None and data.version < row.version:
        # a lost update in the making: someone published since this copy was read
        raise Conflict(
            f"version {data.version} of schema '{row.name}' is no longer the current one: version {row.version} "
            f"was published since. Read the schema again (GET /schemas/{row.name}; in Python get_schema), apply "
            "your change to it and send that, or leave version out"
        )
    if data.version is not None and data.version != row.version:
        raise InvalidInput(
            f"version {data.version} of schema '{row.name}' does not exist; the current one is {row.version}. "
            "version is read-only: send it as read, or leave it out"
        )
    if data.created_at is not None and data.created_at != row.created_at:
        raise InvalidInput(
            f"created_at {_z(data.created_at)} is not when version {row.version} of schema '{row.name}' "
            f"was created ({_z(row.created_at)}). created_at is read-only; send it unchanged or leave it out"
        )


def _z(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


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
    if new.time.zone != old.time.zone:
        raise Conflict(
            f"a new version must keep the time zone '{old.time.zone}': another would move every stored value to "
            "other instants; create a schema under another name for the new zone"
        )


def get(session: Session, name: str, version: int | None = None) -> SchemaPublic:
    return _public(_row(session, name, version))


def get_def(session: Session, name: str, version: int | None = None) -> SchemaDef:
    """Version ``version`` of ``name`` (default: the latest), parsed once per session.

    A written version never changes, so caching it is exact. The latest is the one this session first saw;
    a session is one unit of work, and one published meanwhile by another shows in the next session.
    Creating, publishing or deleting a schema in this session drops its entries.
    """
    cache: dict[tuple[str, int | None], SchemaDef] = session.info.setdefault(_CACHE, {})
    found = cache.get((name, version))
    if found is None:
        found = _shared_def(session, name, version)
        cache[(name, version)] = cache[(name, found.version)] = found
    return found


def get_defs(session: Session, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], SchemaDef]:
    """``get_def`` of many (name, version) pairs, those not cached read together by one query."""
    cache: dict[tuple[str, int | None], SchemaDef] = session.info.setdefault(_CACHE, {})
    shared = caches.of(session)
    found: dict[tuple[str, int], SchemaDef] = {}
    for key in dict.fromkeys(keys):
        hit = cache.get(key) or (None if shared is None else shared.get(session, caches.SCHEMAS, key))
        if hit is not None:
            found[key] = hit
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    for row in repo.versions(session, missing) if missing else []:
        sdef = found[(row.name, row.version)] = definition(row.name, row.version, row.definition)
        if shared is not None:
            shared.put(session, caches.SCHEMAS, (row.name, row.version), sdef)
    for key, sdef in found.items():
        cache[key] = sdef
    for name, version in missing:
        if (name, version) not in found:  # deleted meanwhile: get_def says so
            found[(name, version)] = get_def(session, name, version)
    return found


def _shared_def(session: Session, name: str, version: int | None) -> SchemaDef:
    """A version from the app's caches where there are some (only deleting a schema can change what a name and
    version mean: it raises the schemas epoch)."""
    shared = caches.of(session) if version is not None else None
    found = None if shared is None else shared.get(session, caches.SCHEMAS, (name, version))
    if found is None:
        row = _row(session, name, version)
        found = definition(row.name, row.version, row.definition)
        if shared is not None:
            shared.put(session, caches.SCHEMAS, (name, version), found)
    return found


def _forget(session: Session, name: str) -> None:
    cache = session.info.get(_CACHE, {})
    for key in [key for key in cache if key[0] == name]:
        del cache[key]


@event.listens_for(Session, "after_soft_rollback")
def _forget_all(session: Session, _transaction: Any) -> None:
    """A rollback (a savepoint's too) may undo a version this session cached after publishing it."""
    session.info.pop(_CACHE, None)


def definition(name: str, version: int, data: dict[str, Any]) -> SchemaDef:
    parsed = SchemaCreate.model_validate(data)
    return SchemaDef(name, version, parsed.axes, parsed.time, parsed.sensitive)


def list_(session: Session) -> list[SchemaPublic]:
    return [_public(row) for row in repo.latest_of_each(session)]


def delete(session: Session, name: str) -> None:
    _row(session, name, None)
    used = repo.tensors_using(session, name)
    if used:
        raise Conflict(f"schema '{name}' is used by {used} tensor(s); delete them first")
    _forget(session, name)
    caches.changed(session, caches.SCHEMAS)  # the name may come back with other labels under the same versions
    from dust.engine import anomalies  # it builds on this module: imported here, not at the top

    anomalies.forget_schema(session, name)
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
