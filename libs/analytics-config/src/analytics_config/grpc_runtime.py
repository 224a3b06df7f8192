"""gRPC core's I/O engine for the services, chosen before the grpc module loads.

gRPC core reads ``GRPC_EXPERIMENTS`` when grpc is imported; setting it later changes nothing.
``analytics_config.event_loop`` calls ``apply()`` when it is imported, so every service's
``__main__`` (whose first import is ``event_loop``) sets it before grpc loads, unless the
deployment already has.

The default switches gRPC core's EventEngine client and listener off, which puts back the epoll
poller that was the default before EventEngine. With EventEngine, a grpc.aio call handed each read
and write between EventEngine's threads, gRPC Python's completion-queue poller thread and the event
loop: 11.6 context switches per unary call on the server. With the epoll poller it was 7.5, and a
no-op unary call took about 20% less CPU on both sides (grpcio 1.85.1, 1,000 calls/s, 2-core
machine). On the benchmark's HTTP path (then a Python gateway → ingest), the gateway's and ingest's
CPU per request went down 6-9% (README: Benchmark).

``GRPC_EXPERIMENTS=`` (set and empty) keeps gRPC's own defaults. A gRPC release that no longer knows
one of these names logs "Unknown experiment" once at start-up and goes on with its defaults.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["DEFAULT_EXPERIMENTS", "VARIABLE", "apply", "in_effect"]

VARIABLE = "GRPC_EXPERIMENTS"
DEFAULT_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def apply(environ: MutableMapping[str, str] = os.environ) -> str:
    """Sets the default unless the variable is set already; returns the value in effect."""
    return environ.setdefault(VARIABLE, DEFAULT_EXPERIMENTS)


def in_effect() -> str:
    """This process's GRPC_EXPERIMENTS, for the start-up log lines."""
    return os.environ.get(VARIABLE, "")
