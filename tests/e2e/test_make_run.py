"""`make run`'s script brings the whole system up on private ports, answers, and stops on Ctrl+C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analytics_testing.ports import free_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _consecutive_free_ports(count: int) -> list[int]:
    """``count`` consecutive ports that were free a moment ago (the ingest processes' metrics)."""
    for _ in range(100):
        (first,) = free_ports(1)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return list(range(first, first + count))
    raise RuntimeError(f"no {count} consecutive free ports")


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


# As from a terminal: SIGINT and SIGTERM handled by default when the script starts. A signal the test
# process happens to ignore would stay ignored across exec, the script could not trap it, and Ctrl+C
# would end it with honcho's 130.
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys\n"
    "for sig in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(sig, signal.SIG_DFL)\n"
    "os.execvp('bash', ['bash', 'deploy/local/run.sh'])\n"
)


@pytest.mark.parametrize("ingest_processes", [1, 2])
def test_the_run_script_serves_and_ctrl_c_stops_everything(tmp_path: Path, ingest_processes: int) -> None:
    ports = dict(
        zip(
            (
                *("PG", "NATS", "HTTP", "AUTH", "INGEST", "QUERY", "PROCESSOR", "EDGE_ADMIN", "QUERY_WS"),
                *("AUTH_METRICS", "QUERY_METRICS", "PROCESSOR_METRICS"),
            ),
            free_ports(12),
            strict=True,
        )
    )
    ingest_metrics = _consecutive_free_ports(ingest_processes)
    ports.update({f"INGEST_METRICS_{n}": port for n, port in enumerate(ingest_metrics, 1)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["ANALYTICS_DATA_DIR"] = str(tmp_path / "data")
    # The README's way to run several ingest processes on one port.
    env["ANALYTICS_INGEST_PROCESSES"] = str(ingest_processes)
    for name in ("PG", "NATS", "HTTP"):
        env[f"ANALYTICS_{name}_PORT"] = str(ports[name])
    for name in (
        "AUTH",
        "INGEST",
        "QUERY",
        "PROCESSOR",
        "EDGE_ADMIN",
        "QUERY_WS",
        "AUTH_METRICS",
        "QUERY_METRICS",
    ):
        env[f"ANALYTICS_{name}_ADDR"] = f"127.0.0.1:{ports[name]}"
    env["ANALYTICS_PROCESSOR_METRICS_ADDR"] = f"127.0.0.1:{ports['PROCESSOR_METRICS']}"
    env["ANALYTICS_INGEST_METRICS_ADDR"] = f"127.0.0.1:{ingest_metrics[0]}"
    output = tmp_path / "run.log"
    with output.open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-c", _AS_FROM_A_TERMINAL],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "Press Ctrl+C to stop" not in output.read_text(errors="replace"):
            assert run.poll() is None, output.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, output.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['HTTP']}/health", timeout=10) as answer:
            assert answer.status == 200
        # The edge is Envoy: its admin answers on loopback, and it serves the API's description.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['EDGE_ADMIN']}/ready", timeout=10) as answer:
            assert answer.read() == b"LIVE\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['HTTP']}/openapi.json", timeout=10) as answer:
            assert answer.status == 200
        # The banner says where every process's metrics are, and each of them answers.
        banner = output.read_text(errors="replace").split("Metrics", 1)[1].split("gRPC", 1)[0]
        urls = re.findall(r"http://\S+", banner)
        assert len(urls) == 4 + ingest_processes, banner
        for url in urls:
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert b"# TYPE" in answer.read(), url
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl+C in its terminal does
        assert run.wait(timeout=90) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    text = output.read_text(errors="replace")
    # The services wait for PostgreSQL and NATS instead of failing to connect while they start.
    assert "error connecting" not in text and "Traceback" not in text, text[-4000:]
    assert [name for name, port in ports.items() if not _closed(port)] == []
    serving = {line.split("|")[0].split()[-1] for line in text.splitlines() if '"event":"serving"' in line}
    assert {f"ingest.{n}" for n in range(1, ingest_processes + 1)} <= serving, sorted(serving)
