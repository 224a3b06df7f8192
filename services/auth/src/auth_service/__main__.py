"""Entry point: python -m auth_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging
from auth_service.server import serve
from auth_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, service="auth")
event_loop.run(serve(settings))
