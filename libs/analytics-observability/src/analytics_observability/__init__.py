"""Structured logging set-up shared by every service."""
