"""Rebuilds the report rollups of sites over a range of days from their raw events and visits.

    python -m processor_service.rebuild --site UUID [--site UUID ...] --from 2024-01-01 --to 2024-03-31
    python -m processor_service.rebuild --all-sites --from 2024-01-01 --to 2024-03-31

For backfills and imports that bypassed the processor, or after restoring raw data. The range is
of UTC days, both ends included. Each day is one transaction (tables) or one refresh (continuous
aggregates), so an interrupted rebuild can be run again; progress goes to stderr. The database
comes from ANALYTICS_DATABASE_URL (or --database-url).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

import psycopg

from analytics_config.names import DATABASE_URL
from processor_service import rollups

_SITES = """
SELECT DISTINCT site_id FROM analytics.events WHERE time >= %(start)s AND time < %(end)s
UNION SELECT DISTINCT site_id FROM analytics.sessions WHERE started_at >= %(start)s AND started_at < %(end)s
"""


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _site(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a site id (a UUID)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m processor_service.rebuild",
        description="Rebuild the report rollups from raw events and visits, day by day.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--site", type=_site, action="append", help="a site id (repeatable)")
    which.add_argument("--all-sites", action="store_true", help="every site with data in the range")
    parser.add_argument("--from", dest="first", type=_day, required=True, help="first UTC day")
    parser.add_argument("--to", dest="last", type=_day, required=True, help="last UTC day (included)")
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL, ""))
    return parser


def _progress(out: TextIO, done: int, total: int, day: date, started: float) -> None:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else 0.0
    out.write(
        f"rebuild: {done}/{total} days ({100 * done // total}%), {day} done, "
        f"{elapsed:.1f} s elapsed, ~{left:.0f} s left\n"
    )
    out.flush()


async def rebuild(
    url: str, sites: list[uuid.UUID] | None, first: date, last: date, out: TextIO = sys.stderr
) -> int:
    """Rebuilds every day of [first, last]; returns the number of days."""
    days = (last - first).days + 1
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        mode = await rollups.detect(conn)
        await conn.commit()
        if mode is rollups.Mode.NONE:
            raise SystemExit(
                "the analytics schema has no rollups yet: start the processor once to migrate it"
            )
        out.write(f"rebuild: {days} days from {first} to {last} ({mode.value})\n")
        seen: set[uuid.UUID] = set(sites or ())
        for index in range(days):
            day = first + timedelta(days=index)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            chosen = sites
            if chosen is None:
                cur = await conn.execute(_SITES, {"start": at, "end": at + rollups.DAY})
                chosen = [row[0] for row in await cur.fetchall()]
                await conn.commit()
            seen.update(chosen)
            await rollups.rebuild_day(conn, mode, chosen, at)
            _progress(out, index + 1, days, day, started)
        begin = datetime(first.year, first.month, first.day, tzinfo=UTC)
        fixed = await rollups.fix_later(conn, sorted(seen), begin)
        out.write(f"rebuild: visitors' earlier days brought up to date on {fixed} later rows\n")
    return days


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.database_url:
        print(f"a database is needed: --database-url or {DATABASE_URL}", file=sys.stderr)
        return 2
    if args.last < args.first:
        print("--to must not be before --from", file=sys.stderr)
        return 2
    asyncio.run(rebuild(args.database_url, None if args.all_sites else args.site, args.first, args.last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
