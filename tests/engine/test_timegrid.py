"""The time grid: indices and timestamps onto a tensor's steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from dust.core.errors import InvalidInput, OutOfRange
from dust.engine.timegrid import MAX_TIME_INDEX, TimeGrid, as_utc, floor_to, from_us, parse_timestamp, to_us

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)
DAILY = TimeGrid(ORIGIN, 86400)


@pytest.mark.parametrize(
    ("when", "index"),
    [
        (3, 3),
        (np.int32(3), 3),
        (3.0, 3),
        ("3", 3),
        (" 3 ", 3),
        ("2026-01-05T08:00:00Z", 4),  # floored onto the step containing it
        ("2026-01-05", 4),
        ("2026-01-05T08:00:00", 4),  # no zone: UTC
        ("2026-01-05T01:00:00+02:00", 3),  # 23:00 UTC on the 4th
        (datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=UTC), 0),
        (datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=-5))), 1),
    ],
)
def test_index_of_an_index_or_a_timestamp(when: object, index: int) -> None:
    assert DAILY.index(when) == index


def test_steps_of_several_units() -> None:
    six_hours = TimeGrid(ORIGIN, 6 * 3600)
    assert six_hours.index("2026-01-01T13:00:00Z") == 2
    assert six_hours.timestamp(2) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    weekly = TimeGrid(ORIGIN, 7 * 86400)
    assert weekly.index("2026-01-14T23:00:00Z") == 1
    assert weekly.index("2026-01-15T00:00:00Z") == 2


@pytest.mark.parametrize(
    ("when", "error", "says"),
    [
        (-1, OutOfRange, "-1"),
        ("-2", OutOfRange, "-2"),
        (MAX_TIME_INDEX + 1, OutOfRange, f"{MAX_TIME_INDEX + 1} is out of range"),
        ("2025-12-31T23:59:59Z", OutOfRange, "before the tensor's origin"),
        (True, InvalidInput, "True"),
        (1.5, InvalidInput, "1.5"),
        (float("nan"), InvalidInput, "nan"),
        ("--3", InvalidInput, "--3"),
        ("²", InvalidInput, "ISO 8601"),
        ("3 days", InvalidInput, "ISO 8601"),
        ("", InvalidInput, "ISO 8601"),
        (None, InvalidInput, "None"),
        (5_000_000, OutOfRange, "9999"),  # five million days from 2026 is past year 9999
        ("9999-12-31T23:00:00-05:00", OutOfRange, "1..9999"),
        ("0001-01-01T00:00:00+01:00", OutOfRange, "1..9999"),
        # int() of over 4300 digits raises a bare ValueError, and so does formatting such an int for a message
        ("9" * 5000, OutOfRange, "run from 0 to 100,000,000"),
        ("-" + "9" * 5000, OutOfRange, "run from 0 to 100,000,000"),
        (" " + "1" + "0" * 9 + " ", OutOfRange, "1000000000"),
        pytest.param(10**5000, OutOfRange, "about 5001 digits", id="10**5000"),
        pytest.param(-(10**5000), OutOfRange, "about 5001 digits", id="-10**5000"),
        (1e300, OutOfRange, "about 301 digits"),
        ([[1]] * 5000, InvalidInput, "[[1], [1]"),
    ],
)
def test_bad_times_are_refused_with_the_reason(when: object, error: type[Exception], says: str) -> None:
    with pytest.raises(error) as caught:
        DAILY.index(when)
    assert says in str(caught.value)


@pytest.mark.parametrize(("text", "index"), [("0" * 5000 + "3", 3), ("-0", 0), ("0003", 3)])
def test_leading_zeros_do_not_count_as_digits(text: str, index: int) -> None:
    assert DAILY.index(text) == index


def test_the_field_name_is_in_the_message() -> None:
    with pytest.raises(InvalidInput, match=r"^from "):
        DAILY.index("soon", "from")


def test_timestamps_match_timestamp_one_by_one() -> None:
    grid = TimeGrid(datetime(2026, 3, 1, 12, 30, tzinfo=UTC), 900)
    indices = np.array([0, 1, 95, 1000])
    many = grid.timestamps(indices)
    assert [np.datetime64(grid.timestamp(int(i)).replace(tzinfo=None), "us") for i in indices] == list(many)


def test_as_utc_takes_naive_times_as_utc() -> None:
    assert as_utc(datetime(2026, 1, 1, 8)) == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert as_utc(datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=2)))).hour == 6


def test_microseconds_round_trip_exactly() -> None:
    # Write stamps are whole microseconds; as_of compares against them, so the conversion must be exact.
    when = datetime(2026, 5, 17, 9, 41, 3, 123457, tzinfo=UTC)
    assert from_us(to_us(when)) == when
    assert to_us(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1


def test_parse_timestamp_accepts_z_and_offsets() -> None:
    assert parse_timestamp("2026-01-05T08:00:00Z") == datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert parse_timestamp("2026-01-05T08:00:00+01:00") == datetime(2026, 1, 5, 7, tzinfo=UTC)


def test_floor_to_the_unit() -> None:
    when = datetime(2026, 1, 5, 8, 47, 12, tzinfo=UTC)
    assert floor_to(when, 3600) == datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert floor_to(when, 86400) == datetime(2026, 1, 5, tzinfo=UTC)
    assert floor_to(when, 7 * 86400) == datetime(2026, 1, 5, tzinfo=UTC)  # a week floors to the day
    assert floor_to(when, 300) == datetime(2026, 1, 5, 8, 45, tzinfo=UTC)
