"""Every service's entry point refuses invalid settings with one line that names the setting, and
loads grpc only after the services' gRPC engine setting is in place."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from analytics_config.grpc_runtime import DEFAULT_EXPERIMENTS

pytestmark = pytest.mark.e2e

SERVICES = ("auth", "ingest", "processor", "query")


def _stopped_at_settings(command: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python <command>`` with an invalid event loop, so a service's entry point ends once its
    imports are done and its settings are read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "GRPC_EXPERIMENTS"}
    env["ANALYTICS_EVENT_LOOP"] = "trio"
    env.update(extra)
    done = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    return done


@pytest.mark.parametrize("service", SERVICES)
def test_an_invalid_setting_ends_the_process_with_one_line(service: str) -> None:
    done = _stopped_at_settings(["-m", f"{service}_service"])
    assert done.stderr.strip() == (
        f"{service}: invalid settings: ANALYTICS_EVENT_LOOP='trio' must be one of uvloop, asyncio"
    )
    assert done.stdout == ""


# Runs a service's __main__ as `python -m` would, noting GRPC_EXPERIMENTS when grpc is first
# imported: gRPC core reads it then, and only then.
_WATCH_GRPC_IMPORT = """
import os, runpy, sys
seen = []
def hook(event, args):
    if event == "import" and args[0] == "grpc" and not seen:
        seen.append(os.environ.get("GRPC_EXPERIMENTS"))
sys.addaudithook(hook)
try:
    runpy.run_module(sys.argv[1], run_name="__main__", alter_sys=True)
finally:
    print("GRPC_EXPERIMENTS at import:", repr(seen[0]) if seen else "grpc never imported", file=sys.stderr)
"""


def _grpc_experiments_at_import(service: str, **extra: str) -> str:
    done = _stopped_at_settings(["-c", _WATCH_GRPC_IMPORT, f"{service}_service"], **extra)
    lines = [line for line in done.stderr.splitlines() if line.startswith("GRPC_EXPERIMENTS at import: ")]
    assert len(lines) == 1, done.stderr
    return lines[0].removeprefix("GRPC_EXPERIMENTS at import: ")


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_loads_with_the_services_engine_setting(service: str) -> None:
    assert _grpc_experiments_at_import(service) == repr(DEFAULT_EXPERIMENTS)


def test_a_deployment_setting_for_grpc_experiments_is_kept() -> None:
    assert _grpc_experiments_at_import("ingest", GRPC_EXPERIMENTS="") == repr("")
