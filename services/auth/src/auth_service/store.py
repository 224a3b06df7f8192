"""SQL for schema auth: the only module that reads or writes it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    site_id: uuid.UUID
    scopes: list[int]
    created_at: datetime
    revoked_at: datetime | None


class AuthStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create_site(
        self, name: str, key_id: str, secret_hash: bytes, scopes: list[int]
    ) -> tuple[SiteRow, KeyRow]:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO auth.sites (site_id, name) VALUES (%s, %s) RETURNING site_id, name, created_at",
                (uuid.uuid4(), name),
            )
            site = SiteRow(*(await cur.fetchone() or ()))
            key = await self._insert_key(conn, site.site_id, key_id, secret_hash, scopes)
        return site, key

    async def create_key(
        self, site_id: uuid.UUID, key_id: str, secret_hash: bytes, scopes: list[int]
    ) -> KeyRow | None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT 1 FROM auth.sites WHERE site_id = %s", (site_id,))
            if await cur.fetchone() is None:
                return None
            return await self._insert_key(conn, site_id, key_id, secret_hash, scopes)

    @staticmethod
    async def _insert_key(
        conn: object, site_id: uuid.UUID, key_id: str, secret_hash: bytes, scopes: list[int]
    ) -> KeyRow:
        cur = await conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO auth.api_keys (key_id, site_id, secret_hash, scopes) VALUES (%s, %s, %s, %s) "
            "RETURNING key_id, site_id, scopes, created_at, revoked_at",
            (key_id, site_id, secret_hash, scopes),
        )
        return KeyRow(*(await cur.fetchone()))

    async def revoke_key(self, key_id: str) -> KeyRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE auth.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s "
                "RETURNING key_id, site_id, scopes, created_at, revoked_at",
                (key_id,),
            )
            row = await cur.fetchone()
        return KeyRow(*row) if row else None

    async def key_by_hash(self, secret_hash: bytes) -> KeyRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT key_id, site_id, scopes, created_at, revoked_at FROM auth.api_keys "
                "WHERE secret_hash = %s",
                (secret_hash,),
            )
            row = await cur.fetchone()
        return KeyRow(*row) if row else None

    async def site_exists(self, site_id: uuid.UUID) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM auth.sites WHERE site_id = %s", (site_id,))
            return await cur.fetchone() is not None
