"""The day's secret visitor salt, fetched from the auth service and cached until the day changes."""

from __future__ import annotations

import asyncio
from datetime import date

import grpc
import structlog

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_grpc.errors import unavailable

log = structlog.get_logger("analytics.ingest.salts")


class SaltCache:
    def __init__(self, channel: grpc.aio.Channel, internal_token: str, timeout_s: float = 2.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {internal_token}"),)
        self._timeout_s = timeout_s
        self._salts: dict[date, bytes] = {}
        self._lock = asyncio.Lock()

    async def salt_for(self, day: date) -> bytes:
        salt = self._salts.get(day)
        if salt is not None:
            return salt
        async with self._lock:  # one fetch for all the requests that arrive at midnight
            salt = self._salts.get(day)
            if salt is None:
                await self._refresh()
                salt = self._salts.get(day)
        if salt is None:
            # The auth service's clock is behind ours; do not invent a salt it does not know.
            raise unavailable("visitor salt not available yet, retry shortly")
        return salt

    async def _refresh(self) -> None:
        try:
            reply = await self._stub.GetVisitorSalts(
                auth_pb2.GetVisitorSaltsRequest(), metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            log.warning("visitor salts unavailable", code=error.code().name)
            raise unavailable("auth service unavailable, retry later") from None
        self._salts = {date.fromisoformat(s.day): s.salt for s in reply.salts}
