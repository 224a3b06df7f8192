"""Per-process CPU time and memory from /proc, summed over each service's process tree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
OTHER = "other processes (not this benchmark)"
BENCH = "bench (load generator)"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(root: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """root and all its live descendants."""
    kids = _children() if children is None else children
    found, stack = [], [root]
    while stack and len(found) < 10_000:
        pid = stack.pop()
        found.append(pid)
        stack.extend(kids.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """user+system time of the processes and of their reaped children."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14-17 of stat; here shifted by the pid and comm.
            total += sum(int(v) for v in fields[11:15])
    return total / _TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine used (every core), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of one process."""
    return _status_kb(pid, "VmHWM")


def pss_kb(pids: list[int]) -> int:
    """Proportional set size summed: shared pages (e.g. PostgreSQL's shared buffers) counted once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Monitor:
    """Tracks named process trees: CPU per phase and memory peaks sampled along the way."""

    roots: dict[str, list[int]]
    peak_hwm_kb: dict[str, int] = field(default_factory=dict)
    peak_pss_kb: dict[str, int] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        children = _children()
        usage = {name: cpu_seconds(self._tree(pids, children)) for name, pids in self.roots.items()}
        times = os.times()
        # Includes its children: wrk, the open-loop client and, when profiling, py-spy.
        usage[BENCH] = times.user + times.system + times.children_user + times.children_system
        # Whatever else ran on the machine meanwhile (other jobs): the noise in this phase's figures.
        usage[OTHER] = machine_busy_seconds() - sum(usage.values())
        return usage

    def sample_memory(self) -> None:
        children = _children()
        for name, roots in self.roots.items():
            pids = self._tree(roots, children)
            # VmHWM per process is a peak already; a tree's peak is approximated by their sum.
            hwm = sum(hwm_kb(pid) for pid in pids)
            self.peak_hwm_kb[name] = max(self.peak_hwm_kb.get(name, 0), hwm)
            self.peak_pss_kb[name] = max(self.peak_pss_kb.get(name, 0), pss_kb(pids))

    def root_hwm_kb(self) -> dict[str, int]:
        return {name: sum(hwm_kb(pid) for pid in pids) for name, pids in self.roots.items()}

    @staticmethod
    def _tree(roots: list[int], children: Mapping[int, list[int]]) -> list[int]:
        return [pid for root in roots for pid in tree(root, children)]


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}


__all__ = ["Monitor", "cpu_delta", "cpu_seconds", "hwm_kb", "pss_kb", "tree"]
