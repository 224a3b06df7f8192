"""The loop a service runs on: uvloop unless the deployment asks for the standard library's."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from analytics_config import SettingsError, event_loop


async def _loop_kind() -> tuple[type[asyncio.AbstractEventLoop], str]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()), event_loop.running_loop_name()


def test_uvloop_is_the_default() -> None:
    kind, name = event_loop.run(_loop_kind(), environ={})
    assert issubclass(kind, uvloop.Loop)
    assert name == "uvloop"


def test_the_standard_loop_on_request() -> None:
    kind, name = event_loop.run(_loop_kind(), environ={"ANALYTICS_EVENT_LOOP": "asyncio"})
    assert not issubclass(kind, uvloop.Loop)
    assert name == "asyncio"


def test_an_unknown_loop_is_a_settings_error_naming_the_variable_and_choices() -> None:
    main = _loop_kind()
    with pytest.raises(SettingsError, match=r"ANALYTICS_EVENT_LOOP='trio' must be one of uvloop, asyncio"):
        event_loop.run(main, environ={"ANALYTICS_EVENT_LOOP": "trio"})
    # The coroutine was closed, not left pending (that would warn, and warnings fail the suite).
    assert main.cr_frame is None


def test_the_result_and_exceptions_of_main_come_back() -> None:
    async def fails() -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        event_loop.run(fails(), environ={})
