"""Typed settings read from environment variables."""
