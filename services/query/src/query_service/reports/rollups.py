"""Totals and time series from the processor's rollups instead of raw rows, wherever they are exact.

The rollups (relations.EVENT_COUNTS, VISIT_COUNTS, VISITOR_DAYS) hold page views and events per
15-minute UTC bucket, visits by the 15-minute bucket they start in, and one row per visitor and UTC
day with the day's first and last event time. They answer a query without filter whose dimensions
are time buckets only, when:

- every boundary of the range, and of its time buckets, falls on a 15-minute boundary, so each
  bucket of the rollups belongs to exactly one group (every current UTC offset is a multiple of
  15 minutes; a custom range ending at 10:07 does not qualify);
- for visitors: no UTC day is cut into more than two parts by the range's ends and the bucket
  boundaries. A visitor had events in a part of their day exactly when the day's first or last
  event lies in it (with two parts the first and the last event pick them both), so distinct ids
  over the rows' first and last times, each labelled with its bucket, are exact. Hourly buckets cut
  a day into 24 parts: visitors per hour come from raw rows.

Everything else (filters, breakdowns by page, source, …, percentage) reads raw rows (reports.stats).
The answers are the same either way; tests compare both with the reference implementation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg import sql

from query_service import relations
from query_service.reports import grouping
from query_service.spec import Bucket, StatsQuery, TimeRange, is_time_dimension

METRICS = frozenset(
    {"visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"}
)
_EVENT_METRICS = frozenset({"pageviews", "events"})
_VISIT_METRICS = frozenset({"visits", "views_per_visit", "bounce_rate", "visit_duration"})
_QUARTER = timedelta(minutes=15)
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _floor(at: datetime, width: timedelta) -> datetime:
    return _EPOCH + ((at - _EPOCH) // width) * width


def _aligned(at: datetime) -> bool:
    return _floor(at, _QUARTER) == at


def _label(at: datetime, zone: ZoneInfo, bucket: Bucket) -> tuple[int, ...]:
    """What the bucket label depends on: the local hour, day, week or month."""
    here = at.astimezone(zone)
    if bucket == "hour":
        return (here.year, here.month, here.day, here.hour)
    if bucket == "day":
        return (here.year, here.month, here.day)
    if bucket == "week":
        return here.date().isocalendar()[:2]
    return (here.year, here.month)


def _cuts(day: datetime, zone: ZoneInfo, bucket: Bucket | None) -> set[datetime] | None:
    """The instants inside the UTC day where the bucket label changes; None when one falls off a
    15-minute boundary (no offset change inside the day is the common case and costs two look-ups)."""
    end = day + _DAY
    before = day.astimezone(zone).utcoffset()
    after = (end - timedelta(microseconds=1)).astimezone(zone).utcoffset()
    if before is None or after is None:
        return None
    if before == after:
        if before % _QUARTER:
            return None
        if bucket is None:
            return set()
        if bucket == "hour":
            return {day + _QUARTER * i for i in range(1, 96) if _aligned_hour(day + _QUARTER * i, before)}
        local = (day + before).replace(tzinfo=None)
        midnight = datetime(local.year, local.month, local.day) + _DAY
        cut = midnight.replace(tzinfo=UTC) - before
        changes = day < cut < end and _label(cut - _QUARTER, zone, bucket) != _label(cut, zone, bucket)
        return {cut} if changes else set()
    # An offset change inside the day: every quarter must keep one offset and one label.
    cuts: set[datetime] = set()
    at = day
    while at < end:
        last = at + _QUARTER - timedelta(microseconds=1)
        if at.astimezone(zone).utcoffset() != last.astimezone(zone).utcoffset():
            return None
        if (
            bucket is not None
            and at > day
            and _label(at - _QUARTER, zone, bucket) != _label(at, zone, bucket)
        ):
            cuts.add(at)
        at += _QUARTER
    return cuts


def _aligned_hour(at: datetime, offset: timedelta) -> bool:
    return (at + offset) == _floor(at + offset, timedelta(hours=1))


def _usable(query: StatsQuery, span: TimeRange, visitors: bool) -> bool:
    if not (_aligned(span.start) and _aligned(span.end)):
        return False
    zone = ZoneInfo(query.timezone)
    day = _floor(span.start, _DAY)
    while day < span.end:
        cuts = _cuts(day, zone, query.bucket)
        if cuts is None:
            return False
        if visitors:
            parts = cuts | {edge for edge in (span.start, span.end) if day < edge < day + _DAY}
            if len(parts) > 1:
                return False
        day += _DAY
    return True


def statement(
    query: StatsQuery,
    span: TimeRange,
    labels: list[str] | None,
    paginate: bool,
    *,
    count_only: bool = False,
) -> tuple[sql.Composed, dict[str, object]] | None:
    """The grouped statement over the rollups and its extra parameters, or None when they cannot
    answer exactly. Parameters shared with reports.stats: site, start, end, tz, limit, offset."""
    if query.filter is not None or not all(is_time_dimension(d) for d in query.dimensions):
        return None
    wanted = set(query.metrics) | {key.field for key in query.order_by if key.field not in query.dimensions}
    if not wanted <= METRICS:
        return None
    visitors = "visitors" in wanted
    if not _usable(query, span, visitors):
        return None
    timed = bool(query.dimensions)

    def label(column: str) -> sql.Composable:
        assert query.bucket is not None
        return grouping.bucket_label(sql.SQL(column), query.bucket, sql.Placeholder("tz"))

    group = sql.SQL(" GROUP BY d0") if timed else sql.SQL("")
    ctes: list[tuple[str, sql.Composable]] = []
    if visitors:
        if timed:
            body = sql.SQL(
                "SELECT d0, count(*) AS visitors FROM (SELECT DISTINCT {} AS d0, v.visitor_id FROM {} v"
                " CROSS JOIN LATERAL (VALUES (v.first_at), (v.last_at)) AS t(at)"
                " WHERE v.site_id = %(site)s AND v.day >= %(first_day)s AND v.day < %(end)s"
                " AND t.at >= %(start)s AND t.at < %(end)s) x GROUP BY d0"
            ).format(label("t.at"), relations.VISITOR_DAYS)
        else:
            body = sql.SQL(
                "SELECT count(*) AS visitors FROM (SELECT DISTINCT visitor_id FROM {}"
                " WHERE site_id = %(site)s AND day >= %(first_day)s AND day < %(end)s"
                " AND last_at >= %(start)s AND first_at < %(end)s) x"
            ).format(relations.VISITOR_DAYS)
        ctes.append(("vis", body))
    if wanted & _EVENT_METRICS:
        ctes.append(
            (
                "ev",
                sql.SQL(
                    "SELECT {}sum(pageviews) AS pageviews, sum(events) AS events FROM {}"
                    " WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s{}"
                ).format(
                    sql.SQL("{} AS d0, ").format(label("bucket")) if timed else sql.SQL(""),
                    relations.EVENT_COUNTS,
                    group,
                ),
            )
        )
    if wanted & _VISIT_METRICS:
        ctes.append(
            (
                "ss",
                sql.SQL(
                    "SELECT {}sum(visits) AS visits, sum(bounces) AS bounces,"
                    " sum(visit_pageviews) AS visit_pageviews,"
                    " extract(epoch FROM sum(duration)) AS duration FROM {}"
                    " WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s{}"
                ).format(
                    sql.SQL("{} AS d0, ").format(label("bucket")) if timed else sql.SQL(""),
                    relations.VISIT_COUNTS,
                    group,
                ),
            )
        )
    joined, columns = _combined(ctes, timed)
    parts: list[sql.Composable] = [
        sql.SQL("{} AS ({})").format(sql.Identifier(name), body) for name, body in ctes
    ]
    parts.append(sql.SQL("grouped AS (SELECT {} FROM {})").format(columns, joined))
    statement = grouping.finish(query, parts, labels, paginate, count_only=count_only)
    return statement, {"first_day": _floor(span.start, _DAY)}


def _combined(ctes: list[tuple[str, sql.Composable]], timed: bool) -> tuple[sql.Composable, sql.Composable]:
    """The FROM joining the parts on their bucket label, and the columns of every Raw field."""
    names = [name for name, _ in ctes]
    owner = {"visitors": "vis", "pageviews": "ev", "events": "ev"}
    columns: list[sql.Composable] = []
    if timed:
        labels = sql.SQL(", ").join(sql.SQL("{}.d0").format(sql.Identifier(name)) for name in names)
        columns.append(sql.SQL("coalesce({}) AS d0").format(labels))
    for column in grouping.RAW_COLUMNS:
        source = owner.get(column, "ss")
        value = (
            sql.SQL("coalesce({}.{}, 0)").format(sql.Identifier(source), sql.Identifier(column))
            if source in names
            else sql.SQL("0")
        )
        columns.append(sql.SQL("{} AS {}").format(value, sql.Identifier(column)))
    joined: sql.Composable = sql.Identifier(names[0])
    for index, name in enumerate(names[1:], start=1):
        if timed:
            earlier = sql.SQL(", ").join(sql.SQL("{}.d0").format(sql.Identifier(n)) for n in names[:index])
            joined = sql.SQL("{} FULL JOIN {} ON {}.d0 = coalesce({})").format(
                joined, sql.Identifier(name), sql.Identifier(name), earlier
            )
        else:
            joined = sql.SQL("{} CROSS JOIN {}").format(joined, sql.Identifier(name))
    return joined, sql.SQL(", ").join(columns)
