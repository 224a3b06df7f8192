"""QueryService servicer: authorize per site, validate, run one report, encode."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from psycopg_pool import AsyncConnectionPool

from analytics.v1 import auth_pb2, query_pb2, query_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from query_service.reports.daily_stats import daily_stats

DEFAULT_TOP_PATHS = 10
MAX_TOP_PATHS = 1000


def parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, auth: AuthClient, statement_timeout_ms: int) -> None:
        self._pool = pool
        self._auth = auth
        self._statement_timeout_ms = statement_timeout_ms

    def _timeout_ms(self, context: Context) -> int:
        """The statement timeout: the configured one, shortened to the caller's deadline."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._statement_timeout_ms
        return max(1, min(self._statement_timeout_ms, int(remaining * 1000)))

    async def GetDailyStats(
        self, request: query_pb2.GetDailyStatsRequest, context: Context
    ) -> query_pb2.GetDailyStatsResponse:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        violations: list[FieldViolation] = []
        site_id: uuid.UUID | None = None
        if not request.site_id:
            violations.append(FieldViolation("site_id", "is required"))
        else:
            try:
                site_id = uuid.UUID(request.site_id)
            except ValueError:
                violations.append(FieldViolation("site_id", "must be a UUID"))
        day = datetime.now(UTC).date() if not request.date else parse_day(request.date)
        if day is None:
            violations.append(FieldViolation("date", "must be a date as YYYY-MM-DD"))
        limit = request.limit or DEFAULT_TOP_PATHS
        if limit > MAX_TOP_PATHS:
            violations.append(FieldViolation("limit", f"must be between 1 and {MAX_TOP_PATHS}"))
        if violations or site_id is None or day is None:
            raise ServiceError.invalid(violations)
        principal = await self._auth.authenticate(api_key, str(site_id))
        principal.require(auth_pb2.SCOPE_READ)
        stats = await daily_stats(self._pool, site_id, day, limit, timeout_ms=self._timeout_ms(context))
        return query_pb2.GetDailyStatsResponse(
            site_id=str(site_id),
            date=day.isoformat(),
            total_views=stats.total_views,
            unique_users=stats.unique_users,
            top_paths=[query_pb2.PathCount(path=path, views=views) for path, views in stats.top_paths],
        )
