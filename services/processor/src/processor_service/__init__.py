"""Moves queued events from JetStream into TimescaleDB."""
