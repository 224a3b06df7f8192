"""Foreground runners for `make run` (one Procfile line each) and a TCP wait helper."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from analytics_testing import _process
from analytics_testing.nats import LocalNats
from analytics_testing.postgres import LICENSES, LocalPostgres

__all__ = ["main", "run_foreground", "wait_tcp"]


def run_foreground(
    command: list[str], *, stop_signal: signal.Signals, cwd: Path, drop_privileges: bool = False
) -> int:
    """Run command, turn SIGTERM/SIGINT into stop_signal for it, and return its exit code (shell style)."""
    kwargs = _process.drop_privileges_kwargs() if drop_privileges else {}
    proc = subprocess.Popen(command, cwd=cwd, **kwargs)

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(stop_signal)

    # honcho stops its processes with SIGTERM, a terminal with SIGINT; the server chooses how
    # gracefully to stop only by the signal it gets, so both become the one that means "clean, now".
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def wait_tcp(addresses: Sequence[str], timeout: float) -> bool:
    """Wait until every host:port accepts TCP connections; False on timeout."""
    pending = list(addresses)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [a for a in pending if not _process.tcp_open(*_split(a))]
        if pending and not _process.sleep_until(deadline, 0.2):
            print(f"wait-tcp: still closed after {timeout:.0f}s: {' '.join(pending)}", file=sys.stderr)
            return False
    return True


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {address!r}")
    return host, int(port)


def _address(value: str) -> str:
    _split(value)
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analytics_testing.local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("postgres", help="run PostgreSQL+TimescaleDB in the foreground (initdb first)")
    pg.add_argument("--data-dir", type=Path, required=True)
    pg.add_argument("--port", type=int, required=True)
    pg.add_argument("--license", choices=LICENSES, default="apache")
    ns = sub.add_parser("nats", help="run nats-server with JetStream in the foreground")
    ns.add_argument("--data-dir", type=Path, required=True)
    ns.add_argument("--port", type=int, required=True)
    wt = sub.add_parser("wait-tcp", help="wait until every host:port accepts TCP connections")
    wt.add_argument("addresses", nargs="+", type=_address, metavar="host:port")
    wt.add_argument("--timeout", type=float, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "postgres":
        server = LocalPostgres(args.data_dir, args.port, license=args.license)
        if server.ensure_initialized():
            print(f"postgres: initialized a new cluster in {server.data_dir}", file=sys.stderr, flush=True)
        # SIGINT is PostgreSQL's fast shutdown; its SIGTERM would wait for every client to disconnect.
        return run_foreground(
            server.server_command(), stop_signal=signal.SIGINT, cwd=server.data_dir, drop_privileges=True
        )
    if args.command == "nats":
        nats = LocalNats(args.data_dir, args.port)
        command = nats.server_command()
        return run_foreground(command, stop_signal=signal.SIGINT, cwd=nats.data_dir)
    return 0 if wait_tcp(args.addresses, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
