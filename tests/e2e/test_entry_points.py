"""Every service's entry point refuses invalid settings with one line that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

SERVICES = ("auth", "ingest", "processor", "query", "gateway")


@pytest.mark.parametrize("service", SERVICES)
def test_an_invalid_setting_ends_the_process_with_one_line(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["ANALYTICS_EVENT_LOOP"] = "trio"
    done = subprocess.run(
        [sys.executable, "-m", f"{service}_service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"{service}: invalid settings: ANALYTICS_EVENT_LOOP='trio' must be one of uvloop, asyncio"
    )
    assert done.stdout == ""
