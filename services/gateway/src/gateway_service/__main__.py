"""Entry point: python -m gateway_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging

from .server import serve
from .settings import load_settings

event_loop.main("gateway", load_settings, serve, configure_logging)
