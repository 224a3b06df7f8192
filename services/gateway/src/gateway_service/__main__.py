"""Entry point: python -m gateway_service."""

from analytics_config import event_loop
from analytics_observability import configure_logging

from .server import serve
from .settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as exc:
    raise SystemExit(f"gateway: invalid settings: {exc}") from None
configure_logging(settings.log_level, service="gateway")
event_loop.run(serve(settings))
