"""JetStream stream and consumer declarations and publishing helpers."""
