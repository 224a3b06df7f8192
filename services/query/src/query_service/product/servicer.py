"""ProductService: goals and funnel definitions (admin writes, read-scope reads), funnels and
retention cohorts. Decode, authorize, call a report or the definitions store, encode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from analytics.v1 import auth_pb2, product_pb2, product_pb2_grpc, query_pb2
from analytics_grpc.auth_client import AuthClient, SiteAccess, SiteInfo
from analytics_grpc.errors import ServiceError
from analytics_grpc.metadata import Context
from analytics_observability.metrics import observe_report
from query_service.event_reports import rfc3339_range, seed_range
from query_service.product import analysis, definitions, funnels, retention
from query_service.request import authorize_site, parse_site_uuid, shown
from query_service.servicer import Reports
from query_service.snapshot import Snapshots
from query_service.spec import StatsQuery

# Funnel requests' fields under the names the stats query gives them.
_FUNNEL_FIELDS = {"dimensions[0]": "breakdown"}
_SEED_FIELDS = {"date_range": "start_date"}
DEFAULT_PERIODS = 8
DEFAULT_SEED_DAYS = 7


def _funnel_definition(
    request: product_pb2.CreateFunnelRequest | product_pb2.UpdateFunnelRequest,
) -> tuple[str, tuple[definitions.Step, ...], int]:
    """A funnel's name, steps and window, validated."""
    return (
        definitions.check_name(request.name),
        definitions.check_steps(request.steps),
        definitions.check_window(request.window_seconds, request.HasField("window_seconds")),
    )


def _event(value: str, field: str) -> str:
    name = definitions.nul_free(value, field).strip()
    if len(name) > definitions.MAX_EVENT_NAME:
        raise ServiceError.field(field, f"must be at most {definitions.MAX_EVENT_NAME} characters")
    return definitions.STORED_PAGEVIEW if name.lower() in definitions.PAGEVIEW_NAMES else name


def _periods(value: int, default: int, field: str) -> int:
    if value > retention.MAX_PERIODS:
        raise ServiceError.field(field, f"must be between 1 and {retention.MAX_PERIODS}, got {value}")
    return value or default


def _steps(
    answer: Sequence[funnels.StepResult], steps: Sequence[definitions.Step]
) -> list[product_pb2.FunnelStepResult]:
    return [
        product_pb2.FunnelStepResult(
            step=r.step,
            name=r.name,
            entered=r.entered,
            converted=r.converted,
            conversion_rate=r.conversion_rate,
            conversion_rate_from_start=r.conversion_rate_from_start,
            drop_off=r.drop_off,
            drop_off_rate=r.drop_off_rate,
            median_seconds_to_convert=r.median_seconds_to_convert,
            time_window_seconds=step.time_window_seconds,
        )
        for r, step in zip(answer, steps, strict=True)
    ]


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, snapshots: Snapshots, auth: AuthClient) -> None:
        self._snapshots = snapshots
        self._auth = auth

    @staticmethod
    async def _analysis(
        conn: AsyncConnection[Any], site: SiteInfo, request: query_pb2.QueryRequest, names: dict[str, str]
    ) -> StatsQuery:
        """The range, filters and breakdown parsed as the stats query parses them."""
        try:
            query = await Reports.parse(conn, request, site.site_id, site.timezone)
        except ServiceError as error:
            raise analysis.renamed(error, names) from None
        analysis.check_span(query, names.get("date_range", "date_range"))
        return query

    async def _reader(self, context: Context, site_id: str) -> SiteAccess:
        return await authorize_site(self._auth, context, site_id)

    async def _writer(self, context: Context, site_id: str) -> SiteAccess:
        return await authorize_site(self._auth, context, site_id, scope=auth_pb2.SCOPE_ADMIN)

    # Goals.

    async def CreateGoal(
        self, request: product_pb2.CreateGoalRequest, context: Context
    ) -> product_pb2.CreateGoalResponse:
        access = await self._writer(context, request.site_id)
        async with self._snapshots.write(context.time_remaining()) as conn:
            goal = await definitions.create_goal(conn, access.site.site_id, request.goal)
        return product_pb2.CreateGoalResponse(goal=goal.to_proto())

    async def ListGoals(
        self, request: product_pb2.ListGoalsRequest, context: Context
    ) -> product_pb2.ListGoalsResponse:
        access = await self._reader(context, request.site_id)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            goals = await definitions.list_goals(conn, access.site.site_id)
        return product_pb2.ListGoalsResponse(goals=[goal.to_proto() for goal in goals])

    async def UpdateGoal(
        self, request: product_pb2.UpdateGoalRequest, context: Context
    ) -> product_pb2.UpdateGoalResponse:
        access = await self._writer(context, request.site_id)
        goal_id = parse_site_uuid(request.goal_id, "goal_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            goal = await definitions.update_goal(conn, access.site.site_id, goal_id, request.goal)
        return product_pb2.UpdateGoalResponse(goal=goal.to_proto())

    async def DeleteGoal(
        self, request: product_pb2.DeleteGoalRequest, context: Context
    ) -> product_pb2.DeleteGoalResponse:
        access = await self._writer(context, request.site_id)
        goal_id = parse_site_uuid(request.goal_id, "goal_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            await definitions.delete_goal(conn, access.site.site_id, goal_id)
        return product_pb2.DeleteGoalResponse(goal_id=goal_id)

    # Funnel definitions.

    async def CreateFunnel(
        self, request: product_pb2.CreateFunnelRequest, context: Context
    ) -> product_pb2.CreateFunnelResponse:
        access = await self._writer(context, request.site_id)
        name, steps, window = _funnel_definition(request)
        async with self._snapshots.write(context.time_remaining()) as conn:
            funnel = await definitions.create_funnel(conn, access.site.site_id, name, steps, window)
        return product_pb2.CreateFunnelResponse(funnel=funnel.to_proto())

    async def ListFunnels(
        self, request: product_pb2.ListFunnelsRequest, context: Context
    ) -> product_pb2.ListFunnelsResponse:
        access = await self._reader(context, request.site_id)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            funnels = await definitions.list_funnels(conn, access.site.site_id)
        return product_pb2.ListFunnelsResponse(funnels=[funnel.to_proto() for funnel in funnels])

    async def GetFunnel(
        self, request: product_pb2.GetFunnelRequest, context: Context
    ) -> product_pb2.GetFunnelResponse:
        access = await self._reader(context, request.site_id)
        funnel_id = parse_site_uuid(request.funnel_id, "funnel_id")
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            funnel = await definitions.get_funnel(conn, access.site.site_id, funnel_id)
        if funnel is None:
            raise definitions.funnel_not_found(funnel_id)
        return product_pb2.GetFunnelResponse(funnel=funnel.to_proto())

    async def UpdateFunnel(
        self, request: product_pb2.UpdateFunnelRequest, context: Context
    ) -> product_pb2.UpdateFunnelResponse:
        access = await self._writer(context, request.site_id)
        funnel_id = parse_site_uuid(request.funnel_id, "funnel_id")
        name, steps, window = _funnel_definition(request)
        async with self._snapshots.write(context.time_remaining()) as conn:
            funnel = await definitions.update_funnel(
                conn, access.site.site_id, funnel_id, name=name, steps=steps, window_seconds=window
            )
        return product_pb2.UpdateFunnelResponse(funnel=funnel.to_proto())

    async def DeleteFunnel(
        self, request: product_pb2.DeleteFunnelRequest, context: Context
    ) -> product_pb2.DeleteFunnelResponse:
        access = await self._writer(context, request.site_id)
        funnel_id = parse_site_uuid(request.funnel_id, "funnel_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            await definitions.delete_funnel(conn, access.site.site_id, funnel_id)
        return product_pb2.DeleteFunnelResponse(funnel_id=funnel_id)

    # Funnel analytics.

    async def _funnel(
        self,
        context: Context,
        site: SiteInfo,
        typed: query_pb2.QueryRequest,
        *,
        saved_id: str,
        ad_hoc: tuple[tuple[definitions.Step, ...], int] | None,
        names: dict[str, str],
    ) -> product_pb2.FunnelReport:
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            if ad_hoc is None:
                saved = await definitions.get_funnel(conn, site.site_id, saved_id)
                if saved is None:
                    raise ServiceError.field("funnel_id", f"no funnel {saved_id} on this site")
                steps, window = saved.steps, saved.window_seconds
            else:
                steps, window = ad_hoc
            query = await self._analysis(conn, site, typed, names)
            with observe_report("funnel"):
                answer = await funnels.funnel(conn, query, steps, window)
        start, end = rfc3339_range(query)
        return product_pb2.FunnelReport(
            site_id=site.site_id,
            funnel_id=saved_id,
            timezone=site.timezone,
            start=start,
            end=end,
            window_seconds=window,
            steps=_steps(answer.steps, steps),
            breakdown=query.dimensions[0] if query.dimensions else "",
            groups=[
                product_pb2.FunnelGroup(value=value, steps=_steps(group, steps))
                for value, group in answer.groups
            ],
        )

    async def QueryFunnel(
        self, request: product_pb2.QueryFunnelRequest, context: Context
    ) -> product_pb2.QueryFunnelResponse:
        access = await self._reader(context, request.site_id)
        ad_hoc: tuple[tuple[definitions.Step, ...], int] | None = None
        saved_id = ""
        if request.funnel_id:
            if request.steps:
                raise ServiceError.field("steps", "give funnel_id or steps, not both")
            if request.HasField("window_seconds"):
                raise ServiceError.field("window_seconds", "is the saved funnel's; give it with steps only")
            saved_id = parse_site_uuid(request.funnel_id, "funnel_id")
        else:
            ad_hoc = (
                definitions.check_steps(request.steps),
                definitions.check_window(request.window_seconds, request.HasField("window_seconds")),
            )
        typed = analysis.stats_request(
            access.site.site_id, request.date_range, request.filters, request.breakdown
        )
        report = await self._funnel(
            context, access.site, typed, saved_id=saved_id, ad_hoc=ad_hoc, names=_FUNNEL_FIELDS
        )
        return product_pb2.QueryFunnelResponse(report=report)

    async def GetFunnelAnalytics(
        self, request: product_pb2.GetFunnelAnalyticsRequest, context: Context
    ) -> product_pb2.GetFunnelAnalyticsResponse:
        access = await self._reader(context, request.site_id)
        saved_id = parse_site_uuid(request.funnel_id, "funnel_id")
        typed = analysis.stats_request(
            access.site.site_id, seed_range(request.start_date, request.end_date), []
        )
        report = await self._funnel(
            context, access.site, typed, saved_id=saved_id, ad_hoc=None, names=_SEED_FIELDS
        )
        return product_pb2.GetFunnelAnalyticsResponse(report=report)

    # Retention.

    async def _retention(
        self,
        context: Context,
        site: SiteInfo,
        typed: query_pb2.QueryRequest,
        settings: tuple[retention.Period, int, str, str],
        names: dict[str, str],
    ) -> product_pb2.RetentionReport:
        period, periods, cohort_event, return_event = settings
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            query = await self._analysis(conn, site, typed, names)
            with observe_report("retention"):
                cohorts = await retention.retention(
                    conn,
                    query,
                    period=period,
                    periods=periods,
                    cohort_event=cohort_event,
                    return_event=return_event,
                )
        start, end = rfc3339_range(query)
        return product_pb2.RetentionReport(
            site_id=site.site_id,
            timezone=site.timezone,
            start=start,
            end=end,
            period=period,
            cohort_event=cohort_event,
            return_event=return_event,
            cohorts=[
                product_pb2.RetentionCohort(
                    date=c.date,
                    size=c.size,
                    periods=[
                        product_pb2.RetentionPeriod(
                            period=p.period, date=p.date, returned=p.returned, percentage=p.percentage
                        )
                        for p in c.periods
                    ],
                )
                for c in cohorts
            ],
        )

    async def QueryRetention(
        self, request: product_pb2.QueryRetentionRequest, context: Context
    ) -> product_pb2.QueryRetentionResponse:
        access = await self._reader(context, request.site_id)
        period = request.period or "day"
        if period not in retention.PERIODS:
            raise ServiceError.field(
                "period", f"must be one of {', '.join(retention.PERIODS)}, got {shown(request.period)}"
            )
        settings = (
            period,
            _periods(request.periods, DEFAULT_PERIODS, "periods"),
            _event(request.cohort_event, "cohort_event"),
            _event(request.return_event, "return_event"),
        )
        typed = analysis.stats_request(access.site.site_id, request.date_range, request.filters)
        report = await self._retention(context, access.site, typed, settings, {})
        return product_pb2.QueryRetentionResponse(report=report)

    async def GetRetention(
        self, request: product_pb2.GetRetentionRequest, context: Context
    ) -> product_pb2.GetRetentionResponse:
        access = await self._reader(context, request.site_id)
        settings: tuple[retention.Period, int, str, str] = (
            "day",
            _periods(request.days, DEFAULT_SEED_DAYS, "days"),
            _event(request.cohort, "cohort"),
            "",
        )
        typed = analysis.stats_request(
            access.site.site_id, seed_range(request.start_date, request.end_date), []
        )
        report = await self._retention(context, access.site, typed, settings, _SEED_FIELDS)
        return product_pb2.GetRetentionResponse(report=report)
