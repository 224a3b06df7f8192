"""Machine facts, the printed table and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def machine() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except (OSError, ValueError):
        pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "worktree_modified": bool(status) if status is not None else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[tuple[str, Any, str]], title: str) -> str:
    """Rows of (name, value, note) as an aligned text table."""
    width = max(len(name) for name, _, _ in rows)
    values = [_fmt(value) for _, value, _ in rows]
    vwidth = max(len(v) for v in values)
    lines = [title, "-" * len(title)]
    for (name, _, note), value in zip(rows, values, strict=True):
        lines.append(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip())
    return "\n".join(lines)


def cpu_table(cpu: dict[str, float], wall_s: float, title: str, other: str) -> str:
    """CPU seconds per component; shares are of the benchmark's own CPU, 'other' shown apart."""
    ours = {name: seconds for name, seconds in cpu.items() if name != other}
    total = sum(ours.values()) or 1.0
    cores = os.cpu_count() or 1
    rows: list[tuple[str, Any, str]] = [
        (
            name,
            seconds,
            f"{seconds / wall_s * 100:5.1f}% of a core, {seconds / total * 100:5.1f}% of the stack+bench",
        )
        for name, seconds in sorted(ours.items(), key=lambda item: -item[1])
        if seconds > 0
    ]
    rows.append(
        ("total (stack + bench)", round(total, 3), f"{total / wall_s / cores * 100:5.1f}% of {cores} cores")
    )
    if other in cpu:
        rows.append(
            (
                other,
                round(max(cpu[other], 0.0), 3),
                f"{max(cpu[other], 0.0) / wall_s / cores * 100:5.1f}% of {cores} cores",
            )
        )
    return table(rows, f"{title}, {wall_s:.1f} s wall")


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
