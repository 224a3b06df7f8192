"""Entry point: python -m query_service."""

import asyncio

from analytics_observability import configure_logging
from query_service.server import serve
from query_service.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, service="query")
asyncio.run(serve(settings))
