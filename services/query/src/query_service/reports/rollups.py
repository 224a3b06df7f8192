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
  event lies in it (with two parts the first and the last event pick them both). Each visitor
  day also carries the visitor's latest event of earlier days (prev_last_at), so a visitor is
  counted once by counting rows: at their first day in the range (or bucket), the one whose
  previous event lies before it, without collecting distinct ids. Hourly buckets cut a day into 24
  parts: visitors per hour come from raw rows.

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


def _label(at: datetime, zone: ZoneInfo, bucket: Bucket) -> str:
    """The label grouping.bucket_label gives ``at``."""
    here = at.astimezone(zone)
    if bucket == "hour":
        return f"{here:%Y-%m-%d %H}:00:00"
    day = here.date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    elif bucket == "month":
        day = day.replace(day=1)
    return day.isoformat()


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


def _days(
    query: StatsQuery, span: TimeRange, visitors: bool
) -> list[tuple[datetime, datetime | None]] | None:
    """Every UTC day of the range with the instant its bucket label changes (None: it does not),
    or None when the rollups cannot answer exactly."""
    if not (_aligned(span.start) and _aligned(span.end)):
        return None
    zone = ZoneInfo(query.timezone)
    found: list[tuple[datetime, datetime | None]] = []
    day = _floor(span.start, _DAY)
    while day < span.end:
        cuts = _cuts(day, zone, query.bucket)
        if cuts is None:
            return None
        if visitors and len(cuts | {edge for edge in (span.start, span.end) if day < edge < day + _DAY}) > 1:
            return None
        found.append((day, min(cuts) if len(cuts) == 1 else None))
        day += _DAY
    return found


def _day_labels(query: StatsQuery, days: list[tuple[datetime, datetime | None]]) -> dict[str, object]:
    """Per UTC day: the label (as an index into ``label_names``, from 1) before and after its cut."""
    assert query.bucket is not None
    zone = ZoneInfo(query.timezone)
    names: dict[str, int] = {}

    def index(at: datetime) -> int:
        assert query.bucket is not None
        return names.setdefault(_label(at, zone, query.bucket), len(names) + 1)

    starts, cuts, before, after = [], [], [], []
    for day, cut in days:
        starts.append(day)
        cuts.append(cut if cut is not None else day + _DAY)
        before.append(index(day))
        after.append(index(cut) if cut is not None else before[-1])
    return {
        "label_names": list(names),
        "m_days": starts,
        "m_cuts": cuts,
        "m_lo": before,
        "m_hi": after,
    }


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
    days = _days(query, span, visitors)
    if days is None:
        return None
    timed = bool(query.dimensions)
    extra: dict[str, object] = {"first_day": _floor(span.start, _DAY)}

    def label(column: str) -> sql.Composable:
        assert query.bucket is not None
        return grouping.bucket_label(sql.SQL(column), query.bucket, sql.Placeholder("tz"))

    group = sql.SQL(" GROUP BY d0") if timed else sql.SQL("")
    ctes: list[tuple[str, sql.Composable]] = []
    if visitors and timed:
        # A row counts in the bucket of its first event, unless the visitor's previous event (of an
        # earlier day) is in the same bucket, and in the bucket of its last event when that is
        # another one (or the first lies before the range). Labels come from a per-day table built
        # here rather than from formatting every row's times.
        extra.update(_day_labels(query, days))
        body = sql.SQL(
            "WITH r AS (SELECT CASE WHEN v.first_at >= m.cut THEN m.hi ELSE m.lo END AS kf,"
            " CASE WHEN v.last_at >= m.cut THEN m.hi ELSE m.lo END AS kl,"
            " CASE WHEN v.prev_last_at >= %(start)s"
            " THEN CASE WHEN v.prev_last_at >= pm.cut THEN pm.hi ELSE pm.lo END END AS kp,"
            " v.first_at, v.last_at"
            " FROM {days} AS m(day, cut, lo, hi)"
            " JOIN {vd} v ON v.site_id = %(site)s AND v.day = m.day"
            " LEFT JOIN {days} AS pm(day, cut, lo, hi)"
            " ON pm.day = time_bucket(INTERVAL '1 day', v.prev_last_at)"
            " WHERE v.day >= %(first_day)s AND v.day < %(end)s),"
            # A handful of (first, last) label pairs: count once, then credit each side's bucket.
            " pairs AS (SELECT kf, kl,"
            " count(*) FILTER (WHERE first_at >= %(start)s AND first_at < %(end)s"
            " AND kp IS DISTINCT FROM kf) AS nf,"
            " count(*) FILTER (WHERE last_at >= %(start)s AND last_at < %(end)s"
            " AND (kl <> kf OR first_at < %(start)s)) AS nl"
            " FROM r GROUP BY kf, kl)"
            " SELECT (%(label_names)s::text[])[x.k] AS d0, sum(x.n) AS visitors FROM ("
            "SELECT kf AS k, nf AS n FROM pairs UNION ALL SELECT kl, nl FROM pairs) x"
            " GROUP BY x.k HAVING sum(x.n) > 0"
        ).format(
            days=sql.SQL(
                "unnest(%(m_days)s::timestamptz[], %(m_cuts)s::timestamptz[],"
                " %(m_lo)s::int[], %(m_hi)s::int[])"
            ),
            vd=relations.VISITOR_DAYS,
        )
        ctes.append(("vis", body))
    elif visitors:
        # Each visitor once: on the first of their days in the range, the one whose previous event
        # lies before the range.
        body = sql.SQL(
            "SELECT count(*) AS visitors FROM {} WHERE site_id = %(site)s"
            " AND day >= %(first_day)s AND day < %(end)s AND last_at >= %(start)s AND first_at < %(end)s"
            " AND (prev_last_at IS NULL OR prev_last_at < %(start)s)"
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
    return statement, extra


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
