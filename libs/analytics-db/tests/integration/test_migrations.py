"""The migration runner against a real database: order, idempotency, locking and tamper detection."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import psycopg
import pytest

from analytics_db import MigrationError, load_migrations, migrate

pytestmark = pytest.mark.integration

_counter = itertools.count()


def make_package(tmp_path: Path, files: dict[str, str]) -> str:
    name = f"migrations_under_test_{next(_counter)}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for filename, text in files.items():
        (package / filename).write_text(text)
    sys.path.insert(0, str(tmp_path))
    return name


@pytest.fixture(autouse=True)
def _restore_sys_path() -> object:
    saved = list(sys.path)
    yield
    sys.path[:] = saved


async def test_applies_in_order_once(tmp_path: Path, database_url: str) -> None:
    package = make_package(
        tmp_path,
        {
            "0002_fill.sql": "INSERT INTO demo.t VALUES (1);",
            "0001_create.sql": "CREATE TABLE demo.t (v int);",
            "README.txt": "not a migration",
        },
    )
    assert await migrate(database_url, "demo", package) == 2
    assert await migrate(database_url, "demo", package) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM demo.t").fetchone() == (1,)
        versions = conn.execute(
            "SELECT version, name FROM demo.schema_migrations ORDER BY version"
        ).fetchall()
    assert versions == [(1, "create"), (2, "fill")]


async def test_concurrent_runners_apply_each_migration_once(tmp_path: Path, database_url: str) -> None:
    package = make_package(
        tmp_path,
        {
            "0001_create.sql": "CREATE TABLE race.t (v int);",
            "0002_fill.sql": "INSERT INTO race.t VALUES (1);",
        },
    )
    await asyncio.gather(*(migrate(database_url, "race", package) for _ in range(4)))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM race.t").fetchone() == (1,)


async def test_changed_migration_is_refused(tmp_path: Path, database_url: str) -> None:
    package = make_package(tmp_path, {"0001_create.sql": "CREATE TABLE tamper.t (v int);"})
    await migrate(database_url, "tamper", package)
    (tmp_path / package / "0001_create.sql").write_text("CREATE TABLE tamper.t (v bigint);")
    with pytest.raises(MigrationError, match="was changed"):
        await migrate(database_url, "tamper", package)


async def test_failed_migration_leaves_nothing_behind(tmp_path: Path, database_url: str) -> None:
    package = make_package(
        tmp_path,
        {
            "0001_ok.sql": "CREATE TABLE broken.a (v int);",
            "0002_bad.sql": "CREATE TABLE broken.b (v int); SELEC 1;",
        },
    )
    with pytest.raises(psycopg.errors.SyntaxError):
        await migrate(database_url, "broken", package)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('broken.b')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM broken.schema_migrations").fetchone() == (1,)


def test_gaps_in_versions_are_refused(tmp_path: Path) -> None:
    package = make_package(tmp_path, {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(package)
