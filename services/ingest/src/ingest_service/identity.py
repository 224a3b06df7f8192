"""Sites' identity secrets, fetched from the auth service once per site and kept: they never change."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Iterable

import grpc
import structlog

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_grpc.errors import not_found, unavailable

log = structlog.get_logger("analytics.ingest.identity")

# About 220 bytes per site (measured): 100,000 sites take 22 MB. Beyond that the sites least
# recently seen are dropped, and fetched again when they come back.
MAX_SITES = 100_000
SECRET_BYTES = 32


class IdentitySecretCache:
    """Site id (16 bytes) -> identity secret.

    A secret never rotates, so an entry never expires. A site seen for the first time, created
    after this process started or not, costs one call to the auth service; the requests of other
    sites meanwhile neither wait nor take a lock, and concurrent requests of the new site share
    that one call.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        internal_token: str,
        *,
        timeout_s: float = 2.0,
        max_sites: int = MAX_SITES,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {internal_token}"),)
        self._timeout_s = timeout_s
        self._max_sites = max_sites
        self._secrets: OrderedDict[bytes, bytes] = OrderedDict()
        self._fetching: dict[bytes, asyncio.Task[bytes]] = {}

    async def secrets_for(self, site_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The secrets of these sites. Raises UNAVAILABLE when the auth service cannot be asked and
        NOT_FOUND for a site it does not know; neither answer is kept."""
        found: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        for site_id in site_ids:
            secret = self._secrets.get(site_id)
            if secret is None:
                missing.append(site_id)
            else:
                self._secrets.move_to_end(site_id)
                found[site_id] = secret
        if missing:
            fetched = await asyncio.gather(*(self._shared_fetch(site_id) for site_id in missing))
            found.update(zip(missing, fetched, strict=True))
        return found

    def _shared_fetch(self, site_id: bytes) -> asyncio.Future[bytes]:
        task = self._fetching.get(site_id)
        if task is None:
            task = asyncio.create_task(self._fetch(site_id))
            self._fetching[site_id] = task
            task.add_done_callback(lambda done: self._fetched(site_id, done))
        # A caller that gives up (its deadline passed) must not cancel the call others wait for.
        return asyncio.shield(task)

    def _fetched(self, site_id: bytes, task: asyncio.Task[bytes]) -> None:
        del self._fetching[site_id]
        if task.cancelled() or task.exception() is not None:  # retrieved: a later request retries
            return
        self._secrets[site_id] = task.result()
        while len(self._secrets) > self._max_sites:
            self._secrets.popitem(last=False)

    async def _fetch(self, site_id: bytes) -> bytes:
        site = str(uuid.UUID(bytes=site_id))
        try:
            reply = await self._stub.GetIdentitySecret(
                auth_pb2.GetIdentitySecretRequest(site_id=site),
                metadata=self._metadata,
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"site {site} not found") from None
            log.warning("identity secret unavailable", site_id=site, code=error.code().name)
            raise unavailable("auth service unavailable, retry later") from None
        secret: bytes = reply.secret
        if len(secret) != SECRET_BYTES:
            # An empty key would make the ids plain hashes of the user ids: never use it.
            log.error("identity secret malformed", site_id=site, length=len(secret))
            raise unavailable("auth service answered a malformed identity secret")
        return secret
