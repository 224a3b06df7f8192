"""The loop a service runs on: uvloop unless the deployment asks for the standard library's."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvloop

from analytics_config import SettingsError, event_loop


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    # run() freezes what exists (a service's start-up objects); give this process's back.
    yield
    gc.unfreeze()


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


def test_what_exists_before_the_loop_starts_is_frozen_out_of_the_collector() -> None:
    class StartUp:
        pass

    built = StartUp()

    async def frozen() -> tuple[int, bool]:
        return gc.get_freeze_count(), any(o is built for o in gc.get_objects())

    count, still_collected = event_loop.run(frozen(), environ={})
    assert count > 0
    assert not still_collected


@dataclass(frozen=True)
class _Settings:
    log_level: str = "DEBUG"


def test_main_loads_configures_then_serves_on_the_loop() -> None:
    seen: list[object] = []
    settings = _Settings()

    def configure_logging(level: str, *, service: str) -> None:
        seen.append((level, service))

    async def serve(given: _Settings) -> None:
        seen.append((given, event_loop.running_loop_name()))

    event_loop.main("svc", lambda: settings, serve, configure_logging)
    assert seen == [("DEBUG", "svc"), (settings, "uvloop")]


def test_main_ends_with_one_line_naming_an_invalid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    def load() -> _Settings:
        raise SettingsError("ANALYTICS_NATS_URL is required but not set")

    def never(*_: object, **__: object) -> None:
        raise AssertionError("nothing may start")

    with pytest.raises(SystemExit) as exited:
        event_loop.main("ingest", load, never, never)  # type: ignore[arg-type]
    assert exited.value.code == "ingest: invalid settings: ANALYTICS_NATS_URL is required but not set"
    assert exited.value.__cause__ is None and exited.value.__suppress_context__

    monkeypatch.setenv("ANALYTICS_EVENT_LOOP", "trio")
    with pytest.raises(SystemExit) as exited:
        event_loop.main("query", _Settings, never, never)  # type: ignore[arg-type]
    assert (
        exited.value.code
        == "query: invalid settings: ANALYTICS_EVENT_LOOP='trio' must be one of uvloop, asyncio"
    )
