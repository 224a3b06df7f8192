"""Entry point: python -m processor_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from processor_service.server import serve
from processor_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, service="processor")
event_loop.run(serve(settings))
