"""Ingest service: authenticates, validates, enriches and durably queues events."""
