"""HTTP through the edge: wrk for maximum throughput, the open-loop client for latency at a fixed rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bench.environment import Site
from bench.events import RUN, id_prefix

LUA = Path(__file__).resolve().parent / "wrk" / "event.lua"
REPO = Path(__file__).resolve().parents[1]


async def _run(command: list[str], timeout_s: float, *, capture: bool) -> tuple[int, str]:
    """Runs a child with a hard timeout; the child is killed if it overruns or we are cancelled."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE if capture else None,
        stderr=asyncio.subprocess.STDOUT if capture else None,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5)
        raise
    return process.returncode or 0, (stdout or b"").decode(errors="replace")


def read_ids(paths: list[Path]) -> list[str]:
    ids: list[str] = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            ids.extend(line.strip() for line in path.read_text().splitlines() if line.strip())
    return ids


async def wrk_max(
    http_url: str, site: Site, phase: int, *, seconds: float, threads: int, connections: int, work_dir: Path
) -> tuple[dict[str, object], list[str]]:
    """Closed loop: ``connections`` connections send as fast as answers come back."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    command = [
        wrk,
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"{http_url}/api/event",
        "--",
        site.site_id,
        site.api_key,
        f"{RUN:08x}",
        str(phase),
        str(work_dir),
    ]
    code, output = await _run(command, seconds + 60, capture=True)
    summary_line = next((line for line in output.splitlines() if line.startswith("WRK_JSON ")), None)
    if code != 0 or summary_line is None:
        raise RuntimeError(f"wrk failed (exit {code}):\n{output[-2000:]}")
    summary: dict[str, object] = json.loads(summary_line.removeprefix("WRK_JSON "))
    duration_s = float(summary["duration_us"]) / 1e6  # type: ignore[arg-type]
    summary["ok_rps"] = round(float(summary["ok"]) / duration_s, 1) if duration_s else 0.0  # type: ignore[arg-type]
    ids = await asyncio.to_thread(lambda: read_ids(sorted(work_dir.glob("wrk-ids-*.txt"))))
    return summary, ids


async def open_loop(
    http_url: str,
    site: Site | None,
    phase: int,
    *,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
    progress: float,
    work_dir: Path,
    label: str = "http_latency",
) -> tuple[dict[str, object], list[str]]:
    """Fixed offered rate from a separate process; latency from each request's scheduled send time.
    POST /api/event for ``site``; without a site, GET /health (the edge's floor, no event stored)."""
    address = urlsplit(http_url)
    ids_path, out_path = work_dir / f"{label}-ids.txt", work_dir / f"{label}.json"
    command = [
        sys.executable,
        "-m",
        "bench.openloop",
        "--host",
        address.hostname or "127.0.0.1",
        "--port",
        str(address.port),
        "--label",
        label,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--connections",
        str(connections),
        "--progress",
        str(progress),
        "--ids",
        str(ids_path),
        "--out",
        str(out_path),
    ]
    if site is None:
        command += ["--request", "health"]
    else:
        command += ["--site", site.site_id, "--key", site.api_key, "--prefix", id_prefix(phase)]
    code, _ = await _run(command, seconds + warmup + 90, capture=False)
    if code != 0 or not out_path.exists():
        raise RuntimeError(f"the open-loop client failed (exit {code})")
    summary: dict[str, object] = json.loads(await asyncio.to_thread(out_path.read_text))
    return summary, await asyncio.to_thread(read_ids, [ids_path])
