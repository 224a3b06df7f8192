"""Date ranges and buckets in odd zones, checked against instants worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from query_service import timerange
from query_service.spec import TimeRange


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("zone", "day", "start", "end"),
    [
        ("Asia/Kolkata", date(2024, 3, 10), utc(2024, 3, 9, 18, 30), utc(2024, 3, 10, 18, 30)),
        ("Asia/Kathmandu", date(2024, 3, 10), utc(2024, 3, 9, 18, 15), utc(2024, 3, 10, 18, 15)),
        ("America/New_York", date(2024, 3, 10), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4)),  # 23 hours
        ("America/New_York", date(2024, 11, 3), utc(2024, 11, 3, 4), utc(2024, 11, 4, 5)),  # 25 hours
        ("Australia/Lord_Howe", date(2024, 4, 7), utc(2024, 4, 6, 13), utc(2024, 4, 7, 13, 30)),  # 24.5 hours
        # Havana moves its clocks at midnight: 2024-03-10 starts at 01:00 daylight time.
        ("America/Havana", date(2024, 3, 10), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4)),
    ],
)
def test_a_day_is_the_sites_day(zone: str, day: date, start: datetime, end: datetime) -> None:
    span = timerange.days(day, day, ZoneInfo(zone))
    assert (span.start, span.end) == (start, end)


def test_named_periods() -> None:
    zone = ZoneInfo("UTC")
    today = date(2024, 2, 29)
    first = date(2023, 6, 5)
    expected = {
        "day": (date(2024, 2, 29), date(2024, 2, 29)),
        "7d": (date(2024, 2, 23), date(2024, 2, 29)),
        "28d": (date(2024, 2, 2), date(2024, 2, 29)),
        "30d": (date(2024, 1, 31), date(2024, 2, 29)),
        "91d": (date(2023, 12, 1), date(2024, 2, 29)),
        "month": (date(2024, 2, 1), date(2024, 2, 29)),
        "6mo": (date(2023, 9, 1), date(2024, 2, 29)),
        "12mo": (date(2023, 3, 1), date(2024, 2, 29)),
        "year": (date(2024, 1, 1), date(2024, 12, 31)),
        "all": (first, date(2024, 2, 29)),
    }
    for name, (start, end) in expected.items():
        span = timerange.period(name, today, zone, first)
        assert (span.first_day, span.last_day) == (start, end), name
    with pytest.raises(timerange.RangeError, match="'5d'"):
        timerange.period("5d", today, zone, first)


def test_comparison_periods() -> None:
    zone = ZoneInfo("Europe/Berlin")
    span = timerange.days(date(2024, 2, 28), date(2024, 3, 1), zone)
    before = timerange.previous_period(span, zone)
    assert (before.first_day, before.last_day) == (date(2024, 2, 25), date(2024, 2, 27))
    year = timerange.year_over_year(span, zone)
    assert (year.first_day, year.last_day) == (date(2023, 2, 28), date(2023, 3, 1))
    leap = timerange.year_over_year(timerange.days(date(2024, 2, 29), date(2024, 2, 29), zone), zone)
    assert leap.first_day == date(2023, 2, 28)
    instants = TimeRange(utc(2024, 3, 10, 12), utc(2024, 3, 10, 18))
    assert timerange.previous_period(instants, zone) == TimeRange(utc(2024, 3, 10, 6), utc(2024, 3, 10, 12))


def test_bounds_take_dates_or_date_times() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    naive = timerange.bounds("2024-03-10T10:00:00", "2024-03-10T11:00:00", zone)
    assert naive.start == utc(2024, 3, 10, 4, 30)
    assert naive.end == utc(2024, 3, 10, 5, 30, 0, 1)  # the end is inclusive
    offset = timerange.bounds("2024-03-10T10:00:00+02:00", "2024-03-10T10:00:00Z", zone)
    assert (offset.start, offset.first_day) == (utc(2024, 3, 10, 8), None)
    for start, end, text in [
        ("2024-03-10", "2024-03-10T10:00:00", "both be dates"),
        ("2024-03-11", "2024-03-10", "before"),
        ("yesterday", "today", "'yesterday'"),
        ("0001-01-01T00:00:00+01:00", "2024-03-10T00:00:00", "out of range"),
    ]:
        with pytest.raises(timerange.RangeError, match=text):
            timerange.bounds(start, end, zone)


def test_hour_labels_repeat_no_hour_and_skip_the_missing_one() -> None:
    new_york = ZoneInfo("America/New_York")
    fall = timerange.labels(timerange.days(date(2024, 11, 3), date(2024, 11, 3), new_york), new_york, "hour")
    assert len(fall) == 24 and fall.count("2024-11-03 01:00:00") == 1
    spring = timerange.labels(
        timerange.days(date(2024, 3, 10), date(2024, 3, 10), new_york), new_york, "hour"
    )
    assert len(spring) == 23 and "2024-03-10 02:00:00" not in spring
    kathmandu = ZoneInfo("Asia/Kathmandu")
    day = timerange.labels(timerange.days(date(2024, 3, 10), date(2024, 3, 10), kathmandu), kathmandu, "hour")
    assert day[0] == "2024-03-10 00:00:00" and len(day) == 24
    weeks = timerange.labels(
        timerange.days(date(2024, 2, 1), date(2024, 2, 29), kathmandu), kathmandu, "week"
    )
    assert weeks == ["2024-01-29", "2024-02-05", "2024-02-12", "2024-02-19", "2024-02-26"]
    assert timerange.auto_bucket(timerange.days(date(2024, 1, 1), date(2024, 1, 2), kathmandu)) == "hour"
    assert timerange.auto_bucket(timerange.days(date(2024, 1, 1), date(2024, 3, 31), kathmandu)) == "week"
