"""Entry point: python -m query_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from query_service.server import serve
from query_service.settings import Settings

event_loop.main("query", Settings.from_env, serve, configure_logging)
