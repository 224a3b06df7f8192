"""PostgreSQL access shared by the services: connection pool and the ordered migration runner."""

from analytics_db.migrations import Migration, MigrationError, applied_version, load_migrations, migrate
from analytics_db.pool import create_pool, open_pool

__all__ = [
    "Migration",
    "MigrationError",
    "applied_version",
    "create_pool",
    "load_migrations",
    "migrate",
    "open_pool",
]
