"""A project-local nats-server with JetStream run as a child process."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nats
from nats.errors import Error as NatsError

from analytics_testing import _process

__all__ = ["DEFAULT_MAX_PAYLOAD", "ExternalNats", "LocalNats", "NatsServer", "jetstream_ready"]

# Batches of enriched events travel as one message; the server default (1 MB) is too small for them.
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
_CONF_NAME = "nats-server.conf"
_LOG_NAME = "nats-server.log"
_READY_LINE = "Server is ready"


async def _account_info(url: str, wait: float) -> None:
    async def quiet(_: Exception) -> None:
        # Refused connections are expected while the server starts; the caller retries.
        return None

    nc = await nats.connect(
        url, connect_timeout=wait, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet
    )
    try:
        await nc.jetstream(timeout=wait).account_info()
    finally:
        await nc.close()


def jetstream_ready(url: str, timeout: float = 2.0) -> bool:
    """Whether the server at url answers JetStream API requests (usable from inside an event loop)."""
    outcome: list[bool] = []

    def probe() -> None:
        try:
            asyncio.run(_account_info(url, timeout))
            outcome.append(True)
        except (NatsError, OSError, TimeoutError):
            outcome.append(False)

    # A private thread and loop: callers may be sync code running inside a test's event loop.
    worker = threading.Thread(target=probe, name="analytics-testing-nats-probe", daemon=True)
    worker.start()
    worker.join(timeout * 3)
    return bool(outcome and outcome[0])


class NatsServer(Protocol):
    """What tests need from a NATS server, whoever runs it."""

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class ExternalNats:
    """A NATS server someone else runs (reuse override, containers)."""

    url: str


class LocalNats:
    """nats-server on 127.0.0.1:port with JetStream stored under data_dir; restartable on the same data."""

    def __init__(self, data_dir: Path, port: int, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.max_payload = max_payload
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def server_command(self) -> list[str]:
        """The foreground server command line; writes the config file it refers to."""
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server is not installed: run `make setup`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / _CONF_NAME
        conf.write_text(
            f"# Written by analytics_testing.nats at every start.\nmax_payload: {self.max_payload}\n"
        )
        return [
            binary,
            "-c",
            str(conf),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.data_dir),
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start in the background; return once clients connect and JetStream answers."""
        if self.running:
            return
        command = self.server_command()
        offset = _process.log_size(self.log_path)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"nats-server exited with code {code} during start-up; log tail:\n"
                    + _process.log_tail(self.log_path)
                )
            # The log line proves the port belongs to this server, not to another one already on it.
            if (
                _process.logged_since(self.log_path, offset, _READY_LINE)
                and _process.tcp_open("127.0.0.1", self.port)
                and jetstream_ready(self.url)
            ):
                return
            if not _process.sleep_until(deadline):
                self.stop()
                raise TimeoutError(
                    f"nats-server on port {self.port} was not ready with JetStream within {timeout:.0f}s; "
                    "log tail:\n" + _process.log_tail(self.log_path)
                )

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown; a no-op when not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGINT: shut down (JetStream flushes its store) and exit 0; SIGTERM does the same but exits 1.
        if _process.terminate(proc, signal.SIGINT, timeout) == -signal.SIGKILL:
            raise RuntimeError(f"nats-server on port {self.port} had to be killed; see {self.log_path}")

    def __enter__(self) -> LocalNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
