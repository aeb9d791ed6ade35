"""The time axis of a tensor: index ``i`` starts ``i`` steps after the origin; a timestamp maps to the step
containing it.

Seconds, minutes and hours are fixed lengths of absolute time. Days and weeks are calendar units of a time zone
(UTC unless the schema names one): index ``i`` starts at the origin's local wall-clock time on the local date
``i × step`` days after the origin's, so a local day is 23 or 25 hours on the days clocks change.
"""

from __future__ import annotations

import functools
import numbers
import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np

from dust.core.errors import InvalidInput, OutOfRange

MAX_TIME_INDEX = 100_000_000
MIN_TIME_INDEX = -MAX_TIME_INDEX  # indices before the origin: backfill without moving it
# Default origins of a schema without one sit on this grid: local midnight of a Monday, so weeks start on Mondays.
GRID_EPOCH = datetime(2000, 1, 3)
_US = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
_INDEX = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)
_INDEX_DIGITS = len(str(MAX_TIME_INDEX))


@dataclass(frozen=True)
class TimeGrid:
    origin: datetime
    step_seconds: int
    zone: str = "UTC"  # the calendar's time zone; only day and week grids have another

    @property
    def step_us(self) -> int:
        return self.step_seconds * 1_000_000

    @cached_property
    def _local(self) -> tuple[ZoneInfo, datetime] | None:
        """(zone, the origin's local wall-clock time) of a grid in a zone with its own clock; None in UTC."""
        if self.zone == "UTC":
            return None
        zone = ZoneInfo(self.zone)
        return zone, self.origin.astimezone(zone).replace(tzinfo=None)

    def index(self, when: object, field: str = "time") -> int:
        """A time index from an index or an ISO 8601 timestamp (floored onto the grid)."""
        if isinstance(when, bool | np.bool_):
            raise InvalidInput(
                f"{field} must be a time index or an ISO 8601 timestamp, not {shown(when)}", code="not_a_time"
            )
        if isinstance(when, numbers.Integral):
            return self.check(int(when), field)
        if isinstance(when, float) and when.is_integer():
            return self.check(int(when), field)
        if isinstance(when, str) and _INDEX.fullmatch(when):
            return self.check(_integer(when, field), field)
        if isinstance(when, str):
            when = parse_timestamp(when, field)
        if not isinstance(when, datetime):
            raise InvalidInput(
                f"{field} must be a time index or an ISO 8601 timestamp, not {shown(when)}", code="not_a_time"
            )
        try:
            return self.check(self.step_of(as_utc(when, field)), field)
        except OverflowError:  # a step next to it would fall outside the years 1..9999
            raise OutOfRange(f"{field} {when.isoformat()} is too close to year 1 or 9999 for this grid") from None

    def step_of(self, when: datetime) -> int:
        """The index of the step holding ``when`` (UTC), unchecked: the last whose start is not after it."""
        if self._local is None:
            return ((when - self.origin) // _US) // self.step_us
        zone, wall = self._local
        guess = ((when.astimezone(zone).replace(tzinfo=None) - wall) // _US) // self.step_us
        # Wall-clock arithmetic is off by a step at most, around a change of the clocks: settle on the exact one.
        while self.timestamp(guess) > when:
            guess -= 1
        while self._starts_by(guess + 1, when):
            guess += 1
        return guess

    def _starts_by(self, index: int, when: datetime) -> bool:
        try:
            return self.timestamp(index) <= when
        except OverflowError:  # a step past year 9999 starts after any time
            return False

    @cached_property
    def _surely_named(self) -> tuple[int, int]:
        """The indices that surely name a timestamp in the years 1..9999: all but the last two days' worth of steps
        at either end (a zone's offset moves a step's instant by less than a day). ``check`` names only those
        outside, at the edges, to be sure: naming one cost a tenth of a point read's engine work."""
        start = self.origin if self._local is None else self._local[1]
        step = timedelta(seconds=self.step_seconds)
        margin = -(-2 * 86_400 // self.step_seconds) + 1
        first = (datetime.min.replace(tzinfo=start.tzinfo) - start) // step
        last = (datetime.max.replace(tzinfo=start.tzinfo) - start) // step
        return first + margin, last - margin

    def check(self, index: int, field: str = "time") -> int:
        """``index`` if it is a time index this grid can hold and name as a timestamp (years 1..9999)."""
        check_index(index, field)
        first, last = self._surely_named
        if first <= index <= last:
            return index
        try:
            self.timestamp(index)
        except OverflowError:
            edge = f"after {datetime.max.year}-12-31, the last" if index > 0 else "before 0001-01-01, the first"
            raise OutOfRange(f"{field} index {index} falls {edge} time a tensor can hold") from None
        return index

    def timestamp(self, index: int) -> datetime:
        """The UTC start of step ``index``; OverflowError outside the years 1..9999."""
        if self._local is None:
            return self.origin + timedelta(seconds=self.step_seconds * index)
        zone, wall = self._local
        # A wall time the clocks skip (fold 0) is read with the offset before the change: the instant they jump.
        return (wall + timedelta(seconds=self.step_seconds * index)).replace(tzinfo=zone).astimezone(UTC)

    def timestamps(self, indices: np.ndarray) -> np.ndarray:
        """datetime64[us] (UTC, zone dropped) of many indices at once."""
        if self._local is None:
            base = np.datetime64(self.origin.replace(tzinfo=None), "us")
            return base + indices.astype("int64") * np.timedelta64(self.step_us, "us")
        distinct, at = np.unique(indices.astype("int64"), return_inverse=True)  # a long frame repeats few steps
        starts = [self.timestamp(i).replace(tzinfo=None) for i in distinct.tolist()]
        return np.array(starts, dtype="datetime64[us]").reshape(-1)[at.reshape(indices.shape)]


@functools.lru_cache(maxsize=4096)
def grid_of(origin: datetime, step_seconds: int, zone: str = "UTC") -> TimeGrid:
    """The grid of this origin, step and zone, one object for all who ask (a tensor's reads): what it works out at
    first use, its zone's clock and the indices sure to name a timestamp, is then worked out once, not every read.
    For origins in UTC, as tensors hold them: an equal instant in another zone would get the UTC one's grid."""
    return TimeGrid(origin, step_seconds, zone)


def default_origin(now: datetime, step_seconds: int, zone: str = "UTC", anchor: datetime | None = None) -> datetime:
    """The start of the step holding ``now`` on a schema's grid: from ``anchor`` (the schema's origin) or else
    ``GRID_EPOCH`` in ``zone``. Tensors of one schema created on different days then share one grid."""
    start = anchor or GRID_EPOCH.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    grid = TimeGrid(start, step_seconds, zone)
    return grid.timestamp(grid.step_of(as_utc(now)))


def wall_us(when: datetime, zone: str) -> int:
    """Microseconds since the epoch of ``when``'s local wall-clock time in ``zone``: on a calendar grid the steps
    are equally long in wall-clock time, so tensors of one zone line up on it (see insights)."""
    local = as_utc(when) if zone == "UTC" else when.astimezone(ZoneInfo(zone)).replace(tzinfo=UTC)
    return (local - EPOCH) // _US


def from_wall_us(us: int, zone: str) -> datetime:
    """The UTC instant of a local wall-clock time given as ``wall_us`` gives it."""
    wall = EPOCH + timedelta(microseconds=us)
    return wall if zone == "UTC" else wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def check_index(index: int, field: str = "time") -> int:
    if not MIN_TIME_INDEX <= index <= MAX_TIME_INDEX:
        raise _outside(field, shown(index))
    return index


def _integer(text: str, field: str) -> int:
    """``int(text)`` of an index that may be as long as a request: past MAX_TIME_INDEX's digits it is out of
    range whatever it says, and int() of over 4300 digits raises a bare ValueError."""
    text = text.strip()
    _refuse_a_date(text, field)
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > _INDEX_DIGITS:
        raise _outside(field, shown(text))
    return -int(digits or "0") if text.startswith("-") else int(digits or "0")


def _refuse_a_date(text: str, field: str) -> None:
    """Eight digits that name a day are also ISO 8601's compact date (YYYYMMDD): which one is meant cannot be
    told, and taking the index would store the value ages away from the date, so neither is taken."""
    if len(text) != 8 or not text.isdigit():
        return
    try:
        day = date.fromisoformat(text).isoformat()
    except ValueError:
        return
    raise InvalidInput(
        f"{field} '{text}' could be time index {int(text):,} or the date {day}; send a number for an index "
        f"(in a query, the index's timestamp) or {day} for the date",
        code="ambiguous_time",
    )


def _outside(field: str, index: str) -> OutOfRange:
    return OutOfRange(
        f"{field} index {index} is out of range: a tensor's time indices run from {MIN_TIME_INDEX:,} to "
        f"{MAX_TIME_INDEX:,}"
    )


def shown(value: object) -> str:
    """``value`` for a message: short, and never a crash (repr of an int over 4300 digits raises)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}<a number of about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = reprlib.repr(value)  # a string in quotes, so an empty one still shows
    return text if len(text) <= 40 else f"{text[:37]}..."


def parse_timestamp(text: str, field: str = "time") -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field} '{text[:64]}' is neither a time index nor an ISO 8601 timestamp (e.g. 2026-01-05T08:00:00Z)",
            code="not_a_time",
        ) from None
    return as_utc(parsed, field)


def as_utc(when: datetime, field: str = "time") -> datetime:
    """``when`` in UTC (a naive time is taken as UTC); 422 if UTC would leave the years 1..9999."""
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(f"{field} {when.isoformat()} is outside the years 1..9999 once converted to UTC") from None


def to_us(when: datetime, field: str = "time") -> int:
    """Microseconds since the epoch, in integer arithmetic (``timestamp()`` would go through a float)."""
    return (as_utc(when, field) - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)
