"""SQL for schema auth: the only module that reads or writes it."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: uuid.UUID
    name: str
    created_at: datetime
    domain: str | None
    timezone: str


@dataclass(frozen=True, slots=True)
class SiteChanges:
    """What UpdateSite changes; None leaves a field as it is (domain "" removes the domain)."""

    name: str | None = None
    domain: str | None = None
    timezone: str | None = None


class DomainTaken(Exception):
    """Another site already has the domain."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"domain {domain} belongs to another site")
        self.domain = domain


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    site_id: uuid.UUID
    scopes: list[int]
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_second: int
    rate_limit_burst: int
    allowed_origins: list[str]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key may do."""

    scopes: list[int]
    rate_limit_per_second: int = 0
    rate_limit_burst: int = 0
    allowed_origins: tuple[str, ...] = ()


# Every statement returning a site lists these columns, in SiteRow's order.
_SITE_COLUMNS = "site_id, name, created_at, domain, timezone"
_SITE_BY_ID = f"SELECT {_SITE_COLUMNS} FROM auth.sites WHERE site_id = %s"  # noqa: S608 - constants only
_SITE_BY_DOMAIN = f"SELECT {_SITE_COLUMNS} FROM auth.sites WHERE domain = %s"  # noqa: S608 - constants only
_INSERT_SITE = f"""
INSERT INTO auth.sites (site_id, name, domain, timezone) VALUES (%s, %s, %s, %s) RETURNING {_SITE_COLUMNS}
"""  # noqa: S608 - constants only
_SITES = f"SELECT {_SITE_COLUMNS} FROM auth.sites ORDER BY created_at, site_id"  # noqa: S608 - constants only
# Every statement returning a key lists these columns, in KeyRow's order.
_INSERT_KEY = """
INSERT INTO auth.api_keys
    (key_id, site_id, secret_hash, scopes, rate_limit_per_second, rate_limit_burst, allowed_origins)
VALUES (%s, %s, %s, %s, %s, %s, %s)
RETURNING key_id, site_id, scopes, created_at, revoked_at,
    rate_limit_per_second, rate_limit_burst, allowed_origins
"""
_REVOKE_KEY = """
UPDATE auth.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s
RETURNING key_id, site_id, scopes, created_at, revoked_at,
    rate_limit_per_second, rate_limit_burst, allowed_origins
"""
_KEYS_OF_SITE = (
    "SELECT key_id, site_id, scopes, created_at, revoked_at, rate_limit_per_second, rate_limit_burst,"
    " allowed_origins FROM auth.api_keys WHERE site_id = %s ORDER BY created_at, key_id"
)
# A site's identity secret is made with the site; a site older than the secrets gets one on first
# use, inserted only while the site exists (the INSERT selects it) and never replaced.
_INSERT_IDENTITY = """
INSERT INTO auth.identity_secrets (site_id, secret)
SELECT site_id, %s FROM auth.sites WHERE site_id = %s
ON CONFLICT (site_id) DO NOTHING
"""
_SELECT_IDENTITY = "SELECT secret FROM auth.identity_secrets WHERE site_id = %s"
IDENTITY_SECRET_BYTES = 32
_KEY_BY_HASH = (
    "SELECT key_id, site_id, scopes, created_at, revoked_at, rate_limit_per_second, rate_limit_burst,"
    " allowed_origins FROM auth.api_keys WHERE secret_hash = %s"
)


@dataclass(frozen=True, slots=True)
class SiteDeletion:
    key_ids: list[str]
    deleted_at: datetime
    already: bool


_DELETED_KEYS = "SELECT key_id FROM auth.api_keys WHERE site_id = %s ORDER BY key_id FOR UPDATE"
_DELETE_SITE = "DELETE FROM auth.sites WHERE site_id = %s RETURNING site_id"
_MARK_DELETED = (
    "INSERT INTO auth.deleted_sites (site_id) VALUES (%s)"
    " ON CONFLICT (site_id) DO UPDATE SET deleted_at = auth.deleted_sites.deleted_at RETURNING deleted_at"
)
_DELETED_AT = "SELECT deleted_at FROM auth.deleted_sites WHERE site_id = %s"


class AuthStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create_site(
        self,
        name: str,
        key_id: str,
        secret_hash: bytes,
        spec: KeySpec,
        *,
        domain: str | None = None,
        timezone: str = "UTC",
    ) -> tuple[SiteRow, KeyRow]:
        """Raises DomainTaken when another site has the domain."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_INSERT_SITE, (uuid.uuid4(), name, domain, timezone))
                site = SiteRow(*(await cur.fetchone() or ()))
                await conn.execute(
                    _INSERT_IDENTITY, (secrets.token_bytes(IDENTITY_SECRET_BYTES), site.site_id)
                )
                key = await self._insert_key(conn, site.site_id, key_id, secret_hash, spec)
        except errors.UniqueViolation:
            raise DomainTaken(domain or "") from None
        return site, key

    async def site(self, site_id: uuid.UUID) -> SiteRow | None:
        return await self._one_site(_SITE_BY_ID, site_id)

    async def site_by_domain(self, domain: str) -> SiteRow | None:
        return await self._one_site(_SITE_BY_DOMAIN, domain)

    async def _one_site(self, query: str, value: object) -> SiteRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, (value,))
            row = await cur.fetchone()
        return SiteRow(*row) if row else None

    async def sites(self) -> list[SiteRow]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_SITES)
            return [SiteRow(*row) for row in await cur.fetchall()]

    async def update_site(self, site_id: uuid.UUID, changes: SiteChanges) -> SiteRow | None:
        """The site after the changes, None when it does not exist; raises DomainTaken."""
        assignments: list[sql.Composable] = []
        params: list[object] = []
        if changes.name is not None:
            assignments.append(sql.SQL("name = %s"))
            params.append(changes.name)
        if changes.domain is not None:
            assignments.append(sql.SQL("domain = %s"))
            params.append(changes.domain or None)
        if changes.timezone is not None:
            assignments.append(sql.SQL("timezone = %s"))
            params.append(changes.timezone)
        if not assignments:
            return await self.site(site_id)
        statement = sql.SQL("UPDATE auth.sites SET {} WHERE site_id = %s RETURNING {}").format(
            sql.SQL(", ").join(assignments), sql.SQL(_SITE_COLUMNS)
        )
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(statement, (*params, site_id))
                row = await cur.fetchone()
        except errors.UniqueViolation:
            raise DomainTaken(changes.domain or "") from None
        return SiteRow(*row) if row else None

    async def keys_of_site(self, site_id: uuid.UUID) -> list[KeyRow]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_KEYS_OF_SITE, (site_id,))
            return [KeyRow(*row) for row in await cur.fetchall()]

    async def create_key(
        self, site_id: uuid.UUID, key_id: str, secret_hash: bytes, spec: KeySpec
    ) -> KeyRow | None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT 1 FROM auth.sites WHERE site_id = %s", (site_id,))
            if await cur.fetchone() is None:
                return None
            return await self._insert_key(conn, site_id, key_id, secret_hash, spec)

    @staticmethod
    async def _insert_key(
        conn: AsyncConnection[Any], site_id: uuid.UUID, key_id: str, secret_hash: bytes, spec: KeySpec
    ) -> KeyRow:
        cur = await conn.execute(
            _INSERT_KEY,
            (
                key_id,
                site_id,
                secret_hash,
                spec.scopes,
                spec.rate_limit_per_second,
                spec.rate_limit_burst,
                list(spec.allowed_origins),
            ),
        )
        return KeyRow(*(await cur.fetchone() or ()))

    async def revoke_key(self, key_id: str) -> KeyRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _REVOKE_KEY,
                (key_id,),
            )
            row = await cur.fetchone()
        return KeyRow(*row) if row else None

    async def delete_site(self, site_id: uuid.UUID) -> SiteDeletion | None:
        """Deletes the site (its keys and identity secret with it) and keeps its id as deleted;
        None when no such site was ever deleted or exists."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_DELETED_KEYS, (site_id,))
            key_ids = [str(row[0]) for row in await cur.fetchall()]
            cur = await conn.execute(_DELETE_SITE, (site_id,))
            if await cur.fetchone() is not None:
                cur = await conn.execute(_MARK_DELETED, (site_id,))
                row = await cur.fetchone()
                assert row is not None
                return SiteDeletion(key_ids, row[0], already=False)
            cur = await conn.execute(_DELETED_AT, (site_id,))
            row = await cur.fetchone()
        return SiteDeletion([], row[0], already=True) if row else None

    async def key_by_hash(self, secret_hash: bytes) -> KeyRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _KEY_BY_HASH,
                (secret_hash,),
            )
            row = await cur.fetchone()
        return KeyRow(*row) if row else None

    async def visitor_salts(self, today: date) -> list[tuple[date, bytes]]:
        """Today's and yesterday's salts (today's created on first use); older ones are deleted."""
        yesterday = today - timedelta(days=1)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO auth.visitor_salts (day, salt) VALUES (%s, %s) ON CONFLICT (day) DO NOTHING",
                (today, secrets.token_bytes(32)),
            )
            await conn.execute("DELETE FROM auth.visitor_salts WHERE day < %s", (yesterday,))
            cur = await conn.execute(
                "SELECT day, salt FROM auth.visitor_salts WHERE day >= %s ORDER BY day DESC", (yesterday,)
            )
            return [(day, bytes(salt)) for day, salt in await cur.fetchall()]

    async def identity_secret(self, site_id: uuid.UUID) -> bytes | None:
        """The site's identity secret (made on first use for older sites); None for an unknown site."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_SELECT_IDENTITY, (site_id,))
            row = await cur.fetchone()
            if row is None:
                await conn.execute(_INSERT_IDENTITY, (secrets.token_bytes(IDENTITY_SECRET_BYTES), site_id))
                # A new statement, so a new snapshot: it sees the row of a concurrent first use
                # that won the insert (ours then did nothing) as well as our own.
                cur = await conn.execute(_SELECT_IDENTITY, (site_id,))
                row = await cur.fetchone()
        return bytes(row[0]) if row else None
