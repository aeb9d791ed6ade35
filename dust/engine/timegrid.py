"""The time axis of a tensor: index ``i`` is ``origin + i × step``; a timestamp maps to the step containing it."""

from __future__ import annotations

import numbers
import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from dust.core.errors import InvalidInput, OutOfRange

MAX_TIME_INDEX = 100_000_000
_US = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
_INDEX = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)
_INDEX_DIGITS = len(str(MAX_TIME_INDEX))


@dataclass(frozen=True)
class TimeGrid:
    origin: datetime
    step_seconds: int

    @property
    def step_us(self) -> int:
        return self.step_seconds * 1_000_000

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
        offset_us = (as_utc(when, field) - self.origin) // _US
        if offset_us < 0:
            raise OutOfRange(f"{field} {when.isoformat()} is before the tensor's origin {self.origin.isoformat()}")
        return self.check(offset_us // self.step_us, field)

    def check(self, index: int, field: str = "time") -> int:
        """``index`` if it is a time index this grid can hold and name as a timestamp (up to year 9999)."""
        check_index(index, field)
        try:
            self.timestamp(index)
        except OverflowError:
            raise OutOfRange(
                f"{field} index {index} falls after {datetime.max.year}-12-31, the last time a tensor can hold"
            ) from None
        return index

    def timestamp(self, index: int) -> datetime:
        return self.origin + timedelta(seconds=self.step_seconds * index)

    def timestamps(self, indices: np.ndarray) -> np.ndarray:
        """datetime64[us] (UTC, zone dropped) of many indices at once."""
        base = np.datetime64(self.origin.replace(tzinfo=None), "us")
        return base + indices.astype("int64") * np.timedelta64(self.step_us, "us")


def check_index(index: int, field: str = "time") -> int:
    if not 0 <= index <= MAX_TIME_INDEX:
        raise _outside(field, shown(index))
    return index


def _integer(text: str, field: str) -> int:
    """``int(text)`` of an index that may be as long as a request: past MAX_TIME_INDEX's digits it is out of
    range whatever it says, and int() of over 4300 digits raises a bare ValueError."""
    text = text.strip()
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > _INDEX_DIGITS:
        raise _outside(field, shown(text))
    return -int(digits or "0") if text.startswith("-") else int(digits or "0")


def _outside(field: str, index: str) -> OutOfRange:
    return OutOfRange(
        f"{field} index {index} is out of range: a tensor's time indices run from 0 to {MAX_TIME_INDEX:,}"
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


def floor_to(when: datetime, step_seconds: int) -> datetime:
    """``when`` floored to a multiple of ``step_seconds`` since the epoch (a week floors to a day)."""
    unit = min(step_seconds, 86400)
    epoch = int(as_utc(when).timestamp())
    return datetime.fromtimestamp(epoch - epoch % unit, UTC)
