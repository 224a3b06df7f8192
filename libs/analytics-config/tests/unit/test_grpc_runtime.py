"""The gRPC engine default: set when the deployment has not chosen, never overriding its choice."""

from __future__ import annotations

from analytics_config import grpc_runtime


def test_the_default_is_set_when_nothing_is() -> None:
    environ: dict[str, str] = {}
    assert grpc_runtime.apply(environ) == grpc_runtime.DEFAULT_EXPERIMENTS
    assert environ == {"GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener"}


def test_a_value_already_set_is_kept_even_when_empty() -> None:
    for chosen in ("", "event_engine_client"):
        environ = {"GRPC_EXPERIMENTS": chosen}
        assert grpc_runtime.apply(environ) == chosen
        assert environ == {"GRPC_EXPERIMENTS": chosen}
