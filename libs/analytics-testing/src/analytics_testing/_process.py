"""Child-process helpers shared by the PostgreSQL and NATS launchers."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# PostgreSQL refuses to run as root; deploy/local/install-system.sh creates this user for root.
RUN_USER = "analytics"


def is_root() -> bool:
    return os.geteuid() == 0


def run_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root needs the unprivileged user {RUN_USER!r} (PostgreSQL refuses root); "
            "create it with deploy/local/install-system.sh or `make setup`"
        ) from None


def drop_privileges_kwargs() -> dict[str, Any]:
    """Popen keyword arguments that run the child as RUN_USER when we are root, else nothing."""
    if not is_root():
        return {}
    user = run_user()
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def hand_over(path: Path) -> None:
    """Make path owned by RUN_USER (when root) and reachable by it through every parent directory."""
    if not is_root():
        return
    user = run_user()
    os.chown(path, user.pw_uid, user.pw_gid)
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == user.pw_uid or st.st_mode & stat.S_IXOTH:
            continue
        # Search permission only (no listing): the server must chdir into its data directory.
        os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        print(f"analytics-testing: allowed other users to traverse {parent}", file=sys.stderr, flush=True)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def logged_since(path: Path, offset: int, text: str) -> bool:
    """Whether text was written to the log after offset (this start, not an earlier one)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return text.encode() in log.read()
    except FileNotFoundError:
        return False


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int:
    """Send sig, wait up to timeout, then escalate to SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def sleep_until(deadline: float, step: float = 0.1) -> bool:
    """Sleep a step; False once the deadline has passed."""
    if time.monotonic() >= deadline:
        return False
    time.sleep(step)
    return True


__all__ = [
    "RUN_USER",
    "drop_privileges_kwargs",
    "hand_over",
    "is_root",
    "log_size",
    "log_tail",
    "logged_since",
    "run_user",
    "sleep_until",
    "tcp_open",
    "terminate",
]
