"""One logging set-up for every service: structlog, JSON in containers, console on a TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

__all__ = ["REDACTED", "configure_logging", "redact_secrets"]

REDACTED = "[redacted]"

# Keys whose values must never reach a log line: credentials, and client addresses (raw IPs are
# personal data under the privacy promise of the product).
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "x-api-key",
        "authorization",
        "admin_token",
        "internal_token",
        "token",
        "password",
        "secret",
        "salt",
        "ip",
        "client_ip",
        "x-forwarded-for",
        "x-real-ip",
        "peer",
    }
)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor that blanks credential and client-address fields."""
    for key in event_dict:
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
    return event_dict


class _NamedBytesLogger(structlog.BytesLogger):
    def __init__(self, name: str, file: Any) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLogger(structlog.PrintLogger):
    def __init__(self, name: str, file: TextIO) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: Any, _: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", "")
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def configure_logging(
    level: str = "INFO", *, json: bool | None = None, service: str | None = None, stream: TextIO | None = None
) -> None:
    """Configures structlog and routes stdlib logging (grpc, nats, psycopg, aiohttp) through it.

    json=None picks JSON unless the stream is a terminal, so containers get one JSON object per
    line. The services' own lines skip the stdlib logging machinery: with one line per request on
    the hot path, that cuts the cost of a line several times over.
    """
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    if service:
        shared.insert(0, _add_service(service))
    text_renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )

    def factory(*args: Any) -> Any:
        name = str(args[0]) if args else ""
        if json and hasattr(out, "buffer"):
            return _NamedBytesLogger(name, out.buffer)
        return _NamedPrintLogger(name, out)

    use_bytes = json and hasattr(out, "buffer")
    structlog.configure(
        processors=[
            *shared,
            _add_logger_name,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps) if use_bytes else text_renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            text_renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Library chatter at INFO is noise in a service log; their warnings still come through.
    for noisy in ("aiohttp.access", "asyncio", "nats", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric_level))


def _add_service(service: str) -> structlog.types.Processor:
    def add(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return add
