"""Ordered, checksummed, advisory-locked SQL migrations, one set per schema owner."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import structlog
from psycopg import sql

log = structlog.get_logger("analytics.migrations")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk do not match what the database has applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    """Reads ``NNNN_name.sql`` files shipped in ``package``, in version order."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{package}: migration versions must run 1..n without gaps, found {versions}")
    return found


async def migrate(url: str, schema: str, package: str) -> int:
    """Applies the missing migrations of ``schema``; returns the version now applied.

    Safe to run from several replicas at once: an advisory lock serialises them, and each
    migration commits together with its bookkeeping row.
    """
    migrations = load_migrations(package)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"analytics.migrate.{schema}",))
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            table = sql.Identifier(schema, "schema_migrations")
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version int PRIMARY KEY, name text NOT NULL, "
                    "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            cursor = await conn.execute(sql.SQL("SELECT version, checksum FROM {}").format(table))
            applied: dict[int, str] = {int(v): str(c) for v, c in await cursor.fetchall()}
            for migration in migrations:
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{schema} migration {migration.version:04d}_{migration.name} was changed after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(table),
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("migration applied", schema=schema, version=migration.version, name=migration.name)
            unknown = sorted(set(applied) - {m.version for m in migrations})
            if unknown:
                # A newer release already migrated further (rolling upgrade): its schema stays
                # compatible with the previous release, so this replica may still run.
                log.warning("database schema is newer than this code", schema=schema, unknown=unknown)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"analytics.migrate.{schema}",))
    return len(migrations)


async def applied_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """Highest applied migration of ``schema``, 0 when it has none yet."""
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",))
    row = await cursor.fetchone()
    if not row or not row[0]:
        return 0
    cursor = await conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(
            sql.Identifier(schema, "schema_migrations")
        )
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
