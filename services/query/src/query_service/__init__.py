"""Query service: answers statistics questions from the processor's relations in TimescaleDB."""
