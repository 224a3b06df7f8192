"""Exactly once: every acknowledged event id stored once, nothing stored twice."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg


@dataclass(frozen=True)
class Check:
    phase: str
    acknowledged: int
    stored_rows: int
    distinct_ids: int
    missing_acknowledged: int
    unacknowledged_stored: int

    @property
    def duplicates(self) -> int:
        return self.stored_rows - self.distinct_ids

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "duplicates": self.duplicates}


def check(database_url: str, phase: str, site_id: str, acknowledged: list[str]) -> Check:
    """Compares the acknowledged ids of one site (each phase has its own) with its stored rows.

    Unacknowledged but stored events (a call that timed out after its PubAck, requests still in
    flight when a load tool stopped) are reported, not counted as errors: nobody was promised them.
    """
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        conn.execute("SET statement_timeout = '300s'")
        conn.execute("CREATE TEMP TABLE acked (event_id uuid NOT NULL)")
        with conn.cursor() as cur, cur.copy("COPY acked (event_id) FROM STDIN") as copy:
            for event_id in acknowledged:
                copy.write_row((event_id,))
        # The site's ids in a table of their own with fresh statistics: estimated from a chunk
        # analyzed while it was still small, the planner would compare them pair by pair.
        conn.execute(
            "CREATE TEMP TABLE stored AS SELECT event_id FROM analytics.events WHERE site_id = %(site)s",
            {"site": site_id},
        )
        conn.execute("ANALYZE acked, stored")
        row = conn.execute(
            """
            WITH ids AS (SELECT DISTINCT event_id FROM acked)
            SELECT (SELECT count(*) FROM stored),
                   (SELECT count(DISTINCT event_id) FROM stored),
                   (SELECT count(*) FROM ids WHERE NOT EXISTS
                        (SELECT 1 FROM stored WHERE stored.event_id = ids.event_id)),
                   (SELECT count(DISTINCT event_id) FROM stored WHERE NOT EXISTS
                        (SELECT 1 FROM ids WHERE ids.event_id = stored.event_id)),
                   (SELECT count(*) FROM ids)
            """
        ).fetchone()
        conn.rollback()
    assert row is not None
    stored, distinct, missing, extra, unique_acked = (int(v) for v in row)
    if unique_acked != len(acknowledged):
        # The same id acknowledged twice would mean the load generator reused ids: a harness bug.
        raise RuntimeError(f"{phase}: {len(acknowledged) - unique_acked} event ids were acknowledged twice")
    return Check(phase, len(acknowledged), stored, distinct, missing, extra)
