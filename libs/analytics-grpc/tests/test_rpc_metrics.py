"""The shared interceptor counts every RPC of any service: by method, type and status, with latency."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import REGISTRY

from analytics_grpc import GrpcServer
from analytics_grpc.errors import ServiceError

SERVICE = "test.v1.Probe"
RELEASE = asyncio.Event()


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"bad":
        raise ServiceError.field("request", "is bad")
    if request == b"wait":
        await RELEASE.wait()
    return request


def sample(name: str, method: str, **labels: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": "unary", **labels}
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_calls_are_counted_by_status_and_timed() -> None:
    server = GrpcServer("probe", "127.0.0.1:0", grace_s=0)
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )
    port = await server.start()
    try:
        before = [
            sample("grpc_server_handled_total", "Echo", grpc_code=code)
            for code in ("OK", "INVALID_ARGUMENT", "CANCELLED")
        ]
        timed = sample("grpc_server_handling_seconds_count", "Echo")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/Echo")
            assert await call(b"hi", timeout=5) == b"hi"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(b"bad", timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # A caller that gives up: the server's handler is cancelled and counted as such.
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await call(b"wait", timeout=0.2)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(100):  # the server learns of the cancellation after the client does
            if sample("grpc_server_handled_total", "Echo", grpc_code="CANCELLED") > before[2]:
                break
            await asyncio.sleep(0.05)
        after = [
            sample("grpc_server_handled_total", "Echo", grpc_code=code)
            for code in ("OK", "INVALID_ARGUMENT", "CANCELLED")
        ]
        assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
        assert sample("grpc_server_started_total", "Echo") >= 3
        assert sample("grpc_server_handling_seconds_count", "Echo") - timed == 3
    finally:
        await server.stop()
