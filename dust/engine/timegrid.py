"""The time axis of a tensor: index ``i`` is ``origin + i × step``; a timestamp maps to the step containing it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from dust.core.errors import InvalidInput, OutOfRange

MAX_TIME_INDEX = 100_000_000
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class TimeGrid:
    origin: datetime
    step_seconds: int

    @property
    def step_us(self) -> int:
        return self.step_seconds * 1_000_000

    def index(self, when: int | str | datetime, field: str = "time") -> int:
        """A time index from an index or an ISO 8601 timestamp (floored onto the grid)."""
        if isinstance(when, bool):
            raise InvalidInput(f"{field} must be a time index or an ISO 8601 timestamp, not {when!r}")
        if isinstance(when, int):
            return check_index(when, field)
        if isinstance(when, float) and when.is_integer():
            return check_index(int(when), field)
        if isinstance(when, str) and when.strip().lstrip("-").isdigit():
            return check_index(int(when), field)
        if isinstance(when, str):
            when = parse_timestamp(when, field)
        if not isinstance(when, datetime):
            raise InvalidInput(f"{field} must be a time index or an ISO 8601 timestamp, not {when!r}")
        offset_us = (as_utc(when) - self.origin) // _US
        if offset_us < 0:
            raise OutOfRange(f"{field} {when.isoformat()} is before the tensor's origin {self.origin.isoformat()}")
        return check_index(offset_us // self.step_us, field)

    def timestamp(self, index: int) -> datetime:
        return self.origin + timedelta(seconds=self.step_seconds * index)

    def timestamps(self, indices: np.ndarray) -> np.ndarray:
        """datetime64[us] (UTC, zone dropped) of many indices at once."""
        base = np.datetime64(self.origin.replace(tzinfo=None), "us")
        return base + indices.astype("int64") * np.timedelta64(self.step_us, "us")


def check_index(index: int, field: str = "time") -> int:
    if not 0 <= index <= MAX_TIME_INDEX:
        raise OutOfRange(f"{field} index {index} is outside 0..{MAX_TIME_INDEX}, the time indices a tensor holds")
    return index


def parse_timestamp(text: str, field: str = "time") -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise InvalidInput(
            f"{field} '{text[:64]}' is neither a time index nor an ISO 8601 timestamp (e.g. 2026-01-05T08:00:00Z)"
        ) from None


def as_utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def floor_to(when: datetime, step_seconds: int) -> datetime:
    """``when`` floored to a multiple of ``step_seconds`` since the epoch (a week floors to a day)."""
    unit = min(step_seconds, 86400)
    epoch = int(as_utc(when).timestamp())
    return datetime.fromtimestamp(epoch - epoch % unit, UTC)
