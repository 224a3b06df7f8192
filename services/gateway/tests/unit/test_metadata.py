"""HTTP headers to gRPC metadata."""

from __future__ import annotations

import pytest

from gateway_service.metadata import forward_metadata, grpc_timeout_seconds


def headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in pairs]


def test_forwardable_headers_are_lower_cased_and_others_dropped() -> None:
    raw = headers(
        ("Host", "example.com"),
        ("Content-Type", "application/json"),
        ("Content-Length", "10"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("X-Secret-Hop", "1"),
        ("X-Api-Key", "k"),
        ("Authorization", "Bearer t"),
        ("grpc-timeout", "1S"),
        ("grpc-status", "0"),
        ("Bad Key", "x"),
        ("X-Utf8", "caf\u00e9"),
        ("X-Tab", "a\tb"),
        ("X-Trace-Bin", "AAEC"),
        ("X-Broken-Bin", "!!"),
    )
    metadata = dict(forward_metadata(raw, None, "rid"))
    assert metadata == {
        "x-api-key": "k",
        "authorization": "Bearer t",
        "x-trace-bin": b"\x00\x01\x02",
        "x-request-id": "rid",
    }


def test_forwarded_for_is_appended_like_envoy() -> None:
    raw = headers(("X-Forwarded-For", "203.0.113.1, 10.0.0.1"), ("x-forwarded-for", "10.0.0.2"))
    metadata = dict(forward_metadata(raw, "192.0.2.9", "rid"))
    assert metadata["x-forwarded-for"] == "203.0.113.1, 10.0.0.1, 10.0.0.2, 192.0.2.9"
    assert dict(forward_metadata([], "192.0.2.9", "rid"))["x-forwarded-for"] == "192.0.2.9"
    assert "x-forwarded-for" not in dict(forward_metadata([], None, "rid"))


def test_user_agent_travels_as_x_forwarded_user_agent() -> None:
    raw = headers(("User-Agent", "Mozilla/5.0"), ("X-Forwarded-User-Agent", "spoofed"))
    metadata = forward_metadata(raw, None, "rid")
    assert ("x-forwarded-user-agent", "Mozilla/5.0") in metadata
    assert all(key not in ("user-agent",) for key, _ in metadata)
    assert [value for key, value in metadata if key == "x-forwarded-user-agent"] == ["Mozilla/5.0"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0), ("5u", 5e-6), ("7n", 7e-9)],
)
def test_grpc_timeout_values(value: str, seconds: float) -> None:
    assert grpc_timeout_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "S", "1", "1x", "-1S", "1234567890S"])
def test_bad_grpc_timeouts_are_ignored(value: str | None) -> None:
    assert grpc_timeout_seconds(value) is None
