"""pytest plugin and launchers for local PostgreSQL+TimescaleDB, NATS and the service stack."""
