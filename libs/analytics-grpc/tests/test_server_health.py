"""GrpcServer's health entries: readiness ("") follows the service, liveness only the process."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from analytics_grpc import GrpcServer
from analytics_grpc.server import LIVENESS_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_liveness_stays_serving_while_readiness_follows_dependencies() -> None:
    server = GrpcServer("probe", "127.0.0.1:0", grace_s=0)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return int(reply.status)

        assert (await status(""), await status(LIVENESS_SERVICE)) == (NOT_SERVING, SERVING)
        await server.set_serving()
        assert (await status(""), await status(LIVENESS_SERVICE)) == (SERVING, SERVING)
        await server.set_available(False)  # a dependency went away: out of rotation, not restarted
        assert (await status(""), await status(LIVENESS_SERVICE)) == (NOT_SERVING, SERVING)
        await server.stop()
