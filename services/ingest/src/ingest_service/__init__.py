"""Validates, enriches and durably queues events."""
