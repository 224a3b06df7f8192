"""AuthService servicer: decode, check, call the store, encode."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_grpc.errors import ServiceError, not_found, permission_denied, unauthenticated
from analytics_grpc.metadata import Context, credential
from auth_service import keys
from auth_service.sites import parse_domain, parse_name, parse_timezone
from auth_service.store import AuthStore, DomainTaken, KeyRow, KeySpec, SiteChanges, SiteRow

log = structlog.get_logger("analytics.auth")

DEFAULT_SCOPES: list[int] = [auth_pb2.SCOPE_INGEST, auth_pb2.SCOPE_READ]
ADMIN_KEY_ID = "admin"


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_site_id(value: str, field: str = "site_id") -> uuid.UUID:
    if not value:
        raise ServiceError.field(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ServiceError.field(field, "must be a UUID") from None


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def site_message(row: SiteRow) -> auth_pb2.Site:
    return auth_pb2.Site(
        site_id=str(row.site_id),
        name=row.name,
        create_time=_timestamp(row.created_at),
        domain=row.domain or "",
        timezone=row.timezone,
    )


def _domain_taken(error: DomainTaken) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"domain: {error}")


def key_message(row: KeyRow) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        key_id=row.key_id,
        site_id=str(row.site_id),
        scopes=[auth_pb2.Scope.Name(s) for s in row.scopes],
        create_time=_timestamp(row.created_at),
        revoke_time=_timestamp(row.revoked_at),
        rate_limit_per_second=row.rate_limit_per_second,
        rate_limit_burst=row.rate_limit_burst,
        allowed_origins=row.allowed_origins,
    )


MAX_ORIGINS = 50
MAX_RATE = 1_000_000


def parse_origins(values: list[str]) -> tuple[str, ...]:
    """Normalises scheme://host[:port] origins, naming the first bad one."""
    if len(values) > MAX_ORIGINS:
        raise ServiceError.field("allowed_origins", f"must have at most {MAX_ORIGINS} entries")
    origins: list[str] = []
    for index, value in enumerate(values):
        try:
            parts = urlsplit(value.strip())
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ServiceError.field(
                f"allowed_origins[{index}]", "must be an origin like https://example.com"
            )
        origins.append(f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else ""))
    return tuple(sorted(set(origins)))


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        store: AuthStore,
        admin_token: str,
        internal_token: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        announce_revocation: Callable[[str], Awaitable[None]] | None = None,
        announce_site_deleted: Callable[[str, datetime], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        # Tells every owner of per-site data to delete a deleted site's (analytics_bus.sites).
        self._announce_site_deleted = announce_site_deleted
        # Tells the services that cache key look-ups to drop a revoked key now.
        self._announce_revocation = announce_revocation
        self._admin_token = admin_token
        self._internal_token = internal_token
        # Only the visitor salts' day comes from it: tests move days without waiting for midnight.
        self._clock = clock

    def _require_admin(self, context: Context) -> None:
        given = credential(context)
        if not given:
            raise unauthenticated("admin token required: send Authorization: Bearer <token>")
        if not keys.same_secret(given, self._admin_token):
            if keys.looks_like_key(given):
                raise permission_denied("this operation needs the admin token, not a site API key")
            raise unauthenticated("invalid admin token")

    async def _caller(self, context: Context) -> KeyRow | None:
        """The calling key, or None for the admin token; unknown and revoked keys are refused."""
        given = credential(context)
        if not given:
            raise unauthenticated()
        if keys.same_secret(given, self._admin_token):
            return None
        row = await self._store.key_by_hash(keys.digest(given)) if keys.looks_like_key(given) else None
        if row is None or row.revoked_at is not None:
            raise unauthenticated("api key is invalid or revoked")
        return row

    async def _site_for(self, context: Context, site_id: uuid.UUID, *, manage: bool) -> SiteRow:
        """The site, if the caller is the admin or a key of that site (with the admin scope to manage)."""
        caller = await self._caller(context)
        site = await self._store.site(site_id)
        if caller is not None and caller.site_id != site_id:
            if site is None:
                raise not_found(f"site {site_id} not found")
            raise permission_denied("api key belongs to another site")
        if site is None:
            raise not_found(f"site {site_id} not found")
        if manage and caller is not None and auth_pb2.SCOPE_ADMIN not in caller.scopes:
            raise permission_denied("api key lacks the admin scope")
        return site

    async def CreateSite(
        self, request: auth_pb2.CreateSiteRequest, context: Context
    ) -> auth_pb2.CreateSiteResponse:
        self._require_admin(context)
        name = parse_name(request.name)
        domain = parse_domain(request.domain)
        timezone = parse_timezone(request.timezone)
        key_id, api_key = keys.new_key()
        try:
            site, key = await self._store.create_site(
                name,
                key_id,
                keys.digest(api_key),
                KeySpec(DEFAULT_SCOPES),
                domain=domain or None,
                timezone=timezone,
            )
        except DomainTaken as error:
            raise _domain_taken(error) from None
        log.info("site created", site_id=str(site.site_id), key_id=key_id)
        return auth_pb2.CreateSiteResponse(
            site_id=str(site.site_id), api_key=api_key, site=site_message(site), key=key_message(key)
        )

    async def ListSites(
        self, request: auth_pb2.ListSitesRequest, context: Context
    ) -> auth_pb2.ListSitesResponse:
        caller = await self._caller(context)
        if caller is None:
            sites = await self._store.sites()
        else:
            own = await self._store.site(caller.site_id)
            sites = [own] if own is not None else []
        return auth_pb2.ListSitesResponse(sites=[site_message(site) for site in sites])

    async def GetSite(self, request: auth_pb2.GetSiteRequest, context: Context) -> auth_pb2.GetSiteResponse:
        site = await self._site_for(context, parse_site_id(request.site_id), manage=False)
        return auth_pb2.GetSiteResponse(site=site_message(site))

    async def DeleteSite(
        self, request: auth_pb2.DeleteSiteRequest, context: Context
    ) -> auth_pb2.DeleteSiteResponse:
        self._require_admin(context)
        site_id = parse_site_id(request.site_id)
        deleted = await self._store.delete_site(site_id)
        if deleted is None:
            raise not_found(f"site {site_id} not found")
        for key_id in deleted.key_ids:
            if self._announce_revocation is not None:
                await self._announce_revocation(key_id)
        log.info("site deleted", site_id=str(site_id), keys=len(deleted.key_ids), again=deleted.already)
        if self._announce_site_deleted is not None:
            try:
                await self._announce_site_deleted(str(site_id), deleted.deleted_at)
            except Exception as error:
                log.warning("site deletion not announced", site_id=str(site_id), error=str(error))
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the site and its keys are deleted, but its data owners could not be told: ask again",
                ) from None
        return auth_pb2.DeleteSiteResponse(
            site_id=str(site_id),
            keys_deleted=len(deleted.key_ids),
            deleted_at=deleted.deleted_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            already_deleted=deleted.already,
        )

    async def UpdateSite(
        self, request: auth_pb2.UpdateSiteRequest, context: Context
    ) -> auth_pb2.UpdateSiteResponse:
        site_id = parse_site_id(request.site_id)
        changes = SiteChanges(
            name=parse_name(request.name) if request.HasField("name") else None,
            domain=parse_domain(request.domain) if request.HasField("domain") else None,
            timezone=parse_timezone(request.timezone) if request.HasField("timezone") else None,
        )
        await self._site_for(context, site_id, manage=True)
        try:
            site = await self._store.update_site(site_id, changes)
        except DomainTaken as error:
            raise _domain_taken(error) from None
        if site is None:
            raise not_found(f"site {site_id} not found")
        log.info("site updated", site_id=str(site_id))
        return auth_pb2.UpdateSiteResponse(site=site_message(site))

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: Context
    ) -> auth_pb2.ListApiKeysResponse:
        site_id = parse_site_id(request.site_id)
        await self._site_for(context, site_id, manage=True)
        rows = await self._store.keys_of_site(site_id)
        return auth_pb2.ListApiKeysResponse(keys=[key_message(row) for row in rows])

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: Context
    ) -> auth_pb2.CreateApiKeyResponse:
        self._require_admin(context)
        site_id = parse_site_id(request.site_id)
        scopes: list[int] = sorted(set(request.scopes)) or DEFAULT_SCOPES
        for index, scope in enumerate(request.scopes):
            if scope == auth_pb2.SCOPE_UNSPECIFIED or scope not in auth_pb2.Scope.values():
                raise ServiceError.field(
                    f"scopes[{index}]", "must be SCOPE_INGEST, SCOPE_READ or SCOPE_ADMIN"
                )
        for field in ("rate_limit_per_second", "rate_limit_burst"):
            if getattr(request, field) > MAX_RATE:
                raise ServiceError.field(field, f"must be at most {MAX_RATE}")
        spec = KeySpec(
            scopes=scopes,
            rate_limit_per_second=request.rate_limit_per_second,
            rate_limit_burst=request.rate_limit_burst,
            allowed_origins=parse_origins(list(request.allowed_origins)),
        )
        key_id, api_key = keys.new_key()
        row = await self._store.create_key(site_id, key_id, keys.digest(api_key), spec)
        if row is None:
            raise not_found(f"site {site_id} not found")
        log.info("api key created", site_id=str(site_id), key_id=key_id)
        return auth_pb2.CreateApiKeyResponse(api_key=api_key, key=key_message(row))

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: Context
    ) -> auth_pb2.RevokeApiKeyResponse:
        self._require_admin(context)
        if not request.key_id:
            raise ServiceError.field("key_id", "is required")
        row = await self._store.revoke_key(request.key_id)
        if row is None:
            raise not_found(f"api key {request.key_id} not found")
        log.info("api key revoked", key_id=row.key_id, site_id=str(row.site_id))
        if self._announce_revocation is not None:
            try:
                await self._announce_revocation(row.key_id)
            except Exception as error:  # the callers' cache TTL still ends the key's life
                log.warning("revocation not announced", key_id=row.key_id, error=str(error))
        return auth_pb2.RevokeApiKeyResponse(key=key_message(row))

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Context
    ) -> auth_pb2.AuthenticateResponse:
        if request.site_id and request.site_domain:
            raise ServiceError.field("site_domain", "must not be set together with site_id")
        site_id = parse_site_id(request.site_id) if request.site_id else None
        domain = parse_domain(request.site_domain, "site_domain") if request.site_domain else ""
        if not request.api_key:
            raise unauthenticated()
        admin = keys.same_secret(request.api_key, self._admin_token)
        row = None
        if not admin:
            row = (
                await self._store.key_by_hash(keys.digest(request.api_key))
                if keys.looks_like_key(request.api_key)
                else None
            )
            if row is None or row.revoked_at is not None:
                raise unauthenticated("api key is invalid or revoked")
        site: SiteRow | None = None
        if site_id is not None or domain:
            site = (
                await self._store.site(site_id)
                if site_id is not None
                else await self._store.site_by_domain(domain)
            )
            if site is None:
                raise not_found(f"site {site_id or domain} not found")
            if row is not None and row.site_id != site.site_id:
                raise permission_denied("api key belongs to another site")
        key = (
            auth_pb2.ApiKey(key_id=ADMIN_KEY_ID, scopes=[auth_pb2.SCOPE_ADMIN])
            if row is None
            else key_message(row)
        )
        return auth_pb2.AuthenticateResponse(key=key, site=site_message(site) if site is not None else None)

    def _require_internal(self, context: Context, what: str) -> None:
        given = credential(context)
        if not given:
            raise unauthenticated("the internal service token is required")
        if not keys.same_secret(given, self._internal_token):
            raise permission_denied(f"only internal services may read {what}")

    async def GetVisitorSalts(
        self, request: auth_pb2.GetVisitorSaltsRequest, context: Context
    ) -> auth_pb2.GetVisitorSaltsResponse:
        self._require_internal(context, "visitor salts")
        salts = await self._store.visitor_salts(self._clock().date())
        return auth_pb2.GetVisitorSaltsResponse(
            salts=[auth_pb2.VisitorSalt(day=day.isoformat(), salt=salt) for day, salt in salts]
        )

    async def GetIdentitySecret(
        self, request: auth_pb2.GetIdentitySecretRequest, context: Context
    ) -> auth_pb2.GetIdentitySecretResponse:
        self._require_internal(context, "identity secrets")
        site_id = parse_site_id(request.site_id)
        secret = await self._store.identity_secret(site_id)
        if secret is None:
            raise not_found(f"site {site_id} not found")
        return auth_pb2.GetIdentitySecretResponse(secret=secret)
