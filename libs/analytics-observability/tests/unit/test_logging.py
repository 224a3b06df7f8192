"""The logging set-up: one JSON shape for our lines and library lines, secrets and addresses blanked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from analytics_observability import REDACTED, configure_logging


class BinaryStream(io.TextIOWrapper):
    """A text stream with a .buffer, like sys.stderr in a container."""

    def isatty(self) -> bool:
        return False


@pytest.fixture
def stream() -> Iterator[BinaryStream]:
    raw = io.BytesIO()
    text = BinaryStream(raw, encoding="utf-8", line_buffering=True)
    yield text
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: BinaryStream) -> list[dict[str, object]]:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def test_service_and_library_lines_share_one_json_shape(stream: BinaryStream) -> None:
    configure_logging("INFO", json=True, service="ingest", stream=stream)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        structlog.get_logger("analytics.rpc").info(
            "rpc", code="OK", api_key="ak_secret", client_ip="203.0.113.9"
        )
        logging.getLogger("grpc").warning("library says %s", "hi")
        structlog.get_logger("analytics.rpc").debug("hidden below INFO")
    finally:
        structlog.contextvars.clear_contextvars()
    ours, library = lines(stream)
    assert ours["event"] == "rpc" and ours["service"] == "ingest" and ours["logger"] == "analytics.rpc"
    assert ours["request_id"] == "r-1" and ours["level"] == "info" and "timestamp" in ours
    assert ours["api_key"] == REDACTED and ours["client_ip"] == REDACTED
    assert (
        library["event"] == "library says hi"
        and library["logger"] == "grpc"
        and library["service"] == "ingest"
    )


def test_exceptions_are_rendered_into_the_line(stream: BinaryStream) -> None:
    configure_logging("INFO", json=True, stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    (line,) = lines(stream)
    assert line["level"] == "error" and "ValueError: boom" in str(line["exception"])


def test_console_renderer_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", json=False, stream=out)
    structlog.get_logger("t").debug("hello", n=1)
    assert "hello" in out.getvalue() and "n=1" in out.getvalue()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
