"""Entry point: python -m auth_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from auth_service.server import serve
from auth_service.settings import Settings

event_loop.main("auth", Settings.from_env, serve, configure_logging)
