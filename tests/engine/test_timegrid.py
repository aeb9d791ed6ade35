"""The time grid: indices and timestamps onto a tensor's steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from dust.core.errors import InvalidInput, OutOfRange
from dust.engine.timegrid import (
    MAX_TIME_INDEX,
    MIN_TIME_INDEX,
    TimeGrid,
    as_utc,
    default_origin,
    from_us,
    parse_timestamp,
    to_us,
)

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
        (-1, -1),  # before the origin: backfill
        ("-2", -2),
        ("2025-12-31T23:59:59Z", -1),
        (MIN_TIME_INDEX // 1000, MIN_TIME_INDEX // 1000),
        ("1234567", 1_234_567),
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
        (MIN_TIME_INDEX - 1, OutOfRange, f"{MIN_TIME_INDEX - 1} is out of range"),
        (MIN_TIME_INDEX, OutOfRange, "before 0001-01-01"),  # a hundred million days before 2026
        (MAX_TIME_INDEX + 1, OutOfRange, f"{MAX_TIME_INDEX + 1} is out of range"),
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
        ("9" * 5000, OutOfRange, "run from -100,000,000 to 100,000,000"),
        ("-" + "9" * 5000, OutOfRange, "run from -100,000,000 to 100,000,000"),
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


def test_default_origins_sit_on_one_grid_per_step() -> None:
    when = datetime(2026, 1, 8, 8, 47, 12, tzinfo=UTC)  # a Thursday
    assert default_origin(when, 3600) == datetime(2026, 1, 8, 8, tzinfo=UTC)
    assert default_origin(when, 300) == datetime(2026, 1, 8, 8, 45, tzinfo=UTC)
    assert default_origin(when, 86400) == datetime(2026, 1, 8, tzinfo=UTC)
    assert default_origin(when, 7 * 86400) == datetime(2026, 1, 5, tzinfo=UTC)  # weeks start on Mondays
    assert default_origin(when, 2 * 86400) == datetime(2026, 1, 8, tzinfo=UTC)  # 9,502 days after 2000-01-03
    # Tensors of a weekly schema created on different days of one week get the same origin.
    week = {default_origin(when + timedelta(days=d, hours=h), 7 * 86400) for d in range(-3, 4) for h in (0, 15)}
    assert week == {datetime(2026, 1, 5, tzinfo=UTC)}
    # In a zone, the start of the local day or week: Monday 5 January, 00:00 in Berlin.
    assert default_origin(when, 7 * 86400, "Europe/Berlin") == datetime(2026, 1, 4, 23, tzinfo=UTC)
    assert default_origin(when, 86400, "America/New_York") == datetime(2026, 1, 8, 5, tzinfo=UTC)
    anchor = datetime(2026, 1, 1, 6, tzinfo=UTC)  # a schema's origin is the grid instead
    assert default_origin(when, 86400, anchor=anchor) == datetime(2026, 1, 8, 6, tzinfo=UTC)


PER_SECOND = TimeGrid(ORIGIN, 1)


@pytest.mark.parametrize("text", ["20260105", " 20260105 ", "19991231"])
def test_eight_digits_that_name_a_day_are_refused_naming_both_readings(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        PER_SECOND.index(text)
    digits = text.strip()
    day = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    assert caught.value.code == "ambiguous_time"
    assert f"could be time index {int(digits):,} or the date {day}" in caught.value.detail
    assert f"an index (in a query, the index's timestamp) or {day} for the date" in caught.value.detail


@pytest.mark.parametrize(
    ("when", "index"),
    [
        (20260105, 20_260_105),  # a number is an index
        ("2026-01-05", 4 * 86400),  # a date with dashes is a date
        ("99999999", 99_999_999),  # eight digits that name no day are an index
        ("20261301", 20_261_301),
        ("-20260105", -20_260_105),
        ("2026010", 2_026_010),  # seven digits are never a date here
        ("000003", 3),
    ],
)
def test_digits_are_an_index_where_no_date_reads_the_same(when: object, index: int) -> None:
    assert PER_SECOND.index(when) == index


# (zone, the local day clocks spring forward, the local day they fall back) in 2025
CHANGES = [("Europe/Berlin", 30, 3, 26, 10), ("America/New_York", 9, 3, 2, 11)]


def local_grid(zone: str, step_days: int = 1) -> TimeGrid:
    """A grid of local days (or ``step_days``) from local midnight of 1 January 2025 in ``zone``."""
    return TimeGrid(datetime(2025, 1, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC), step_days * 86400, zone)


def local(zone: str, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, fold=fold, tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(("zone", "spring_day", "spring_month", "fall_day", "fall_month"), CHANGES)
def test_a_local_day_is_23_or_25_hours_when_the_clocks_change(
    zone: str, spring_day: int, spring_month: int, fall_day: int, fall_month: int
) -> None:
    grid = local_grid(zone)
    spring = grid.index(local(zone, spring_month, spring_day))
    fall = grid.index(local(zone, fall_month, fall_day))
    length = [grid.timestamp(i + 1) - grid.timestamp(i) for i in (spring - 1, spring, fall - 1, fall)]
    assert length == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)]
    # Every step starts at local midnight, whatever the offset that day.
    for i in range(-40, 400):
        start = grid.timestamp(i).astimezone(ZoneInfo(zone))
        assert (start.hour, start.minute) == (0, 0)
        assert start.date() == datetime(2025, 1, 1).date() + timedelta(days=i)


@pytest.mark.parametrize(("zone", "spring_day", "spring_month", "fall_day", "fall_month"), CHANGES)
def test_local_times_land_on_their_local_day_across_both_changes(
    zone: str, spring_day: int, spring_month: int, fall_day: int, fall_month: int
) -> None:
    grid = local_grid(zone)
    spring = (datetime(2025, spring_month, spring_day) - datetime(2025, 1, 1)).days
    fall = (datetime(2025, fall_month, fall_day) - datetime(2025, 1, 1)).days
    at = {
        local(zone, spring_month, spring_day, 0, 30): spring,  # 00:30 on the short day: that day, not the one before
        local(zone, spring_month, spring_day, 23, 59): spring,
        local(zone, spring_month, spring_day - 1, 23, 59): spring - 1,
        local(zone, fall_month, fall_day, 0, 30): fall,
        local(zone, fall_month, fall_day, 1, 30, fold=0): fall,  # the repeated hour, both times
        local(zone, fall_month, fall_day, 1, 30, fold=1): fall,
        local(zone, fall_month, fall_day, 23, 59): fall,
        local(zone, fall_month, fall_day + 1, 0, 0): fall + 1,
    }
    assert {when: grid.index(when) for when in at} == at
    assert grid.index(local(zone, spring_month, spring_day, 0, 30).isoformat()) == spring  # as text with its offset


def test_half_past_midnight_on_30_march_2025_in_berlin_is_30_march() -> None:
    grid = TimeGrid(datetime(2025, 3, 1, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC), 86400, "Europe/Berlin")
    assert grid.index("2025-03-29T23:30:00Z") == 29  # 00:30 CET on 30 March: index 29 is 30 March
    assert grid.timestamp(29) == datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert grid.timestamp(30) == datetime(2025, 3, 30, 22, tzinfo=UTC)  # 31 March starts at 00:00 CEST
    assert DAILY.index("2026-03-29T23:30:00Z") == 87  # in UTC the same instant is still 29 March


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
@pytest.mark.parametrize("step_days", [1, 7, 3])
def test_index_timestamp_index_round_trips(zone: str, step_days: int) -> None:
    grid = local_grid(zone, step_days)
    indices = np.arange(-400, 800)
    starts = grid.timestamps(indices)
    for i, start in zip(indices.tolist(), starts, strict=True):
        when = grid.timestamp(i)
        assert np.datetime64(when.replace(tzinfo=None), "us") == start
        assert grid.index(when) == i
        assert grid.index(when - timedelta(microseconds=1)) == i - 1
        assert grid.index(grid.timestamp(i + 1) - timedelta(microseconds=1)) == i


def test_a_week_across_a_change_of_the_clocks_is_a_local_week() -> None:
    grid = TimeGrid(datetime(2025, 3, 24, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC), 7 * 86400, "Europe/Berlin")
    assert grid.timestamp(1) - grid.timestamp(0) == timedelta(days=7, hours=-1)
    assert grid.index(datetime(2025, 3, 31, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))) == 1
    assert grid.index(datetime(2025, 3, 30, 23, 30, tzinfo=ZoneInfo("Europe/Berlin"))) == 0


def test_local_midnight_that_the_clocks_skip_starts_the_day_when_they_jump() -> None:
    # In Santiago clocks jumped from 00:00 to 01:00 on 7 September 2025: that day starts at 01:00.
    zone = "America/Santiago"
    grid = TimeGrid(datetime(2025, 9, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC), 86400, zone)
    assert grid.timestamp(6).astimezone(ZoneInfo(zone)).replace(tzinfo=None) == datetime(2025, 9, 7, 1)
    assert grid.index(grid.timestamp(6)) == 6
    assert grid.index(grid.timestamp(6) - timedelta(microseconds=1)) == 5


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/St_Johns"])
@pytest.mark.parametrize("step_seconds", [1, 3_600, 86_400, 7 * 86_400])
@pytest.mark.parametrize("origin", [datetime(1, 1, 8, tzinfo=UTC), datetime(9999, 12, 20, tzinfo=UTC)])
def test_an_index_is_refused_exactly_when_its_step_falls_outside_the_years_1_to_9999(
    zone: str, step_seconds: int, origin: datetime
) -> None:
    """check() names a timestamp only within two days of the edges (the rest surely has one): around each edge,
    and two days in from it, it refuses exactly the indices whose start the calendar cannot hold, in any zone."""
    grid = TimeGrid(origin, step_seconds, zone)
    step = timedelta(seconds=step_seconds)
    two_days = 2 * 86_400 // step_seconds + 1
    edges = [(datetime.min.replace(tzinfo=UTC) - origin) // step, (datetime.max.replace(tzinfo=UTC) - origin) // step]
    near = [e + inward for e, sign in zip(edges, (1, -1), strict=True) for inward in (0, sign * two_days)]
    around = [i for e in near for i in range(e - 400, e + 400) if abs(i) <= MAX_TIME_INDEX]
    for index in around:
        try:
            grid.timestamp(index)
        except OverflowError:
            with pytest.raises(OutOfRange, match="falls"):
                grid.check(index)
        else:
            assert grid.check(index) == index
