"""Typed settings read from environment variables, failing at start-up with a clear message."""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import TypeVar

from analytics_config import names

__all__ = ["Env", "SettingsError"]

_N = TypeVar("_N", int, float)


class SettingsError(ValueError):
    """An environment variable is missing or has a value that cannot be used."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Env:
    """Reads typed values from an environment mapping (os.environ unless given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    def _raw(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self._raw(name)
        if value is not None:
            return value
        if default is None:
            raise SettingsError(f"{name} is required but not set")
        return default

    def optional_str(self, name: builtins.str) -> builtins.str | None:
        return self._raw(name)

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        return self._bounded(name, value, minimum, maximum)

    def float(
        self,
        name: builtins.str,
        default: builtins.float,
        *,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        return self._bounded(name, value, minimum, maximum)

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")

    def list(self, name: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def choice(
        self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]
    ) -> builtins.str:
        value = self.str(name, default)
        if value not in choices:
            raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def address(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """A host:port pair."""
        value = self.str(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}={value!r} is not host:port")
        return value

    @staticmethod
    def _bounded(name: builtins.str, value: _N, minimum: _N | None, maximum: _N | None) -> _N:
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name}={value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{name}={value} is above the maximum {maximum}")
        return value

    # The settings several services share, with their shared defaults (names: analytics_config.names).
    def grpc_listen(self) -> builtins.str:
        return self.address(names.GRPC_LISTEN, "0.0.0.0:50051")

    def grpc_reuse_port(self) -> builtins.bool:
        return self.bool(names.GRPC_REUSE_PORT, False)

    def auth_addr(self) -> builtins.str:
        return self.address(names.AUTH_ADDR, "auth:50051")

    def auth_cache_ttl_s(self) -> builtins.float:
        return self.float(names.AUTH_CACHE_TTL_S, 10.0, minimum=0, maximum=3600)

    def stream_replicas(self) -> builtins.int:
        return self.int(names.STREAM_REPLICAS, 1, minimum=1, maximum=5)

    def metrics_listen(self) -> builtins.str | None:
        """Where /metrics is served (host:port), or None for no endpoint."""
        if self.optional_str(names.METRICS_LISTEN) is None:
            return None
        return self.address(names.METRICS_LISTEN, "")

    def log_level(self) -> builtins.str:
        return self.str(names.LOG_LEVEL, "INFO")
