"""The machine's ceiling: the same rows COPYed (binary, declared types) straight into a hypertable."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from processor_service.writer import COLUMNS

_NAMES = ", ".join(name for name, _ in COLUMNS)
_TYPES = [type_ for _, type_ in COLUMNS]
_EVENT_ID = [name for name, _ in COLUMNS].index("event_id")
_JSONB = [i for i, (_, type_) in enumerate(COLUMNS) if type_ == "jsonb"]

Row = tuple[object, ...]


@dataclass
class CopyResult:
    mode: str
    rows: int = 0
    transactions: int = 0
    busy_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.busy_s if self.busy_s else 0.0


def _table_sql(table: str) -> list[str]:
    # LIKE … INCLUDING ALL copies defaults and the indexes analytics.events has, among them the unique
    # idempotency key; no default time index is added, as analytics.events has none.
    return [
        "CREATE SCHEMA IF NOT EXISTS bench",
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (LIKE analytics.events INCLUDING ALL)",
        f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => INTERVAL '1 day', "
        "create_default_indexes => false)",
    ]


def sample_rows(database_url: str, site_id: str, limit: int = 2000) -> list[Row]:
    """Real rows the pipeline stored, in the processor writer's column order."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute(
            f"SELECT {_NAMES} FROM analytics.events WHERE site_id = %s LIMIT %s",
            (site_id, limit),
        ).fetchall()
    fixed: list[Row] = []
    for row in rows:
        values = list(row)
        for index in _JSONB:
            values[index] = Jsonb(values[index])
        fixed.append(tuple(values))
    return fixed


def copy_rows(
    database_url: str,
    templates: list[Row],
    *,
    staging: bool,
    seconds: float,
    batch_rows: int,
    progress: Callable[[CopyResult], None],
    stop: threading.Event,
) -> CopyResult:
    """COPY batches of ``batch_rows`` rows, one transaction each, until ``seconds`` of database time.

    Only the COPY and commit are timed; building the next batch (new event ids) is not.
    staging=True repeats the processor's path instead: COPY into a temp table, then
    INSERT … SELECT … ON CONFLICT DO NOTHING.
    """
    if not templates:
        raise RuntimeError("no sample rows to copy: the end-to-end phase stored nothing")
    table = "bench.raw_staged" if staging else "bench.raw_events"
    result = CopyResult("staging_upsert" if staging else "direct")
    counter = 0
    # A statement timeout so a wedged server ends the phase with an error instead of hanging it.
    with psycopg.connect(
        database_url, connect_timeout=10, autocommit=True, options="-c statement_timeout=120s"
    ) as conn:
        for statement in _table_sql(table):
            conn.execute(statement)  # type: ignore[arg-type]
        conn.autocommit = False
        if staging:
            conn.execute(
                f"CREATE TEMP TABLE bench_staging (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )  # type: ignore[arg-type]
            conn.commit()
        target = "bench_staging" if staging else table
        insert = f"INSERT INTO {table} ({_NAMES}) SELECT {_NAMES} FROM bench_staging ON CONFLICT DO NOTHING"
        last_report = time.monotonic()
        while result.busy_s < seconds and not stop.is_set():
            batch: list[Row] = []
            for _ in range(batch_rows):
                values = list(templates[counter % len(templates)])
                values[_EVENT_ID] = uuid.UUID(int=(0xBE << 120) | counter)
                batch.append(tuple(values))
                counter += 1
            started = time.perf_counter()
            with conn.cursor() as cur:
                with cur.copy(f"COPY {target} ({_NAMES}) FROM STDIN (FORMAT BINARY)") as copy:  # type: ignore[arg-type]
                    copy.set_types(_TYPES)
                    for row in batch:
                        copy.write_row(row)
                if staging:
                    cur.execute(insert)  # type: ignore[arg-type]
            conn.commit()
            result.busy_s += time.perf_counter() - started
            result.rows += len(batch)
            result.transactions += 1
            if time.monotonic() - last_report >= 3:
                progress(result)
                last_report = time.monotonic()
        stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
        conn.commit()
    if not stop.is_set() and (stored is None or int(stored[0]) != result.rows):
        raise RuntimeError(f"{table} holds {stored} rows, expected {result.rows}")
    return result
