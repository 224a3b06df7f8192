"""Answers statistics questions from TimescaleDB."""
