"""Optional sampling profiles of the services with py-spy (BENCH_PYSPY=path/to/py-spy or 'py-spy')."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections import Counter
from pathlib import Path


def pyspy_binary(setting: str) -> str | None:
    if not setting or setting == "0":
        return None
    if setting == "1":
        setting = "py-spy"
    return shutil.which(setting) or (setting if Path(setting).exists() else None)


# Envoy is native code: py-spy profiles the Python services only.
PROFILED = {"e2e_batch": ("ingest", "processor"), "http_max": ("ingest",)}


async def record(binary: str, pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """Starts py-spy on pid for seconds, writing collapsed stacks ("raw") to out."""
    return await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "97",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def finish(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _short(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"; lines vary within one function.
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


# Frames of the project's own code: the inclusive ranking lists only these (not asyncio, runpy …).
PROJECT = (
    "ingest_service/",
    "processor_service/",
    "auth_service/",
    "query_service/",
    "analytics_grpc/",
    "analytics_bus/",
    "analytics_db/",
    "analytics_observability/",
    "enrich/",
)


def summarize(path: Path, top: int = 12) -> dict[str, object]:
    """Top functions by own (self) samples, and project functions by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "self_pct": [], "inclusive_pct": []}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if any(f"({package}" in frame for package in PROJECT) and "__main__" not in frame:
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total * 100, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}
