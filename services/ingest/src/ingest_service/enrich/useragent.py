"""User agent → browser, OS, device class and bot flag, each distinct user agent parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import crawleruseragents
import ua_parser
from ua_parser import parse

MAX_USER_AGENT = 512

# Signals of automated browsing the crawler list does not cover.
_AUTOMATION = re.compile(r"headless|phantomjs|selenium|puppeteer|playwright|lighthouse", re.IGNORECASE)
# HTTP libraries: a site's backend sending events server-side, not a crawler. The crawler list
# counts some of them as bots, which would silently drop every server-side page view.
_HTTP_LIBRARY = re.compile(
    r"^(curl|wget|python-requests|python-urllib|python/|aiohttp|httpx|go-http-client|okhttp|java/|axios|"
    r"node-fetch|node|undici|got|ruby|faraday|php|guzzlehttp|libwww-perl|apache-httpclient|dart|grpc-|"
    r"postmanruntime|insomnia)",
    re.IGNORECASE,
)
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook|(android(?!.*mobile))", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android.*mobile|windows phone|blackberry|opera mini", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Device:
    browser: str
    os: str
    device: str
    is_bot: bool


UNKNOWN = Device(browser="", os="", device="", is_bot=False)


def prepare() -> None:
    """Builds the user-agent parser (about 0.1 s of compiling its patterns) before the service serves.

    Built lazily instead, the first request to carry a user agent would pay for it while holding
    the event loop, stalling every request in flight behind it.
    """
    _ = ua_parser.parser


@lru_cache(maxsize=20_000)
def classify(user_agent: str) -> Device:
    """Classifies a user agent; the cache makes repeat visitors and bulk traffic cheap."""
    if not user_agent:
        return UNKNOWN
    ua = user_agent[:MAX_USER_AGENT]
    result = parse(ua)
    browser = result.user_agent.family if result.user_agent else ""
    os_family = result.os.family if result.os else ""
    device_family = result.device.family if result.device else ""
    library = bool(_HTTP_LIBRARY.match(ua))
    is_bot = (
        device_family == "Spider"
        or bool(_AUTOMATION.search(ua))
        or (not library and crawleruseragents.is_crawler(ua))
    )
    if is_bot:
        device = "bot"
    elif library:
        device = "other"
    elif _TABLET.search(ua):
        device = "tablet"
    elif _MOBILE.search(ua):
        device = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD"):
        device = "desktop"
    else:
        device = "other"
    return Device(
        browser="" if browser == "Other" else browser,
        os="" if os_family == "Other" else os_family,
        device=device,
        is_bot=is_bot,
    )
