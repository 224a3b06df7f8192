"""Processor service: moves queued event batches from JetStream into TimescaleDB, exactly once."""
