"""Entry point: python -m ingest_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from ingest_service.server import serve
from ingest_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, service="ingest")
event_loop.run(serve(settings))
