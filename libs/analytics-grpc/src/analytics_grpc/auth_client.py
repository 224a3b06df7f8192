"""AuthClient: resolves API keys through the auth service, with a short local cache."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_grpc.errors import ServiceError, unauthenticated

# Errors that describe the key itself: worth caching briefly so a flood of bad requests does not
# become a flood of auth lookups.
_DEFINITIVE = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key of one site, or the admin (site_id empty)."""

    key_id: str
    site_id: str
    scopes: frozenset[int]
    rate_limit_per_second: int = 0
    rate_limit_burst: int = 0
    allowed_origins: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return auth_pb2.SCOPE_ADMIN in self.scopes and not self.site_id

    def require(self, scope: int) -> None:
        if self.is_admin or scope in self.scopes:
            return
        name = auth_pb2.Scope.Name(scope).removeprefix("SCOPE_").lower()
        raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"api key lacks the {name} scope")


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What callers need to know about a site: its id, domain and time zone."""

    site_id: str
    name: str
    domain: str
    timezone: str


@dataclass(frozen=True, slots=True)
class SiteAccess:
    """A caller and the site it asked for (checked: the admin, or a key of that site)."""

    principal: Principal
    site: SiteInfo


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A definitive failure, cached briefly."""

    code: grpc.StatusCode
    message: str


_Answer = tuple[Principal, SiteInfo | None]
_CacheKey = tuple[bytes, str, str]


class AuthClient:
    """Authenticates keys against the auth service; answers are cached for ``ttl_s`` seconds.

    ``revoke(key_id)`` (fed by auth's revocation announcements) refuses a key at once; without an
    announcement a revoked key keeps working for at most ``ttl_s`` in each caller.
    """

    def __init__(
        self,
        address: str,
        *,
        ttl_s: float = 10.0,
        negative_ttl_s: float = 2.0,
        timeout_s: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._timeout_s = timeout_s
        self._max_entries = max_entries
        self._cache: OrderedDict[_CacheKey, tuple[float, _Answer | _Refusal]] = OrderedDict()
        self._inflight: dict[_CacheKey, asyncio.Future[_Answer]] = {}
        # Revoked key ids, remembered for as long as an answer fetched before the revocation could
        # still be cached: a look-up in flight when the announcement came must not resurrect the key.
        self._revoked: OrderedDict[str, float] = OrderedDict()

    async def authenticate(self, api_key: str | None, site_id: str) -> Principal:
        """The key's principal; with ``site_id``, only if the key may act for that site."""
        principal, _ = await self._answer(api_key, site_id, "")
        return principal

    async def site_access(self, api_key: str | None, *, site_id: str = "", domain: str = "") -> SiteAccess:
        """The principal and the site named by its UUID or by its domain (one of them), cached alike.

        A site's settings (its time zone) therefore reach callers within ``ttl_s`` of a change.
        """
        principal, site = await self._answer(api_key, site_id, domain)
        if site is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "auth service named no site, retry later")
        return SiteAccess(principal, site)

    async def _answer(self, api_key: str | None, site_id: str, domain: str) -> _Answer:
        if not api_key:
            raise unauthenticated()
        # The cache is keyed by a digest so raw keys are not kept around in memory longer than needed.
        cache_key = (hashlib.sha256(api_key.encode()).digest(), site_id, domain)
        now = time.monotonic()
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(cache_key)
            if isinstance(hit[1], _Refusal):
                raise ServiceError(hit[1].code, hit[1].message)
            return self._unless_revoked(hit[1])
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return self._unless_revoked(await asyncio.shield(pending))
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = future
        try:
            answer = await self._lookup(api_key, site_id, domain, cache_key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(answer)
            return self._unless_revoked(answer)
        finally:
            del self._inflight[cache_key]

    def revoke(self, key_id: str) -> None:
        """Refuses ``key_id`` from now on, whatever is cached or in flight."""
        now = time.monotonic()
        self._revoked[key_id] = now + self._ttl_s + self._timeout_s
        self._revoked.move_to_end(key_id)
        while self._revoked and (next(iter(self._revoked.values())) <= now or len(self._revoked) > 100_000):
            self._revoked.popitem(last=False)
        stale = [
            k for k, (_, v) in self._cache.items() if not isinstance(v, _Refusal) and v[0].key_id == key_id
        ]
        for cache_key in stale:
            del self._cache[cache_key]

    def _unless_revoked(self, answer: _Answer) -> _Answer:
        until = self._revoked.get(answer[0].key_id)
        if until is not None and until > time.monotonic():
            raise unauthenticated("api key is invalid or revoked")
        return answer

    async def _lookup(self, api_key: str, site_id: str, domain: str, cache_key: _CacheKey) -> _Answer:
        try:
            response = await self._stub.Authenticate(
                auth_pb2.AuthenticateRequest(api_key=api_key, site_id=site_id, site_domain=domain),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _DEFINITIVE:
                refusal = _Refusal(error.code(), error.details() or error.code().name.lower())
                self._store(cache_key, refusal, self._negative_ttl_s)
                raise ServiceError(refusal.code, refusal.message) from None
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "auth service unavailable, retry later") from None
        key = response.key
        principal = Principal(
            key_id=key.key_id,
            site_id=key.site_id,
            scopes=frozenset(key.scopes),
            rate_limit_per_second=key.rate_limit_per_second,
            rate_limit_burst=key.rate_limit_burst,
            allowed_origins=frozenset(key.allowed_origins),
        )
        site = None
        if response.HasField("site"):
            found = response.site
            site = SiteInfo(found.site_id, found.name, found.domain, found.timezone or "UTC")
        answer = (principal, site)
        self._store(cache_key, answer, self._ttl_s)
        return answer

    def _store(self, cache_key: _CacheKey, value: _Answer | _Refusal, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        self._cache[cache_key] = (time.monotonic() + ttl_s, value)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the auth service, for its other internal RPCs."""
        return self._channel

    def invalidate(self) -> None:
        self._cache.clear()

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

    async def close(self) -> None:
        await self._channel.close(grace=None)
