"""User agents, referrer channels, client addresses, visitor ids and rate limits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid

import pytest

from analytics.v1 import bus_pb2
from ingest_service.enrich.client import ClientResolver
from ingest_service.enrich.referrer import channel, host_of
from ingest_service.enrich.request import RequestInfo, enrich
from ingest_service.enrich.useragent import classify
from ingest_service.enrich.visitor import anonymous_visitor_id, identified_visitor_id
from ingest_service.ratelimit import RateLimiter

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = IPHONE.replace("iPhone; CPU iPhone OS", "iPad; CPU OS")
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
WINDOWS_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "browser", "os", "device"),
    [
        (IPHONE, "Mobile Safari", "iOS", "mobile"),
        (IPAD, "Mobile Safari", "iOS", "tablet"),
        (ANDROID_PHONE, "Chrome Mobile", "Android", "mobile"),
        (ANDROID_TABLET, "Chrome", "Android", "tablet"),
        (WINDOWS_FIREFOX, "Firefox", "Windows", "desktop"),
        (MAC_CHROME, "Chrome", "Mac OS X", "desktop"),
    ],
)
def test_browsers_and_devices(user_agent: str, browser: str, os: str, device: str) -> None:
    result = classify(user_agent)
    assert (result.browser, result.os, result.device, result.is_bot) == (browser, os, device, False)


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0 Safari/537.36",
    ],
)
def test_bots_are_flagged(user_agent: str) -> None:
    result = classify(user_agent)
    assert result.is_bot and result.device == "bot"


@pytest.mark.parametrize(
    "user_agent", ["curl/8.4.0", "python-requests/2.31.0", "Python/3.11 aiohttp/3.14.5", "Go-http-client/1.1"]
)
def test_server_side_senders_are_not_bots(user_agent: str) -> None:
    # Backends sending events for their visitors use HTTP libraries; their page views count.
    result = classify(user_agent)
    assert not result.is_bot and result.device == "other"


def test_each_user_agent_is_parsed_once() -> None:
    classify.cache_clear()
    for _ in range(5):
        classify(WINDOWS_FIREFOX)
    info = classify.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_prepare_builds_the_parser_so_that_no_request_pays_for_it() -> None:
    # A fresh interpreter: this one may have built the parser already in another test.
    script = (
        "import ua_parser\n"
        "from ingest_service.enrich.useragent import prepare\n"
        "assert 'parser' not in vars(ua_parser), 'built at import'\n"
        "prepare()\n"
        "assert 'parser' in vars(ua_parser), 'not built by prepare()'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize(
    ("referrer", "page", "medium", "expected"),
    [
        ("", "shop.example", "", "direct"),
        ("https://www.google.com/", "shop.example", "", "search"),
        ("https://www.google.co.uk/search?q=x", "shop.example", "", "search"),
        ("https://duckduckgo.com/", "shop.example", "", "search"),
        ("https://t.co/abc", "shop.example", "", "social"),
        ("https://old.reddit.com/r/x", "shop.example", "", "social"),
        ("https://mail.google.com/", "shop.example", "", "email"),
        ("https://shop.example/cart", "shop.example", "", "internal"),
        ("https://blog.example/post", "shop.example", "", "referral"),
        ("https://blog.example/post", "shop.example", "cpc", "paid"),
        ("", "shop.example", "newsletter", "email"),
    ],
)
def test_channels(referrer: str, page: str, medium: str, expected: str) -> None:
    assert channel(host_of(referrer), page, medium) == expected


def test_client_address_trusts_only_configured_proxies() -> None:
    resolver = ClientResolver(["127.0.0.0/8", "10.0.0.0/8"], "cf-ipcountry")
    # Through the local edge: the right-most untrusted hop is the client, not a spoofed first entry.
    address, proxied = resolver.resolve("ipv4:127.0.0.1:5000", "6.6.6.6, 203.0.113.9, 10.0.0.5")
    assert (str(address), proxied) == ("203.0.113.9", True)
    # A direct caller cannot claim an address by sending the header.
    address, proxied = resolver.resolve("ipv4:198.51.100.4:5000", "203.0.113.9")
    assert (str(address), proxied) == ("198.51.100.4", False)
    address, _ = resolver.resolve("ipv6:[2001:db8::1]:443", None)
    assert str(address) == "2001:db8::1"
    address, proxied = resolver.resolve("ipv4:127.0.0.1:5000", None)
    assert (str(address), proxied) == ("127.0.0.1", True)
    assert resolver.resolve("unix:/tmp/sock", "1.2.3.4") == (None, False)


def test_country_header_values() -> None:
    assert ClientResolver.country("de") == "DE"
    assert ClientResolver.country("XX") == ""
    assert ClientResolver.country("T1") == ""
    assert ClientResolver.country("Germany") == ""
    assert ClientResolver.country(None) == ""


def test_anonymous_ids_are_keyed_daily_and_per_site() -> None:
    salt, other_salt = b"a" * 32, b"b" * 32
    site, other_site = uuid.uuid4().bytes, uuid.uuid4().bytes
    base = anonymous_visitor_id(salt, site, "203.0.113.9", IPHONE)
    assert base != 0
    assert anonymous_visitor_id(salt, site, "203.0.113.9", IPHONE) == base
    assert anonymous_visitor_id(other_salt, site, "203.0.113.9", IPHONE) != base
    assert anonymous_visitor_id(salt, other_site, "203.0.113.9", IPHONE) != base
    assert anonymous_visitor_id(salt, site, "203.0.113.10", IPHONE) != base
    assert anonymous_visitor_id(salt, site, "203.0.113.9", IPAD) != base
    assert anonymous_visitor_id(salt, site, "", IPHONE) == 0


def test_anonymous_ids_are_the_ones_stored_before_identified_ids_existed() -> None:
    # Pinned: an upgrade within a day must not split the day's anonymous visitors in two.
    site = uuid.UUID("6f1c0000-0000-4000-8000-000000000001").bytes
    assert anonymous_visitor_id(bytes(range(32)), site, "203.0.113.9", "Mozilla/5.0 (iPhone)") == (
        -1481591622123725386
    )


def test_identified_ids_are_keyed_by_the_site_secret_only() -> None:
    secret, other_secret = b"s" * 32, b"t" * 32
    site, other_site = uuid.uuid4().bytes, uuid.uuid4().bytes
    alice = identified_visitor_id(secret, site, "alice")
    assert alice not in (0, identified_visitor_id(secret, site, "bob"))
    assert identified_visitor_id(secret, site, "alice") == alice
    assert identified_visitor_id(other_secret, site, "alice") != alice
    assert identified_visitor_id(secret, other_site, "alice") != alice
    # Neither a plain nor an unkeyed hash of the user id: without the secret nothing can be checked.
    material = b"u\x00" + site + b"alice"
    for digest in (
        hashlib.blake2b(material, digest_size=8).digest(),
        hashlib.blake2b(material, key=secret, digest_size=8).digest(),
        hashlib.blake2b(b"alice", digest_size=8).digest(),
    ):
        assert int.from_bytes(digest, "big", signed=True) != alice


def test_identified_and_anonymous_ids_are_separate_even_with_one_key() -> None:
    # Were the secret ever equal to a salt, a user id spelling an address and user agent must
    # still not land on that visitor's anonymous id.
    key, site = b"k" * 32, uuid.uuid4().bytes
    assert identified_visitor_id(key, site, "203.0.113.9\x00" + IPHONE) != anonymous_visitor_id(
        key, site, "203.0.113.9", IPHONE
    )


def _enriched(site: bytes, user_id: str, salt: bytes, info: RequestInfo, secret: bytes) -> int:
    event = bus_pb2.EnrichedEvent(site_id=site, user_id=user_id, path="/")
    enrich(event, info, salt, {site: secret})
    return event.visitor_id


def test_a_signed_in_user_keeps_one_id_across_days_addresses_and_devices() -> None:
    site, secret = uuid.uuid4().bytes, b"s" * 32
    monday, tuesday = b"1" * 32, b"2" * 32
    phone = RequestInfo(client_ip="203.0.113.9", user_agent=IPHONE, country="", origin="")
    tablet = RequestInfo(client_ip="198.51.100.4", user_agent=IPAD, country="", origin="")
    alice = _enriched(site, "alice", monday, phone, secret)
    assert alice == identified_visitor_id(secret, site, "alice")
    assert _enriched(site, "alice", tuesday, tablet, secret) == alice
    # Without a user id the same browser is a new visitor every day.
    anonymous = _enriched(site, "", monday, phone, secret)
    assert anonymous == anonymous_visitor_id(monday, site, "203.0.113.9", IPHONE)
    assert _enriched(site, "", tuesday, phone, secret) not in (anonymous, 0)
    assert anonymous != alice


def test_token_bucket() -> None:
    limiter = RateLimiter(default_rate=10, default_burst=20)
    assert limiter.take("k", 20) is None
    wait = limiter.take("k", 5)
    assert wait is not None and 0.4 < wait <= 0.5
    assert limiter.take("other", 1) is None  # buckets are per key
    # A key's own limits override the defaults; a batch above the burst costs a full bucket.
    assert limiter.take("big", 500, rate=100, burst=100) is None
    assert limiter.take("big", 1, rate=100, burst=100) is not None
