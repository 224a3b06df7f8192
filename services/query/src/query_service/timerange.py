"""Date ranges and time buckets in a site's time zone (DST and 30/45-minute offsets included).

A range is resolved to UTC instants once, here; SQL only ever compares stored UTC times with those
instants, and turns UTC times into local buckets with the same tz database (AT TIME ZONE).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from query_service.spec import Bucket, TimeRange

PERIODS = ("day", "7d", "28d", "30d", "91d", "month", "6mo", "12mo", "year", "all")
_LAST_DAYS = {"7d": 7, "28d": 28, "30d": 30, "91d": 91}
_MONTHS_BACK = {"6mo": 5, "12mo": 11}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ONE_MICROSECOND = timedelta(microseconds=1)
# Bounds stored times can have, so ranges stay within what PostgreSQL and datetime represent.
_EARLIEST = date(1970, 1, 1)
_LATEST = date(9998, 12, 31)


class RangeError(ValueError):
    """A range or bound that cannot be used; the message says why and shows the value."""


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of a local day, in UTC. Where a DST gap skips midnight, zoneinfo reads
    the missing 00:00 with the offset before the gap, which is the instant the gap starts: the
    day's first instant all the same."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def days(first: date, last: date, zone: ZoneInfo) -> TimeRange:
    """Local days first..last, inclusive."""
    if last < first:
        raise RangeError(f"ends ({last}) before it starts ({first})")
    if first < _EARLIEST or last > _LATEST:
        raise RangeError(f"must lie between {_EARLIEST} and {_LATEST}")
    return TimeRange(day_start(first, zone), day_start(last + timedelta(days=1), zone), first, last)


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _month_end(day: date) -> date:
    return _month_start(day, -1) - timedelta(days=1)


def period(name: str, today: date, zone: ZoneInfo, first_day: date | None) -> TimeRange:
    """A named period relative to ``today`` (a local date); ``first_day`` is the site's first
    day with events, for "all" (today when it has none)."""
    if name == "day":
        return days(today, today, zone)
    if name in _LAST_DAYS:
        return days(today - timedelta(days=_LAST_DAYS[name] - 1), today, zone)
    if name == "month":
        return days(_month_start(today), _month_end(today), zone)
    if name in _MONTHS_BACK:
        return days(_month_start(today, _MONTHS_BACK[name]), _month_end(today), zone)
    if name == "year":
        return days(date(today.year, 1, 1), date(today.year, 12, 31), zone)
    if name == "all":
        return days(min(first_day or today, today), today, zone)
    raise RangeError(f"must be one of {', '.join(PERIODS)}, got {name[:40]!r}")


def parse_day(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise RangeError(f"must be a date as YYYY-MM-DD, got {text[:40]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RangeError(f"is not a valid date: {text[:40]!r}") from None


def _instant(text: str, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RangeError(f"must be a date or an ISO-8601 date-time, got {text[:60]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        raise RangeError(f"is out of range: {text[:60]!r}") from None
    if not _EARLIEST <= instant.date() <= _LATEST:
        raise RangeError(f"must lie between {_EARLIEST} and {_LATEST}, got {text[:60]!r}")
    return instant


def bounds(start: str, end: str, zone: ZoneInfo) -> TimeRange:
    """Explicit bounds: two dates (local days, inclusive) or two date-times (inclusive)."""
    start, end = start.strip(), end.strip()
    if _DATE.fullmatch(start) and _DATE.fullmatch(end):
        return days(parse_day(start), parse_day(end), zone)
    if _DATE.fullmatch(start) or _DATE.fullmatch(end):
        raise RangeError("start and end must both be dates or both be date-times")
    first, last = _instant(start, zone), _instant(end, zone)
    if last < first:
        raise RangeError(f"ends ({end[:40]}) before it starts ({start[:40]})")
    return TimeRange(first, last + _ONE_MICROSECOND)


def previous_period(current: TimeRange, zone: ZoneInfo) -> TimeRange:
    """As many days (or as long) right before the range."""
    if current.first_day is not None and current.last_day is not None:
        length = current.last_day - current.first_day + timedelta(days=1)
        return days(current.first_day - length, current.first_day - timedelta(days=1), zone)
    length_of = current.end - current.start
    return TimeRange(current.start - length_of, current.start)


def _year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def year_over_year(current: TimeRange, zone: ZoneInfo) -> TimeRange:
    """The same days (or local times) a year earlier."""
    if current.first_day is not None and current.last_day is not None:
        return days(_year_before(current.first_day), _year_before(current.last_day), zone)
    start, end = local(current.start, zone), local(current.end, zone)
    shifted = [
        datetime.combine(_year_before(at.date()), at.time(), tzinfo=zone).astimezone(UTC)
        for at in (start, end)
    ]
    return TimeRange(shifted[0], shifted[1])


def auto_bucket(current: TimeRange) -> Bucket:
    """The bucket of the plain ``time`` dimension: hours up to two days, days up to 40, weeks up
    to 92, months beyond."""
    span = current.end - current.start
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=40):
        return "day"
    if span <= timedelta(days=92):
        return "week"
    return "month"


def bucket_of(local: datetime, bucket: Bucket) -> datetime:
    """The start of the bucket holding a local (naive) time."""
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def label(bucket_start: datetime, bucket: Bucket) -> str:
    """How a bucket is named in answers: its local start."""
    if bucket == "hour":
        return bucket_start.strftime("%Y-%m-%d %H:00:00")
    return bucket_start.date().isoformat()


def local(instant: datetime, zone: ZoneInfo) -> datetime:
    """A UTC instant as the site's naive local time."""
    return instant.astimezone(zone).replace(tzinfo=None)


def labels(current: TimeRange, zone: ZoneInfo, bucket: Bucket) -> list[str]:
    """Every bucket of the range, in order, each once (a repeated local hour at the end of DST is
    one bucket; a skipped one has none)."""
    found: list[str] = []
    if bucket == "hour":
        # Steps of 15 minutes meet every local hour whatever the zone's offsets.
        step = timedelta(minutes=15)
        at = current.start.replace(second=0, microsecond=0)
        at -= timedelta(minutes=at.minute % 15)
        seen: set[str] = set()
        while at < current.end:
            if at + step > current.start:
                name = label(bucket_of(local(max(at, current.start), zone), "hour"), "hour")
                if name not in seen:
                    seen.add(name)
                    found.append(name)
            at += step
        return sorted(found)
    first = local(current.start, zone).date()
    last = local(current.end - _ONE_MICROSECOND, zone).date()
    day = first
    while day <= last:
        name = label(bucket_of(datetime.combine(day, time.min), bucket), bucket)
        if not found or found[-1] != name:
            found.append(name)
        day += timedelta(days=1)
    return found


def bucket_count(current: TimeRange, bucket: Bucket) -> int:
    """An upper bound of the number of buckets, to refuse label lists that would be huge."""
    span = current.end - current.start
    if bucket == "hour":
        return int(span / timedelta(hours=1)) + 2
    if bucket == "day":
        return span.days + 2
    if bucket == "week":
        return span.days // 7 + 2
    return span.days // 28 + 2
