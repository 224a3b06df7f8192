"""GrpcServer shares its port with another process of the service only when asked to."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from analytics_grpc import GrpcServer
from analytics_testing import ports as ports_module
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


def test_free_ports_are_distinct_because_no_socket_closes_before_all_are_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A distinct result alone proves little: the kernel rarely repeats a port by chance. What makes
    # repeats impossible is the order: every socket stays bound until the last port is picked.
    steps: list[str] = []

    class Recording(socket.socket):
        def bind(self, address: Any) -> None:
            super().bind(address)
            steps.append("bind")

        def close(self) -> None:
            if self.fileno() != -1:
                steps.append("close")
            super().close()

    monkeypatch.setattr(ports_module.socket, "socket", Recording)
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert steps == ["bind"] * 8 + ["close"] * 8
