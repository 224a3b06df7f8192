"""What every grouped report shares: time-bucket labels, the groups' columns, and the final
statement that fills empty buckets, sorts, pages and counts the rows."""

from __future__ import annotations

from psycopg import sql

from query_service.spec import CONVERSION_RATE, PERCENTAGE, Bucket, StatsQuery

BUCKET_FORMAT = {
    "hour": "YYYY-MM-DD HH24:00:00",
    "day": "YYYY-MM-DD",
    "week": "YYYY-MM-DD",
    "month": "YYYY-MM-DD",
}
# The exact aggregates of a group, in this order, after its dimensions d0, d1, …
RAW_COLUMNS = ("visitors", "pageviews", "events", "visits", "bounces", "visit_pageviews", "duration")


def bucket_label(column: sql.Composable, bucket: Bucket, timezone: sql.Composable) -> sql.Composable:
    trunc = "hour" if bucket == "hour" else bucket
    return sql.SQL("to_char(date_trunc({}, {} AT TIME ZONE {}), {})").format(
        sql.Literal(trunc), column, timezone, sql.Literal(BUCKET_FORMAT[bucket])
    )


def dimension_names(count: int) -> list[sql.Identifier]:
    return [sql.Identifier(f"d{i}") for i in range(count)]


def order(query: StatsQuery) -> sql.Composable:
    keys: list[sql.Composable] = []
    used: set[str] = set()
    for key in query.order_by:
        direction = sql.SQL("DESC" if key.direction == "desc" else "ASC")
        if key.field in query.dimensions:
            index = query.dimensions.index(key.field)
            keys.append(sql.SQL('{} COLLATE "C" {}').format(sql.Identifier(f"d{index}"), direction))
            used.add(key.field)
        else:
            keys.append(sql.SQL("{} {}").format(exact(key.field), direction))
    for index, name in enumerate(query.dimensions):
        if name not in used:
            keys.append(sql.SQL('{} COLLATE "C" ASC').format(sql.Identifier(f"d{index}")))
    if not keys:
        return sql.SQL("")
    return sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(keys))


def exact(metric: str) -> sql.Composable:
    """A metric's exact value, for sorting (the answer rounds it)."""
    if metric in ("visitors", "pageviews", "events", "visits"):
        return sql.Identifier(metric)
    if metric in (PERCENTAGE, CONVERSION_RATE):
        # conversion_rate's pages are sorted in Python (answer.run); any stable order does here.
        return sql.Identifier("visitors")
    numerator = {
        "bounce_rate": "bounces",
        "visit_duration": "duration",
        "views_per_visit": "visit_pageviews",
    }[metric]
    return sql.SQL("(CASE WHEN visits = 0 THEN 0 ELSE {}::numeric / visits END)").format(
        sql.Identifier(numerator)
    )


def finish(
    query: StatsQuery,
    ctes: list[sql.Composable],
    labels: list[str] | None,
    paginate: bool,
    *,
    count_only: bool = False,
) -> sql.Composed:
    """The statement over CTEs ending in ``grouped`` (d0… and every column of Raw): empty time
    buckets filled in, sorted, paged, with the row count."""
    names = dimension_names(len(query.dimensions))
    source_name = sql.SQL("grouped")
    if labels is not None:
        # Every bucket of the range, with zeros where nothing happened.
        filled: list[sql.Composable] = [sql.SQL("coalesce(g.d0, l.label) AS d0")]
        filled += [sql.SQL("coalesce(g.{c}, 0) AS {c}").format(c=sql.Identifier(c)) for c in RAW_COLUMNS]
        ctes.append(
            sql.SQL(
                "filled AS (SELECT {} FROM grouped g"
                " FULL JOIN unnest(%(labels)s::text[]) AS l(label) ON g.d0 = l.label)"
            ).format(sql.SQL(", ").join(filled))
        )
        source_name = sql.SQL("filled")
    if count_only:
        return sql.SQL("WITH {} SELECT count(*) FROM {}").format(sql.SQL(", ").join(ctes), source_name)
    page = sql.SQL(" LIMIT %(limit)s OFFSET %(offset)s") if paginate else sql.SQL("")
    return sql.SQL("WITH {} SELECT {}, count(*) OVER () AS total_rows FROM {}{}{}").format(
        sql.SQL(", ").join(ctes),
        sql.SQL(", ").join([*names, *(sql.Identifier(c) for c in RAW_COLUMNS)]),
        source_name,
        order(query),
        page,
    )
