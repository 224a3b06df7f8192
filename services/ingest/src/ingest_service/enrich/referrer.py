"""Referrer → host and channel: direct, internal, search, social, email, paid or referral."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

_SEARCH = (
    "google.",
    "bing.com",
    "duckduckgo.com",
    "search.yahoo.",
    "yahoo.com",
    "baidu.com",
    "yandex.",
    "ecosia.org",
    "search.brave.com",
    "startpage.com",
    "qwant.com",
    "naver.com",
    "seznam.cz",
    "kagi.com",
    "perplexity.ai",
)
_SOCIAL = (
    "facebook.com",
    "fb.com",
    "m.facebook.com",
    "l.facebook.com",
    "instagram.com",
    "t.co",
    "twitter.com",
    "x.com",
    "linkedin.com",
    "lnkd.in",
    "reddit.com",
    "news.ycombinator.com",
    "youtube.com",
    "youtu.be",
    "pinterest.",
    "tiktok.com",
    "threads.net",
    "mastodon.social",
    "bsky.app",
    "vk.com",
    "weibo.com",
    "telegram.org",
    "t.me",
    "discord.com",
    "whatsapp.com",
    "quora.com",
)
_EMAIL = ("mail.google.com", "outlook.live.com", "outlook.office.com", "mail.yahoo.com", "mail.proton.me")
_PAID_MEDIUMS = frozenset(
    {"cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-social", "paid_social", "display", "cpm"}
)


@lru_cache(maxsize=50_000)
def host_of(url: str) -> str:
    if not url:
        return ""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.endswith("."):
            if host.startswith(pattern) or f".{pattern}" in f".{host}":
                return True
        elif host == pattern or host.endswith(f".{pattern}"):
            return True
    return False


@lru_cache(maxsize=50_000)
def channel(referrer_host: str, page_host: str, utm_medium: str) -> str:
    """The acquisition channel of a page view."""
    medium = utm_medium.lower()
    if medium in _PAID_MEDIUMS:
        return "paid"
    if medium in ("email", "e-mail", "newsletter"):
        return "email"
    if not referrer_host:
        return "direct"
    if page_host and (referrer_host == page_host or referrer_host.endswith(f".{page_host}")):
        return "internal"
    if _matches(referrer_host, _EMAIL):
        return "email"
    if _matches(referrer_host, _SEARCH):
        return "search"
    if _matches(referrer_host, _SOCIAL):
        return "social"
    return "referral"
