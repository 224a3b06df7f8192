"""Key revocations on core NATS: auth announces a revoked key's id, and every service that caches
key look-ups drops that key at once instead of at the end of its cache TTL."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("analytics.bus")

REVOKED_SUBJECT = "analytics.auth.revoked"


async def announce_revocation(nc: Client, key_id: str) -> None:
    """Tells every follower that ``key_id`` is revoked (at most once; their TTL is the safety net)."""
    await nc.publish(REVOKED_SUBJECT, key_id.encode())


async def follow_revocations(nc: Client, on_revoked: Callable[[str], None]) -> Subscription:
    """Calls ``on_revoked(key_id)`` for every announced revocation."""

    async def received(message: Msg) -> None:
        key_id = message.data.decode(errors="replace")
        on_revoked(key_id)
        log.info("api key revoked", key_id=key_id)

    return await nc.subscribe(REVOKED_SUBJECT, cb=received)
