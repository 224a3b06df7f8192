"""The query benchmark's data set: deterministic, realistic traffic of several sites, enriched by ingest.

Traffic is generated per UTC day ("unit"), each from its own random stream, so units can be built
in parallel and in any order and still give the same events. A unit's events are the messages
ingest would publish for them: every event is an ``analytics.v1.Event`` as a browser or import
would send it (client event id and timestamp, page URL with ``utm_*`` on landing pages, referrer,
title, ``user_id`` for identified visitors, properties on custom events), validated by ingest's
``validate_event`` and enriched by ingest's ``enrich`` (user agent → browser, OS, device and bot
flag; referrer → channel; country; the visitor id: for identified visitors from the site's identity
secret, one id across days, for anonymous ones from that UTC day's salt), then packed into
``EventBatch`` messages in time order.

The model:

- Sites (SITES): one large site in Europe/Berlin with most of the traffic, three small ones in
  other zones. Each has a page catalogue; views pick pages with Zipf weights (a long tail).
- Visits start at times following a diurnal curve in the site's zone, a weekday factor and a
  slight growth over the period. A visit is 1 to N page views (a share bounce after one) with gaps
  of 3 s to 28 min and, on a share of visits, custom events with properties. Its first page view
  carries the acquisition: direct, search, social, referral (a long tail of hosts), email or paid,
  with ``utm_*`` tags on email, paid and some social visits; later views name the previous page as
  referrer, as browsers do.
- Visitors: about a fifth of visits come from identified users (``user_id``) of a per-site
  population picked with Zipf weights, so many return on several days; the others are anonymous
  (client address + user agent, so their id changes every UTC day, as ingest's salt does), some of
  them returning. A visitor's visits on one UTC day are more than 30 minutes apart, and no visit
  crosses a UTC midnight, so every generated visit is one session of the processor, except that an
  identified user's last visit of a day and first visit of the next, when less than 30 minutes
  apart, make one (their id no longer changes at midnight; units are generated day by day).
- Bots (crawler user agents) make about 4 % of the events; they are stored and flagged.

Event budgets are exact: the N events are split over sites and units (largest remainders), and a
unit generates its sites' budgets exactly.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from analytics.v1 import bus_pb2, events_pb2
from ingest_service.enrich.request import RequestInfo, enrich
from ingest_service.validation import Limits, RequestClock, validate_event

# Bump when the generated data changes, so a kept data set is seeded again.
GENERATOR_VERSION = 1
SESSION_GAP = timedelta(minutes=30)
_LIMITS = Limits()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Params:
    """What the data set is made of; recorded in the data directory's marker."""

    events: int = 10_000_000
    days: int = 90
    end: date = date(2026, 11, 29)  # the last local day of the large site: "now" of the benchmark
    seed: int = 1

    def as_json(self) -> dict[str, object]:
        return {
            "generator_version": GENERATOR_VERSION,
            "events": self.events,
            "days": self.days,
            "end": self.end.isoformat(),
            "seed": self.seed,
            "sites": [[s.key, s.domain, s.timezone, s.share] for s in SITES],
        }


@dataclass(frozen=True)
class SiteSpec:
    key: str
    name: str
    domain: str
    timezone: str
    share: float  # of all events
    pages: int  # size of the page catalogue
    countries: tuple[tuple[str, float], ...]


_EUROPE = (
    ("DE", 44),
    ("AT", 8),
    ("CH", 7),
    ("US", 8),
    ("GB", 5),
    ("FR", 4),
    ("NL", 4),
    ("PL", 3),
    ("IT", 3),
    ("ES", 2),
    ("SE", 1.5),
    ("DK", 1.2),
    ("BE", 1.2),
    ("CZ", 1.1),
    ("IN", 1),
    ("BR", 0.8),
    ("CA", 0.8),
    ("JP", 0.6),
    ("AU", 0.6),
    ("", 1.2),
)
_AMERICAS = (("US", 60), ("CA", 10), ("MX", 5), ("BR", 5), ("GB", 6), ("DE", 4), ("IN", 5), ("", 5))
_INDIA = (("IN", 62), ("US", 10), ("GB", 5), ("SG", 5), ("AE", 5), ("BD", 4), ("PK", 4), ("", 5))
_GLOBAL = (("US", 25), ("DE", 12), ("GB", 10), ("IN", 10), ("FR", 8), ("JP", 7), ("BR", 6), ("", 22))

SITES: tuple[SiteSpec, ...] = (
    SiteSpec("shop", "Bench shop", "shop.bench.example", "Europe/Berlin", 0.85, 5000, _EUROPE),
    SiteSpec("docs", "Bench docs", "docs.bench.example", "America/New_York", 0.08, 1500, _AMERICAS),
    SiteSpec("blog", "Bench blog", "blog.bench.example", "Asia/Kolkata", 0.05, 800, _INDIA),
    SiteSpec("status", "Bench status", "status.bench.example", "UTC", 0.02, 40, _GLOBAL),
)
LARGE_SITE = SITES[0]

# Local hour → relative traffic; weekday (Monday first) → factor.
_DIURNAL = (
    0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.35, 0.60, 0.85, 1.00, 1.10, 1.15,
    1.15, 1.10, 1.10, 1.10, 1.05, 1.00, 1.00, 1.05, 1.10, 1.00, 0.80, 0.55,
)  # fmt: skip
_WEEKDAY = (1.05, 1.08, 1.06, 1.04, 0.95, 0.72, 0.80)
BOT_SHARE = 0.04
IDENTIFIED_SHARE = 0.2
_RETURNING_ANONYMOUS = 0.3  # of anonymous visits: someone from a pool that comes back
_BOUNCE_SHARE = 0.42  # visits of one page view (before custom events)
_EXTRA_VIEWS_MEAN = 11.5  # beyond the second page view, for visits that do not bounce
_MAX_VIEWS = 250
_CUSTOM_SHARE = 0.35  # visits with custom events
_MEAN_EVENTS_PER_VISIT = 9.6  # what the shares above give; sizes the visitor populations
_LONGEST_VISIT = timedelta(hours=3)

_USER_AGENTS = (
    ("desktop", 27, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36"),
    ("desktop", 7, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"),
    ("desktop", 5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    ("desktop", 8, "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15"),
    ("desktop", 6, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36"),
    ("desktop", 2, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    ("mobile", 20, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    ("mobile", 14, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.6367.82 Mobile Safari/537.36"),
    ("mobile", 4, "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"),
    ("tablet", 3, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1"),
    ("tablet", 1, "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36"),
)  # fmt: skip
BOT_USER_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 "
    "Safari/537.36",
)
_SCREENS = {
    "desktop": ((1920, 1080), (1536, 864), (1440, 900), (2560, 1440), (1366, 768)),
    "mobile": ((390, 844), (412, 915), (375, 667), (430, 932)),
    "tablet": ((820, 1180), (768, 1024), (800, 1280)),
}
_LANGUAGES = {
    "DE": "de-DE", "AT": "de-AT", "CH": "de-CH", "US": "en-US", "GB": "en-GB", "FR": "fr-FR",
    "NL": "nl-NL", "PL": "pl-PL", "IT": "it-IT", "ES": "es-ES", "SE": "sv-SE", "DK": "da-DK",
    "BE": "nl-BE", "CZ": "cs-CZ", "IN": "en-IN", "BR": "pt-BR", "CA": "en-CA", "JP": "ja-JP",
    "AU": "en-AU", "MX": "es-MX", "SG": "en-SG", "AE": "ar-AE", "BD": "bn-BD", "PK": "ur-PK",
}  # fmt: skip
_SEARCH = (("https://www.google.com/", 80), ("https://www.bing.com/", 8), ("https://duckduckgo.com/", 6),
           ("https://www.ecosia.org/", 3), ("https://search.brave.com/", 3))  # fmt: skip
_SOCIAL = (("https://t.co/", 25), ("https://l.facebook.com/", 20), ("https://www.reddit.com/r/webdev/", 15),
           ("https://news.ycombinator.com/", 12), ("https://www.linkedin.com/", 15),
           ("https://www.youtube.com/", 13))  # fmt: skip
_CHANNELS = (("direct", 30), ("search", 33), ("social", 10), ("social_utm", 3), ("referral", 12),
             ("email", 4), ("paid", 8))  # fmt: skip
_REFERRAL_HOSTS = 2000
_CAMPAIGNS = ("brand", "black-friday", "retargeting", "spring-sale", "launch", "webinar")
_KEYWORDS = ("analytics", "privacy analytics", "web stats", "plausible alternative", "self hosted analytics")
_CUSTOM = (("add_to_cart", 30), ("outbound_click", 20), ("download", 15), ("signup", 10),
           ("play_video", 10), ("purchase", 8), ("newsletter_subscribe", 7))  # fmt: skip
_SECTIONS = ("blog", "products", "docs", "help", "guides", "changelog")
_CORE_PAGES = ("/", "/pricing", "/blog", "/docs", "/about", "/contact", "/login", "/signup", "/cart",
               "/checkout", "/features", "/careers")  # fmt: skip


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


@functools.cache
def _zipf(count: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights of ranks 1…count (cached: treat as read-only)."""
    return _cumulative([1.0 / (rank + 1) ** exponent for rank in range(count)])


_UA_CUM = _cumulative([w for _, w, _ in _USER_AGENTS])
_SEARCH_CUM = _cumulative([w for _, w in _SEARCH])
_SOCIAL_CUM = _cumulative([w for _, w in _SOCIAL])
_CHANNEL_CUM = _cumulative([w for _, w in _CHANNELS])
_CUSTOM_CUM = _cumulative([w for _, w in _CUSTOM])
_REFERRAL_CUM = _zipf(_REFERRAL_HOSTS, 1.1)


def _pick(cum: list[float], value: float) -> int:
    """Index of the weighted choice for a uniform value in [0, 1)."""
    return min(bisect.bisect_right(cum, value * cum[-1]), len(cum) - 1)


@functools.cache
def catalogue(site: SiteSpec) -> list[str]:
    """The site's paths in popularity order: core pages first, then a shuffled long tail (cached)."""
    rng = random.Random(f"pages:{site.key}")
    core = list(_CORE_PAGES[: min(len(_CORE_PAGES), site.pages)])
    tail: list[str] = []
    counter = 0
    while len(core) + len(tail) < site.pages:
        section = _SECTIONS[counter % len(_SECTIONS)]
        tail.append(f"/{section}/{section[:-1] if section.endswith('s') else section}-{counter:05d}")
        counter += 1
    rng.shuffle(tail)
    return core + tail


@dataclass(frozen=True)
class Person:
    """Who visits: what the request tells ingest, derived from a stable key."""

    user_id: str
    client_ip: str
    user_agent: str
    country: str
    language: str
    screen: tuple[int, int]


def person(seed: int, site: SiteSpec, key: str, user_id: str = "") -> Person:
    digest = hashlib.blake2b(f"{seed}|{site.key}|{key}".encode(), digest_size=16).digest()
    number = int.from_bytes(digest, "big")
    device, _, agent = _USER_AGENTS[_pick(_UA_CUM, (number & 0xFFFFFFFF) / 2**32)]
    countries = _site_countries(site)
    country = site.countries[_pick(countries, ((number >> 32) & 0xFFFFFFFF) / 2**32)][0]
    screens = _SCREENS[device]
    return Person(
        user_id=user_id,
        client_ip=f"{1 + digest[8] % 223}.{digest[9]}.{digest[10]}.{1 + digest[11] % 254}",
        user_agent=agent,
        country=country,
        language=_LANGUAGES.get(country, "en-US"),
        screen=screens[digest[12] % len(screens)],
    )


_COUNTRY_CUM: dict[str, list[float]] = {}


def _site_countries(site: SiteSpec) -> list[float]:
    cum = _COUNTRY_CUM.get(site.key)
    if cum is None:
        cum = _COUNTRY_CUM[site.key] = _cumulative([w for _, w in site.countries])
    return cum


def salt(seed: int, day: date) -> bytes:
    """The data set's visitor salt of a UTC day (production salts are random and rotate daily)."""
    return hashlib.blake2b(f"bench-query-salt|{seed}|{day.isoformat()}".encode(), digest_size=32).digest()


def identity_secret(seed: int, site_id: bytes) -> bytes:
    """The data set's identity secret of a site (production: random, kept by auth, never rotated)."""
    return hashlib.blake2b(
        b"bench-query-identity|" + str(seed).encode() + b"|" + site_id, digest_size=32
    ).digest()


# --- time ------------------------------------------------------------------------------------------


def data_range(params: Params) -> tuple[datetime, datetime]:
    """[start, end) in UTC: the large site's local days end - days + 1 … end."""
    zone = ZoneInfo(LARGE_SITE.timezone)
    first = params.end - timedelta(days=params.days - 1)
    start = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(params.end + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
    return start, end


@functools.cache
def units(params: Params) -> list[tuple[datetime, datetime]]:
    """The UTC days overlapping the range, clipped to it: what one generator call produces."""
    start, end = data_range(params)
    found = []
    at = start
    while at < end:
        day_end = datetime.combine(at.date() + timedelta(days=1), time.min, tzinfo=UTC)
        found.append((at, min(day_end, end)))
        at = found[-1][1]
    return found


def _hour_weights(site: SiteSpec, window: tuple[datetime, datetime], params: Params) -> list[float]:
    """Relative traffic of each whole UTC hour of the window."""
    zone = ZoneInfo(site.timezone)
    range_start, range_end = data_range(params)
    span = (range_end - range_start).total_seconds()
    weights = []
    at = window[0]
    while at < window[1]:
        local = (at + timedelta(minutes=30)).astimezone(zone)
        growth = 0.9 + 0.2 * (at - range_start).total_seconds() / span
        weights.append(_DIURNAL[local.hour] * _WEEKDAY[local.weekday()] * growth)
        at += timedelta(hours=1)
    return weights


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """total split in proportion to weights, by largest remainders: the parts sum to total."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


@functools.cache
def budgets(params: Params) -> list[dict[str, int]]:
    """Events per unit and site; they sum to params.events."""
    per_site = _split(params.events, [s.share for s in SITES])
    windows = units(params)
    table: list[dict[str, int]] = [{} for _ in windows]
    for site, site_events in zip(SITES, per_site, strict=True):
        weights = [sum(_hour_weights(site, window, params)) for window in windows]
        for index, part in enumerate(_split(site_events, weights)):
            table[index][site.key] = part
    return table


# --- visits ----------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a site's generated events amount to, as the query service should count them."""

    events: int = 0  # every stored event, bots included
    bot_events: int = 0
    pageviews: int = 0  # not bots
    custom_events: int = 0  # not bots
    visits: int = 0
    bounces: int = 0
    visit_pageviews: int = 0
    duration_us: int = 0
    identified_visits: int = 0
    utm_visits: int = 0
    # Filled only when asked for (tests): distinct visitor ids, and those sending a user_id.
    visitors: set[int] = field(default_factory=set)
    identified_visitors: set[int] = field(default_factory=set)

    def add(self, other: Summary) -> None:
        for name in (
            "events",
            "bot_events",
            "pageviews",
            "custom_events",
            "visits",
            "bounces",
            "visit_pageviews",
            "duration_us",
            "identified_visits",
            "utm_visits",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.visitors |= other.visitors
        self.identified_visitors |= other.identified_visitors


@dataclass(frozen=True)
class Unit:
    """One UTC day's events as bus messages, in time order, and what they amount to per site."""

    index: int
    start: datetime
    end: datetime
    batches: list[bytes]
    summaries: dict[str, Summary]


@dataclass(frozen=True)
class _Plan:
    views: int
    customs: int
    offsets_us: tuple[int, ...]  # of every event from the visit's start, in order
    custom_after: tuple[int, ...]  # for each custom event, the page view it follows


def _views(rng: random.Random) -> int:
    if rng.random() < _BOUNCE_SHARE:
        return 1
    return 2 + min(int(rng.expovariate(1.0 / _EXTRA_VIEWS_MEAN)), _MAX_VIEWS - 2)


def _customs(rng: random.Random) -> int:
    if rng.random() >= _CUSTOM_SHARE:
        return 0
    return 1 + min(int(rng.expovariate(1.0 / 1.2)), 5)


def _gap_s(rng: random.Random, custom: bool) -> float:
    """Seconds to the next event of a visit: always below the 30-minute session gap."""
    if custom:
        return min(max(rng.lognormvariate(math.log(12), 0.8), 1.0), 300.0)
    return min(max(rng.lognormvariate(math.log(40), 1.0), 3.0), 1680.0)


def _plan(rng: random.Random, views: int, customs: int, bot: bool) -> _Plan:
    after = tuple(sorted(rng.randrange(views) for _ in range(customs)))
    offsets = [0]
    elapsed = 0.0
    kinds = []  # False: page view, True: custom event; in order
    for view in range(views):
        kinds.append(False)
        kinds.extend(True for a in after if a == view)
    for custom in kinds[1:]:
        elapsed += rng.uniform(1.0, 12.0) if bot else _gap_s(rng, custom)
        offsets.append(int(elapsed * 1_000_000))
    longest = int(_LONGEST_VISIT.total_seconds() * 1_000_000)
    if offsets[-1] > longest:
        offsets = [o * longest // offsets[-1] for o in offsets]
    return _Plan(views, customs, tuple(offsets), after)


def _plans(rng: random.Random, budget: int, bot: bool) -> list[_Plan]:
    """Visits whose events sum to exactly ``budget``."""
    plans: list[_Plan] = []
    left = budget
    while left > 0:
        if bot:
            views, customs = 5 + int(rng.expovariate(1 / 15.0)), 0
        else:
            views, customs = _views(rng), _customs(rng)
        views = min(views, left)
        customs = min(customs, left - views)
        plans.append(_plan(rng, views, customs, bot))
        left -= views + customs
    return plans


def _uuid(rng: random.Random) -> str:
    value = (rng.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _title(path: str, site: SiteSpec) -> str:
    if path == "/":
        return site.name
    return f"{path.rstrip('/').rsplit('/', 1)[-1].replace('-', ' ').capitalize()} · {site.name}"


@dataclass(frozen=True)
class _Page:
    """The page an event happens on: a page view's, or the one a custom event follows."""

    path: str
    url: str
    referrer: str


@dataclass(frozen=True)
class _Acquisition:
    referrer: str
    query: str  # utm_* parameters of the landing page URL, with the leading "?", or ""


def _acquisition(rng: random.Random, when: datetime) -> _Acquisition:
    channel = _CHANNELS[_pick(_CHANNEL_CUM, rng.random())][0]
    if channel == "search":
        return _Acquisition(_SEARCH[_pick(_SEARCH_CUM, rng.random())][0], "")
    if channel == "social":
        return _Acquisition(_SOCIAL[_pick(_SOCIAL_CUM, rng.random())][0], "")
    if channel == "social_utm":
        campaign = _CAMPAIGNS[rng.randrange(len(_CAMPAIGNS))]
        return _Acquisition("https://t.co/", f"?utm_source=twitter&utm_medium=social&utm_campaign={campaign}")
    if channel == "referral":
        host = _pick(_REFERRAL_CUM, rng.random())
        return _Acquisition(f"https://blog{host}.example.net/posts/{rng.randrange(50)}", "")
    if channel == "email":
        week = when.isocalendar().week
        referrer = "https://mail.google.com/" if rng.random() < 0.3 else ""
        return _Acquisition(referrer, f"?utm_source=newsletter&utm_medium=email&utm_campaign=weekly-{week}")
    if channel == "paid":
        campaign = _CAMPAIGNS[rng.randrange(len(_CAMPAIGNS))]
        if rng.random() < 0.7:
            term = _KEYWORDS[rng.randrange(len(_KEYWORDS))].replace(" ", "+")
            return _Acquisition(
                "https://www.google.com/",
                f"?utm_source=google&utm_medium=cpc&utm_campaign={campaign}&utm_term={term}"
                f"&utm_content=ad-{rng.randrange(1, 6)}",
            )
        return _Acquisition(
            "https://l.facebook.com/",
            f"?utm_source=facebook&utm_medium=paid_social&utm_campaign={campaign}"
            f"&utm_content=ad-{rng.randrange(1, 6)}",
        )
    return _Acquisition("", "")


def _properties(rng: random.Random, name: str) -> dict[str, str]:
    if name == "add_to_cart":
        return {"product": f"sku-{rng.randrange(400):04d}", "quantity": str(1 + int(rng.expovariate(1.5)))}
    if name == "purchase":
        return {"value": f"{rng.lognormvariate(4, 0.6):.2f}", "currency": "EUR"}
    if name == "signup":
        return {"plan": ("free", "pro", "business")[_pick([6, 9, 10], rng.random())]}
    if name == "download":
        return {"file": f"guide-{rng.randrange(30):02d}.pdf"}
    if name == "outbound_click":
        return {"url": f"https://partner{rng.randrange(60)}.example.org/"}
    if name == "play_video":
        return {"video": f"intro-{rng.randrange(12)}"}
    return {}


class _SiteDay:
    """Builds one site's events of one unit."""

    def __init__(self, params: Params, site: SiteSpec, site_id: str, index: int, summarize: bool) -> None:
        self.params, self.site, self.site_id, self.index = params, site, site_id, index
        self.summarize = summarize
        self.rng = random.Random(f"{params.seed}|{site.key}|{index}")
        self.paths = catalogue(site)
        self.path_cum = _zipf(len(self.paths), 1.05)
        visits = params.events * site.share * (1 - BOT_SHARE) / _MEAN_EVENTS_PER_VISIT
        # Identified users come back about once a week, the most loyal ones daily.
        self.users = max(5, round(visits * IDENTIFIED_SHARE / max(1.5, params.days / 7)))
        self.user_cum = _zipf(self.users, 0.6)
        self.returning = max(10, round(visits * (1 - IDENTIFIED_SHARE) * _RETURNING_ANONYMOUS / 3))
        self.last_end: dict[str, int] = {}  # person key → end of their latest visit today, µs
        self.people: dict[str, Person] = {}
        self.fresh = 0
        self.summary = Summary()
        self.events: list[tuple[int, int, bus_pb2.EnrichedEvent]] = []

    def _person(self, key: str, user_id: str = "") -> Person:
        found = self.people.get(key)
        if found is None:
            found = self.people[key] = person(self.params.seed, self.site, key, user_id)
        return found

    def _visitor(self, start_us: int) -> tuple[str, Person]:
        """Someone free at start_us: their last visit today ended more than 30 minutes before."""
        rng = self.rng
        gap = int(SESSION_GAP.total_seconds() * 1_000_000)
        draw = rng.random()
        for _ in range(3):
            if draw < IDENTIFIED_SHARE:
                number = _pick(self.user_cum, rng.random())
                key = f"u{number}"
                user_id = f"user-{number:06d}"
            elif draw < IDENTIFIED_SHARE + (1 - IDENTIFIED_SHARE) * _RETURNING_ANONYMOUS:
                key, user_id = f"r{rng.randrange(self.returning)}", ""
            else:
                break
            if self.last_end.get(key, -(2**62)) + gap < start_us:
                return key, self._person(key, user_id)
        self.fresh += 1
        key = f"f{self.index}-{self.fresh}"
        return key, self._person(key)

    def visits(self, window: tuple[datetime, datetime], budget: int) -> None:
        rng = self.rng
        bots = round(budget * BOT_SHARE)
        hours = _hour_weights(self.site, window, self.params)
        hour_cum = _cumulative(hours)
        window_us = (_us(window[0]), _us(window[1]))
        for bot, plans in (
            (False, _plans(rng, budget - bots, bot=False)),
            (True, _plans(rng, bots, bot=True)),
        ):
            starts = []
            for plan in plans:
                hour = _pick(hour_cum, rng.random())
                start = window_us[0] + hour * 3_600_000_000 + rng.randrange(3_600_000_000)
                # A visit ends before the unit does (the next UTC day has other visitor ids).
                latest = window_us[1] - 1_000_000 - plan.offsets_us[-1]
                starts.append(max(window_us[0], min(start, latest)))
            order = sorted(range(len(plans)), key=lambda i: starts[i])
            for i in order:
                plan = plans[i]
                offsets = plan.offsets_us
                room = window_us[1] - 1_000_000 - starts[i]
                if offsets[-1] > room:  # only in windows shorter than the visit (partial first unit)
                    offsets = tuple(o * max(room, 0) // offsets[-1] for o in offsets)
                self._visit(plan, starts[i], offsets, bot)

    def _visit(self, plan: _Plan, start_us: int, offsets: tuple[int, ...], bot: bool) -> None:
        rng, site = self.rng, self.site
        if bot:
            key = f"b{rng.randrange(40)}"
            agent = BOT_USER_AGENTS[int(key[1:]) % len(BOT_USER_AGENTS)]
            who = Person("", f"66.249.{int(key[1:])}.{7 + int(key[1:])}", agent, "US", "en-US", (0, 0))
        else:
            key, who = self._visitor(start_us)
            self.last_end[key] = start_us + offsets[-1]
        when = _EPOCH + timedelta(microseconds=start_us)
        acquisition = _acquisition(rng, when) if not bot else _Acquisition("", "")
        page = _Page("", "", "")
        step = 0
        views = customs = 0
        visitor_id = 0
        for view in range(plan.views):
            if bot:
                path = self.paths[rng.randrange(len(self.paths))]
            else:
                path = self.paths[_pick(self.path_cum, rng.random())]
            query = acquisition.query if view == 0 else ""
            referrer = acquisition.referrer if view == 0 else page.url
            page = _Page(path, f"https://{site.domain}{path}{query}", referrer)
            visitor_id = self._emit(start_us + offsets[step], who, "pageview", page, {})
            step += 1
            views += 1
            for _ in range(plan.custom_after.count(view)):
                name = _CUSTOM[_pick(_CUSTOM_CUM, rng.random())][0]
                self._emit(start_us + offsets[step], who, name, page, _properties(rng, name))
                step += 1
                customs += 1
        summary = self.summary
        summary.events += views + customs
        if bot:
            summary.bot_events += views + customs
            return
        summary.pageviews += views
        summary.custom_events += customs
        summary.visits += 1
        summary.bounces += views == 1 and customs == 0
        summary.visit_pageviews += views
        summary.duration_us += offsets[-1]
        summary.identified_visits += bool(who.user_id)
        summary.utm_visits += bool(acquisition.query)
        if self.summarize:
            summary.visitors.add(visitor_id)
            if who.user_id:
                summary.identified_visitors.add(visitor_id)

    def _emit(
        self,
        at_us: int,
        who: Person,
        name: str,
        page: _Page,
        properties: dict[str, str],
    ) -> int:
        """Builds the event as a client sends it and runs it through ingest's validation and
        enrichment; returns its visitor id."""
        rng = self.rng
        occurred = _EPOCH + timedelta(microseconds=at_us)
        received = occurred + timedelta(microseconds=rng.randrange(20_000, 900_000))
        event = events_pb2.Event(
            site_id=self.site_id,
            event_type=name,
            path=page.path,
            url=page.url,
            referrer=page.referrer,
            title=_title(page.path, self.site),
            user_id=who.user_id,
            event_id=_uuid(rng),
            timestamp=occurred.isoformat(),
            screen_width=who.screen[0],
            screen_height=who.screen[1],
            language=who.language,
            properties=properties,
        )
        enriched, problems = validate_event(event, "", RequestClock(received), _LIMITS)
        if enriched is None:
            raise ValueError(f"ingest refused a generated event: {problems}")
        enrich(
            enriched,
            RequestInfo(client_ip=who.client_ip, user_agent=who.user_agent, country=who.country, origin=""),
            salt(self.params.seed, received.date()),
            {enriched.site_id: identity_secret(self.params.seed, enriched.site_id)}
            if enriched.user_id
            else {},
        )
        self.events.append((at_us, len(self.events), enriched))
        return enriched.visitor_id


def _us(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(microseconds=1)


def generate_unit(
    params: Params, site_ids: dict[str, str], index: int, batch_size: int, summarize: bool = False
) -> Unit:
    """Unit ``index`` (see units()): its events as EventBatch messages of at most batch_size."""
    window = units(params)[index]
    table = budgets(params)[index]
    summaries: dict[str, Summary] = {}
    events: list[tuple[int, int, int, bus_pb2.EnrichedEvent]] = []
    for order, site in enumerate(SITES):
        day = _SiteDay(params, site, site_ids[site.key], index, summarize)
        day.visits(window, table[site.key])
        summaries[site.key] = day.summary
        events.extend((at, order, n, event) for at, n, event in day.events)
    events.sort(key=lambda item: item[:3])
    batches = []
    for number, first in enumerate(range(0, len(events), batch_size)):
        batch = bus_pb2.EventBatch(
            batch_id=f"bench-query-{params.seed}-{index}-{number}",
            events=[item[3] for item in events[first : first + batch_size]],
        )
        batches.append(batch.SerializeToString())
    return Unit(index, window[0], window[1], batches, summaries)


def generate(
    params: Params, site_ids: dict[str, str], batch_size: int, summarize: bool = False
) -> Iterator[Unit]:
    """Every unit in order (in this process: for tests and small data sets)."""
    for index in range(len(units(params))):
        yield generate_unit(params, site_ids, index, batch_size, summarize)
