"""GrpcServer shares its port with another process of the service only when asked to."""

from __future__ import annotations

import pytest

from analytics_grpc import GrpcServer
from analytics_testing.ports import free_ports


async def test_a_taken_port_is_refused_unless_sharing_is_asked_for() -> None:
    (port,) = free_ports(1)
    first = GrpcServer("one", f"127.0.0.1:{port}", grace_s=0)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="Failed to bind"):
            await GrpcServer("two", f"127.0.0.1:{port}", grace_s=0).start()
    finally:
        await first.stop()

    sharing = [GrpcServer(name, f"127.0.0.1:{port}", grace_s=0, reuse_port=True) for name in ("a", "b")]
    for server in sharing:
        await server.start()
    for server in sharing:
        await server.stop()


def test_free_ports_are_distinct() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
