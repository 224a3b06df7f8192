"""The query benchmark: its generator is deterministic and realistic as it claims, seeding through
the processor's writer gives rows the query service counts exactly as the generator says, the raw
SQL answers every question as the Query RPC does, and the result JSON has the documented shape."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.v1 import auth_pb2_grpc, bus_pb2, product_pb2_grpc, query_pb2, query_pb2_grpc
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from analytics_testing.postgres import PostgresServer
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore
from bench import report
from bench.query import generator, seed
from bench.query.generator import SITES, Params, Summary
from bench.query.measure import Measurement, _runs, measure, percentile
from bench.query.queries import NAMES, QUERIES, Context, Row
from bench.query.run import document, table
from query_service.metrics import rounded
from query_service.product.servicer import ProductServicer
from query_service.servicer import QueryServicer
from query_service.snapshot import DatabaseHealth, Snapshots

ADMIN = "bench-query-test-admin-token-0123456789"
FIXED_SITES = {site.key: str(uuid.UUID(int=index + 1)) for index, site in enumerate(SITES)}
GAP_US = 30 * 60 * 1_000_000


def _us(stamp: object) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000  # type: ignore[attr-defined]


def _events(params: Params, site_ids: dict[str, str]) -> tuple[list[bus_pb2.EnrichedEvent], Summary]:
    events: list[bus_pb2.EnrichedEvent] = []
    total = Summary()
    for unit in generator.generate(params, site_ids, batch_size=1000, summarize=True):
        for data in unit.batches:
            events.extend(bus_pb2.EventBatch.FromString(data).events)
        for summary in unit.summaries.values():
            total.add(summary)
    return events, total


def test_the_generator_is_deterministic_from_its_seed() -> None:
    params = Params(events=3000, days=3, seed=7)
    first = [u.batches for u in generator.generate(params, FIXED_SITES, batch_size=700)]
    again = [u.batches for u in generator.generate(params, FIXED_SITES, batch_size=700)]
    other = [u.batches for u in generator.generate(Params(3000, 3, seed=8), FIXED_SITES, batch_size=700)]
    assert first == again
    assert first != other
    # A unit is the same whether built alone (a worker process) or in a row.
    assert generator.generate_unit(params, FIXED_SITES, 2, batch_size=700).batches == first[2]


def test_the_spreads_are_what_the_generator_claims() -> None:
    params = Params(events=30_000, days=21, seed=3)
    events, summary = _events(params, FIXED_SITES)
    start, end = generator.data_range(params)
    assert len(events) == summary.events == params.events
    times = [_us(e.occurred_at) for e in events]
    assert times == sorted(times)  # in time order, as a live stream delivers them
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert min(times) >= (start - epoch) // timedelta(microseconds=1)
    assert max(times) < (end - epoch) // timedelta(microseconds=1)

    # Several sites, one large with most of the traffic, each in its own zone.
    per_site = Counter(uuid.UUID(bytes=e.site_id) for e in events)
    by_key = {key: per_site[uuid.UUID(sid)] for key, sid in FIXED_SITES.items()}
    assert len(by_key) >= 4 and all(by_key.values())
    assert by_key[generator.LARGE_SITE.key] > 0.8 * params.events
    assert generator.LARGE_SITE.timezone == "Europe/Berlin"
    assert len({s.timezone for s in SITES}) == len(SITES)

    # Bots: present, flagged by ingest's own classification, about 4 % of the events.
    bots = [e for e in events if e.is_bot]
    assert 0.025 < len(bots) / len(events) < 0.06
    assert {e.device for e in bots} == {"bot"}
    humans = [e for e in events if not e.is_bot]
    assert summary.bot_events == len(bots)

    # Page views dominate; custom events carry properties.
    kinds = Counter(e.kind for e in humans)
    assert kinds[bus_pb2.EVENT_KIND_PAGEVIEW] > 0.85 * len(humans)
    custom = [e for e in humans if e.kind == bus_pb2.EVENT_KIND_CUSTOM]
    assert custom and sum(bool(e.properties) for e in custom) > 0.7 * len(custom)
    assert len({e.name for e in custom}) >= 5

    # Sessions as the processor forms them: a visitor's events at most 30 minutes apart.
    by_visitor: dict[tuple[bytes, int], list[bus_pb2.EnrichedEvent]] = defaultdict(list)
    for event in humans:
        assert event.visitor_id != 0
        by_visitor[(event.site_id, event.visitor_id)].append(event)
    sessions: list[list[bus_pb2.EnrichedEvent]] = []
    for visits in by_visitor.values():
        visits.sort(key=lambda e: _us(e.occurred_at))
        sessions.append([visits[0]])
        for before, after in itertools.pairwise(visits):
            if _us(after.occurred_at) - _us(before.occurred_at) > GAP_US:
                sessions.append([])
            sessions[-1].append(after)
    assert len(sessions) == summary.visits
    bounces = sum(len(s) == 1 and s[0].kind == bus_pb2.EVENT_KIND_PAGEVIEW for s in sessions)
    assert bounces == summary.bounces
    assert 0.15 < bounces / len(sessions) < 0.5
    lengths = [len(s) for s in sessions]
    assert max(lengths) >= 30  # 1 to N page views: a long tail of long visits
    assert 6 < len(humans) / len(sessions) < 14
    duration = sum(_us(s[-1].occurred_at) - _us(s[0].occurred_at) for s in sessions)
    assert duration == summary.duration_us

    # About a fifth of the visitors of a day are identified, and identified users return on several
    # days (an identified visitor keeps one id across days; an anonymous one has one per UTC day).
    identified = {key for key, visits in by_visitor.items() if visits[0].user_id}
    visitor_days = {(e.site_id, e.visitor_id, e.occurred_at.seconds // 86_400) for e in humans}
    identified_days = {
        (site, visitor, day) for site, visitor, day in visitor_days if (site, visitor) in identified
    }
    assert 0.12 < len(identified_days) / len(visitor_days) < 0.3
    assert len(summary.identified_visitors) == len(identified)
    assert len(summary.visitors) == len(by_visitor)
    days_per_user: dict[str, set[date]] = defaultdict(set)
    for event in humans:
        if event.user_id:
            days_per_user[event.user_id].add(datetime.fromtimestamp(event.occurred_at.seconds, UTC).date())
    assert max(len(days) for days in days_per_user.values()) >= 7
    assert sum(len(days) >= 3 for days in days_per_user.values()) >= 10

    # Acquisition on the first event of a visit: every channel, UTM tags on a share.
    firsts = [s[0] for s in sessions]
    channels = Counter(e.referrer_source for e in firsts)
    assert {"direct", "search", "social", "referral", "email", "paid"} <= set(channels)
    assert channels["direct"] < 0.5 * len(firsts)
    assert 0.08 < sum(bool(e.utm_source) for e in firsts) / len(firsts) < 0.25
    assert sum(e.referrer_source == "internal" for s in sessions for e in s[1:]) > 0.9 * sum(
        len(s) - 1 for s in sessions
    )

    # Countries, devices and browsers spread; paths with a long tail.
    assert len({e.country for e in humans}) >= 10
    assert {"desktop", "mobile", "tablet"} <= {e.device for e in humans}
    assert len({e.browser for e in humans}) >= 4 and len({e.os for e in humans}) >= 4
    views = Counter(e.path for e in humans if e.kind == bus_pb2.EVENT_KIND_PAGEVIEW)
    assert len(views) > 500
    top = views.most_common(1)[0][1]
    assert top < 0.2 * sum(views.values())
    assert sum(n for path, n in views.items() if "/blog" in path) > 0.02 * sum(views.values())

    # Diurnal pattern in the large site's zone.
    zone = ZoneInfo(generator.LARGE_SITE.timezone)
    large = uuid.UUID(FIXED_SITES[generator.LARGE_SITE.key]).bytes
    hours = Counter(
        datetime.fromtimestamp(e.occurred_at.seconds, zone).hour for e in humans if e.site_id == large
    )
    assert sum(hours[h] for h in range(10, 14)) > 3 * sum(hours[h] for h in range(2, 6))


@dataclass
class Seeded:
    database_url: str
    params: Params
    site_ids: dict[str, str]
    summaries: dict[str, Summary]
    result: seed.SeedResult
    stored: tuple[int, int]
    auth_address: str
    query_address: str


@pytest.fixture(scope="module")
async def seeded(postgres_server: PostgresServer) -> AsyncIterator[Seeded]:
    """A tiny data set seeded by the benchmark's own code, behind real auth and query servers."""
    name = f"bench_query_{uuid.uuid4().hex[:12]}"
    database_url = postgres_server.create_database(name)
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    await migrate(database_url, "auth", "auth_service.migrations")
    await migrate(database_url, "analytics", "processor_service.migrations")
    await migrate(database_url, "query", "query_service.migrations")
    pool = create_pool(database_url, name="bench-query-test", max_size=4)
    await open_pool(pool)
    auth_server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    auth_server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(pool), ADMIN, "internal-0123456789abcdef"),
        "analytics.v1.AuthService",
    )
    auth_port = await auth_server.start()
    await auth_server.set_serving()
    auth_client = AuthClient(f"127.0.0.1:{auth_port}", ttl_s=0)
    query_server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    health = DatabaseHealth(database_url, query_server.set_not_serving, query_server.set_serving)
    snapshots = Snapshots(pool, health, 30_000)
    query_server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(snapshots, auth_client),
        "analytics.v1.QueryService",
    )
    query_server.add(
        product_pb2_grpc.add_ProductServiceServicer_to_server,
        ProductServicer(snapshots, auth_client),
        "analytics.v1.ProductService",
    )
    query_port = await query_server.start()
    await query_server.set_serving()
    auth_address = f"127.0.0.1:{auth_port}"
    try:
        params = Params(events=12_000, days=10, seed=5)
        # The servers run on this event loop: blocking clients go to a thread.
        site_ids = await asyncio.to_thread(seed.create_sites, auth_address, ADMIN)
        result = await seed.seed(
            database_url,
            params,
            site_ids,
            batch_size=800,
            workers=1,  # a generator process, as in the benchmark
            progress_seconds=60,
            summarize=True,
        )
        stored = await asyncio.to_thread(seed.settle, database_url)
        yield Seeded(
            database_url,
            params,
            site_ids,
            result.summaries,
            result,
            stored,
            auth_address,
            f"127.0.0.1:{query_port}",
        )
    finally:
        await query_server.stop()
        await auth_server.stop()
        await auth_client.close()
        await pool.close()
        postgres_server.drop_database(name)


async def test_seeded_rows_are_counted_by_the_query_service_as_the_generator_says(seeded: Seeded) -> None:
    assert seeded.result.events == seeded.params.events
    assert seeded.stored == (seeded.params.events, seeded.result.visits)
    assert seeded.result.sessions == seeded.result.visits
    zones = await asyncio.to_thread(seed.site_timezones, seeded.auth_address, ADMIN)
    assert {zones[seeded.site_ids[s.key]] for s in SITES} == {s.timezone for s in SITES}
    start, end = generator.data_range(seeded.params)
    metrics = [
        "visitors",
        "visits",
        "pageviews",
        "events",
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
    ]
    async with grpc.aio.insecure_channel(seeded.query_address) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for site in SITES:
            request = query_pb2.QueryRequest(site_id=seeded.site_ids[site.key], metrics=metrics)
            request.date_range.start = start.isoformat()
            request.date_range.end = (end - timedelta(microseconds=1)).isoformat()
            reply = await stub.Query(request, metadata=(("authorization", f"Bearer {ADMIN}"),))
            said = seeded.summaries[site.key]
            visits = said.visits
            expected = [
                len(said.visitors),
                visits,
                said.pageviews,
                said.pageviews + said.custom_events,
                rounded(Fraction(100 * said.bounces, visits)),
                rounded(Fraction(said.duration_us, 1_000_000 * visits)),
                rounded(Fraction(said.visit_pageviews, visits), 2),
            ]
            assert list(reply.results[0].metrics) == expected, site.key


async def test_raw_sql_answers_every_question_as_the_query_rpc_does(seeded: Seeded, tmp_path: Path) -> None:
    site_id = seeded.site_ids[generator.LARGE_SITE.key]
    key = await asyncio.to_thread(seed.read_key, seeded.auth_address, ADMIN, site_id)

    def run() -> list[Measurement]:
        with (
            grpc.insecure_channel(seeded.query_address) as channel,
            psycopg.connect(seeded.database_url, autocommit=True) as conn,
        ):
            ctx = Context(conn, site_id, ZoneInfo(generator.LARGE_SITE.timezone), seeded.params.end)
            return measure(
                channel,
                [("x-api-key", key)],
                ctx,
                QUERIES,
                repetitions=2,
                warmup=1,
                raw_repetitions=1,
                raw_warmup=0,
                today=seeded.params.end,
                log=lambda line: None,
            )

    measurements = await asyncio.to_thread(run)
    assert [m.name for m in measurements] == list(NAMES)
    for m in measurements:
        assert m.error is None, m.name
        assert m.difference is None, f"{m.name}: {m.difference}"
        assert len(m.rpc_s) == 2 and len(m.raw_s) == 1
    # The data set has those rows: the comparison is not between two empty answers.
    rows = {m.name: m for m in measurements}
    assert rows["breakdown_page_30d"].agree and rows["filter_country_30d"].agree

    # The result file: {"events": N, "queries": {name: {p50_ms, p95_ms, raw_p95_ms, speedup}}}.
    marker = seed.marker_document(seeded.params, seeded.site_ids, seeded.result, *seeded.stored)
    out = tmp_path / "query.json"
    report.write(out, document(measurements, marker, seeded_now=True, machine=report.machine(), settings={}))
    written = json.loads(out.read_text())
    assert written["events"] == seeded.params.events
    assert set(written["queries"]) == set(NAMES)
    for name, figures in written["queries"].items():
        for field in ("p50_ms", "p95_ms", "raw_p95_ms", "speedup"):
            assert isinstance(figures[field], float), (name, field)
        assert figures["p50_ms"] <= figures["p95_ms"]
        assert figures["speedup"] == round(figures["raw_p95_ms"] / figures["p95_ms"], 2)
        assert figures["answers_agree"] is True
    assert written["data_set"]["sessions"] == seeded.result.visits
    assert written["data_set"]["params"] == seeded.params.as_json()
    assert {"nproc", "cpu_model", "date", "load_average_at_start", "load_average_at_end"} <= set(
        written["machine"]
    )


def test_a_data_set_is_reused_only_with_the_same_parameters(tmp_path: Path) -> None:
    params = Params(events=5000, days=4)
    (tmp_path / seed.POSTGRES).mkdir()
    (tmp_path / seed.POSTGRES / "PG_VERSION").write_text("15\n")
    assert seed.reusable(tmp_path, params) is None  # no marker: an unfinished seed
    seed.write_marker(tmp_path, {"params": params.as_json(), "events": 5000})
    assert seed.reusable(tmp_path, params) is not None
    assert seed.reusable(tmp_path, Params(events=5000, days=4, seed=2)) is None
    assert seed.reusable(tmp_path, Params(events=6000, days=4)) is None
    seed.wipe(tmp_path)
    assert not (tmp_path / seed.POSTGRES).exists()
    assert seed.reusable(tmp_path, params) is None


def test_runs_stop_at_the_repetitions_or_after_the_time_budget() -> None:
    samples: list[float] = []
    timed = []
    for run in _runs(2, 20, 1.0, samples):
        timed.append(run)
        if run:
            samples.append(0.3)
    assert timed[:2] == [False, False]
    assert len(samples) == 5  # the minimum, although 4 runs already took the budget
    fast: list[float] = []
    for _ in _runs(0, 7, 1.0, fast):
        fast.append(0.001)
    assert len(fast) == 7
    assert percentile([0.004, 0.001, 0.002, 0.003], 0.5) == 2.0
    assert percentile([0.001 * n for n in range(1, 21)], 0.95) == 19.0
    assert percentile([], 0.95) is None


def test_the_table_marks_targets_and_warns_when_answers_differ() -> None:
    fast = Measurement("aggregate_30d", "all metrics", 50.0, rpc_s=[0.01] * 5, raw_s=[1.0])
    slow = Measurement("aggregate_90d", "all metrics", 150.0, rpc_s=[0.2] * 5, raw_s=[2.0])
    slow.difference = "row 0 (): metrics (1.0,) (Query) vs (2.0,) (raw SQL)"
    failed = Measurement("comparison_30d", "all metrics", None, raw_s=[1.0], error="DEADLINE_EXCEEDED: late")
    lines = table([fast, slow, failed]).splitlines()
    assert lines[2].split() == ["aggregate_30d", "10.0", "10.0", "1,000", "100.0x", "<", "50", "ms", "met"]
    assert lines[3].split()[-1] == "MISSED"
    assert lines[4].endswith("FAILED: DEADLINE_EXCEEDED: late")
    assert lines[5] == f"  WARNING aggregate_90d: the Query RPC and raw SQL disagree: {slow.difference}"


async def test_the_product_questions_have_people_to_count(seeded: Seeded) -> None:
    """The funnel and the cohorts the benchmark times are not empty on the generated traffic."""
    site_id = seeded.site_ids[generator.LARGE_SITE.key]
    key = await asyncio.to_thread(seed.read_key, seeded.auth_address, ADMIN, site_id)
    questions = {q.name: q for q in QUERIES}

    def ask(name: str) -> list[Row]:
        with grpc.insecure_channel(seeded.query_address) as channel:
            return questions[name].answer(channel, site_id, seeded.params.end, [("x-api-key", key)], 60.0)

    funnel = await asyncio.to_thread(ask, "funnel_4_steps_30d")
    assert [row.dimensions[0] for row in funnel] == ["Visit /pricing", "add_to_cart", "signup", "purchase"]
    converted = [row.metrics[1] for row in funnel]
    assert converted[0] > converted[1] > 0, converted
    cohorts = await asyncio.to_thread(ask, "retention_8_weeks")
    assert len(cohorts) in (8, 9)
    assert sum(row.metrics[0] for row in cohorts) > 0
    # Signed-in visitors come back in a later week.
    assert sum(sum(row.metrics[2:10]) for row in cohorts) > 0
