"""Runs a service's main coroutine on the event loop the deployment chose: uvloop by default.

grpc.aio, aiohttp, nats-py and psycopg run on any asyncio loop. uvloop (libuv) makes each socket
read and write and each callback cheaper; on the 2-core development machine it lowered the CPU the
HTTP edge (then a Python gateway) and ingest spent per HTTP event and the tail latency at 1,000
req/s (README: Benchmark).
``ANALYTICS_EVENT_LOOP=asyncio`` selects the standard library's loop instead.

Before the loop starts, everything the service has built so far (its modules, protobuf descriptors,
settings …) is moved out of the cyclic garbage collector's reach with
``gc.freeze()``: it lives as long as the process, and a full collection no longer walks it. On the
benchmark's stack the longest collection pause of ingest went from 18-41 ms to 1.5 ms (about 50,000
objects frozen per service); every request in flight waits out such a pause.

Importing this module also sets gRPC core's engine (``grpc_runtime.apply()``), which must happen
before grpc loads: keep ``from analytics_config import event_loop`` the first import of a service's
``__main__``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

import uvloop

from analytics_config import Env, SettingsError, grpc_runtime, names

__all__ = ["CHOICES", "loop_name", "main", "run", "running_loop_name"]

grpc_runtime.apply()  # before any module of the service imports grpc (see above)

_T = TypeVar("_T")


class _Settings(Protocol):
    @property
    def log_level(self) -> str: ...


_S = TypeVar("_S", bound=_Settings)

_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": None,  # asyncio.Runner's default: the standard library's loop
}
CHOICES = tuple(_FACTORIES)


def loop_name(environ: Mapping[str, str] | None = None) -> str:
    """The configured loop; raises SettingsError for an unknown name."""
    return Env(environ).choice(names.EVENT_LOOP, "uvloop", CHOICES)


def run(main: Coroutine[Any, Any, _T], environ: Mapping[str, str] | None = None) -> _T:
    """asyncio.run(main) on the configured loop."""
    try:
        factory = _FACTORIES[loop_name(environ)]
    except BaseException:
        main.close()  # never awaited: close it, so no "coroutine was never awaited" warning
        raise
    gc.collect()  # so that no garbage is frozen with the rest
    gc.freeze()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """Which kind of loop runs the current task, for the start-up log line."""
    return "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"


def main(
    service: str,
    load: Callable[[], _S],
    serve: Callable[[_S], Coroutine[Any, Any, None]],
    configure_logging: Callable[..., None],
) -> None:
    """A service's entry point: its settings, then ``configure_logging(settings.log_level,
    service=service)``, then ``serve`` on the configured loop. An invalid setting, the loop's
    included, ends the process before anything starts with one line that names it ("ingest:
    invalid settings: …", exit status 1), not a traceback."""
    try:
        loop_name()
        settings = load()
    except SettingsError as error:
        raise SystemExit(f"{service}: invalid settings: {error}") from None
    configure_logging(settings.log_level, service=service)
    run(serve(settings))
