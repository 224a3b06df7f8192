"""Entry point: python -m processor_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from processor_service.server import serve
from processor_service.settings import Settings

event_loop.main("processor", Settings.from_env, serve, configure_logging)
