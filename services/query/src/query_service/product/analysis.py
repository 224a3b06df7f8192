"""What funnels and retention share with the stats query: a date range and filters parsed and
checked by the same code (request.parse_query, through a QueryRequest), the fields renamed to
the product request's, and refusals named as the product request names its fields."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

from analytics.v1 import query_pb2
from analytics_grpc.errors import FieldViolation, ServiceError
from query_service.request import shown
from query_service.spec import VISIT_DIMENSIONS, StatsQuery, is_visit_dimension

# Funnels and retention read raw events: their ranges are bounded.
MAX_RANGE_DAYS = 366


def stats_request(
    site_id: str,
    date_range: query_pb2.DateRange,
    filters: Iterable[query_pb2.Filter],
    breakdown: str = "",
) -> query_pb2.QueryRequest:
    """The QueryRequest whose parsing validates the range, the filters and the breakdown."""
    if breakdown and not is_visit_dimension(breakdown):
        raise ServiceError.field(
            "breakdown", f"must be a visit dimension ({', '.join(VISIT_DIMENSIONS)}), got {shown(breakdown)}"
        )
    return query_pb2.QueryRequest(
        site_id=site_id,
        date_range=date_range,
        metrics=["visitors"],
        filters=filters,
        dimensions=[breakdown] if breakdown else [],
    )


def check_span(query: StatsQuery, field: str = "date_range") -> None:
    # A local day may last 25 hours.
    if query.range.end - query.range.start > timedelta(days=MAX_RANGE_DAYS, hours=1):
        raise ServiceError.field(field, f"must span at most {MAX_RANGE_DAYS} days here")


def renamed(error: ServiceError, names: Mapping[str, str]) -> ServiceError:
    """The refusal with the stats query's field names replaced by the request's (prefix match)."""
    if not error.violations:
        return error

    def name(field: str) -> str:
        for old, new in names.items():
            if field == old or field.startswith((f"{old}.", f"{old}[")):
                return new + field[len(old) :]
        return field

    return ServiceError.invalid([FieldViolation(name(v.field), v.description) for v in error.violations])
