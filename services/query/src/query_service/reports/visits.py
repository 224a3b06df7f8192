"""The visits a people report looks at: those starting in the range that pass the filter, with the
Query API's meaning (a visit passes when one of its events in the range does), and what every
report lists about a visit. Shared by the session list and the page flows."""

from __future__ import annotations

from psycopg import sql

from query_service import relations
from query_service.filters import Params, Scope, compile_filter, uses
from query_service.reports import stats
from query_service.spec import StatsQuery, is_event_dimension

# Aliases: the visit (s) and its first event (h), which holds the visit's user_id and the head
# attributes some filters test.
SCOPE = Scope(session="s", head="h")


def visits_from(query: StatsQuery, params: Params) -> sql.Composed:
    """FROM … WHERE of the chosen visits. Parameters: site, start, end."""
    parts: list[sql.Composable] = [
        sql.SQL(
            "FROM {sessions} s JOIN {events} h ON h.site_id = s.site_id AND h.event_id = s.session_id"
            " AND h.time = s.started_at"
            " WHERE s.site_id = %(site)s AND s.started_at >= %(start)s AND s.started_at < %(end)s"
        ).format(sessions=relations.SESSIONS, events=relations.EVENTS)
    ]
    if query.filter is not None:
        if any(is_event_dimension(d) for d in uses(query.filter)):
            parts.append(stats.an_event_passes(query, "h", params))
        else:
            parts.append(sql.SQL(" AND {}").format(compile_filter(query.filter, SCOPE, params)))
    return sql.Composed(parts)


def page_views_of(visit: str, alias: str) -> sql.Composed:
    """A join condition: ``alias`` ranges over the page views of ``visit``, the visit's own events."""
    return sql.SQL(
        "{p}.site_id = {v}.site_id AND {p}.visitor_id = {v}.visitor_id AND {p}.time >= {v}.started_at"
        " AND {p}.time <= {v}.ended_at AND {p}.kind = {kind} AND NOT {p}.is_bot"
    ).format(p=sql.Identifier(alias), v=sql.Identifier(visit), kind=sql.Literal(relations.PAGEVIEW_KIND))
