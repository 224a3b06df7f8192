"""Entry point: python -m ingest_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from ingest_service.server import serve
from ingest_service.settings import Settings

event_loop.main("ingest", Settings.from_env, serve, configure_logging)
