"""ProductService: goals and funnel definitions (admin writes, read-scope reads), funnels and
retention cohorts. Decode, authorize, call a report or the definitions store, encode."""

from __future__ import annotations

from analytics.v1 import auth_pb2, product_pb2, product_pb2_grpc
from analytics_grpc.auth_client import AuthClient, SiteAccess
from analytics_grpc.metadata import Context
from query_service.product import definitions
from query_service.request import authorize_site
from query_service.snapshot import Snapshots


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, snapshots: Snapshots, auth: AuthClient) -> None:
        self._snapshots = snapshots
        self._auth = auth

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
        goal_id = definitions.parse_uuid(request.goal_id, "goal_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            goal = await definitions.update_goal(conn, access.site.site_id, goal_id, request.goal)
        return product_pb2.UpdateGoalResponse(goal=goal.to_proto())

    async def DeleteGoal(
        self, request: product_pb2.DeleteGoalRequest, context: Context
    ) -> product_pb2.DeleteGoalResponse:
        access = await self._writer(context, request.site_id)
        goal_id = definitions.parse_uuid(request.goal_id, "goal_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            await definitions.delete_goal(conn, access.site.site_id, goal_id)
        return product_pb2.DeleteGoalResponse(goal_id=goal_id)

    # Funnel definitions.

    async def CreateFunnel(
        self, request: product_pb2.CreateFunnelRequest, context: Context
    ) -> product_pb2.CreateFunnelResponse:
        access = await self._writer(context, request.site_id)
        name = definitions.check_name(request.name)
        steps = definitions.check_steps(request.steps)
        window = definitions.check_window(request.window_seconds)
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
        funnel_id = definitions.parse_uuid(request.funnel_id, "funnel_id")
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            funnel = await definitions.get_funnel(conn, access.site.site_id, funnel_id)
        if funnel is None:
            raise definitions.funnel_not_found(funnel_id)
        return product_pb2.GetFunnelResponse(funnel=funnel.to_proto())

    async def UpdateFunnel(
        self, request: product_pb2.UpdateFunnelRequest, context: Context
    ) -> product_pb2.UpdateFunnelResponse:
        access = await self._writer(context, request.site_id)
        funnel_id = definitions.parse_uuid(request.funnel_id, "funnel_id")
        name = definitions.check_name(request.name)
        steps = definitions.check_steps(request.steps)
        window = definitions.check_window(request.window_seconds)
        async with self._snapshots.write(context.time_remaining()) as conn:
            funnel = await definitions.update_funnel(
                conn, access.site.site_id, funnel_id, name=name, steps=steps, window_seconds=window
            )
        return product_pb2.UpdateFunnelResponse(funnel=funnel.to_proto())

    async def DeleteFunnel(
        self, request: product_pb2.DeleteFunnelRequest, context: Context
    ) -> product_pb2.DeleteFunnelResponse:
        access = await self._writer(context, request.site_id)
        funnel_id = definitions.parse_uuid(request.funnel_id, "funnel_id")
        async with self._snapshots.write(context.time_remaining()) as conn:
            await definitions.delete_funnel(conn, access.site.site_id, funnel_id)
        return product_pb2.DeleteFunnelResponse(funnel_id=funnel_id)
