"""Entry point: python -m query_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from query_service.server import serve
from query_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, service="query")
event_loop.run(serve(settings))
