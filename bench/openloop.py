"""Open-loop HTTP load at a fixed offered rate; latency counted from each request's scheduled send time.

Runs as its own process (``python -m bench.openloop …``) so the benchmark's other work cannot delay it.
Requests are sent on schedule whatever the answers do; a request waiting for a free connection is
still timed from its scheduled moment, so a slow server cannot hide its queueing (no coordinated
omission). Prints progress, writes the acknowledged event ids and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from pathlib import Path

_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_READ_TIMEOUT_S = 10.0
_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def _requests(args: argparse.Namespace, total: int) -> list[bytes]:
    head = (
        f"POST /api/event HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nContent-Type: application/json\r\n"
        f"x-api-key: {args.key}\r\nUser-Agent: {_USER_AGENT}\r\n"
    ).encode()
    built = []
    for n in range(total):
        body = (
            f'{{"site_id":"{args.site}","event_type":"pageview","path":"/docs/page-{n % 16}",'
            f'"url":"https://bench.example.com/docs/page-{n % 16}","event_id":"{args.prefix}{n:012x}"}}'
        ).encode()
        built.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return built


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    warmup_n = int(args.rate * args.warmup)
    total = warmup_n + int(args.rate * args.seconds)
    requests = _requests(args, total)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    acked: list[bytes] = []
    finished_flags = bytearray(total)
    state = {"done": 0, "errors": 0, "connects": 0, "max_lag": 0.0, "last_finish": 0.0, "measured_ok": 0}

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (item := await queue.get()) is not None:
            index, scheduled = item
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), 5)
                    state["connects"] += 1
                writer.write(requests[index])
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
                status = head[9:12].decode()
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match is None:
                    raise ValueError("answer without Content-Length")
                body = await asyncio.wait_for(reader.readexactly(int(match[1])), _READ_TIMEOUT_S)
                finished = loop.time()
                if re.search(rb"(?i)\r\nconnection:\s*close", head):
                    writer.close()
                    reader = writer = None
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
                finished_flags[index] = 1
                if index >= warmup_n:
                    # A failed request counts with the time it waited: a lower bound, never left out.
                    latencies.append(loop.time() - scheduled)
                state["errors"] += 1
                statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            finally:
                state["done"] += 1
            finished_flags[index] = 1
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                found = _ID.search(body)
                if found:
                    acked.append(found[0])
            if index >= warmup_n:
                latencies.append(finished - scheduled)
                if status == "200":
                    state["measured_ok"] += 1
                    state["last_finish"] = max(state["last_finish"], finished)
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(args.connections)]
    start = loop.time() + 0.2
    last_print, printed_done = start, 0
    for index in range(total):
        when = start + index / args.rate
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        state["max_lag"] = max(state["max_lag"], loop.time() - when)
        queue.put_nowait((index, when))
        now = loop.time()
        if now - last_print >= args.progress:
            recent = sorted(latencies[-int(args.rate * args.progress) :])
            if not recent:
                print(f"[http_latency] {now - start:6.1f}s sent={index + 1:,} (warming up)", flush=True)
                last_print, printed_done = now, state["done"]
                continue
            print(
                f"[http_latency] {now - start:6.1f}s sent={index + 1:,} answered={state['done']:,} "
                f"({(state['done'] - printed_done) / (now - last_print):,.0f}/s) errors={state['errors']} "
                f"recent p50={_quantile(recent, 0.5)} ms p99={_quantile(recent, 0.99)} ms",
                flush=True,
            )
            last_print, printed_done = now, state["done"]
    send_end = loop.time()
    measure_start = start + warmup_n / args.rate
    for _ in workers:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=_READ_TIMEOUT_S * 2 + 5)
    for task in pending:
        task.cancel()
    gave_up = loop.time()
    unanswered = [i for i in range(warmup_n, total) if not finished_flags[i]]
    # Requests never answered count as slow as the time they were still waiting (a lower bound).
    latencies.extend(gave_up - (start + i / args.rate) for i in unanswered)
    await asyncio.to_thread(Path(args.ids).write_bytes, b"".join(i + b"\n" for i in acked))
    ordered = sorted(latencies)
    measured = total - warmup_n
    return {
        "offered_rps": args.rate,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "sent": total,
        "answered": state["done"],
        "ok": statuses.get("200", 0),
        "statuses": statuses,
        "errors": state["errors"],
        "connections_opened": state["connects"],
        "achieved_send_rps": round(total / (send_end - start), 1) if send_end > start else None,
        "max_schedule_lag_ms": round(state["max_lag"] * 1000, 3),
        "measured": measured,
        "unanswered": len(unanswered),
        # Below the offered rate means the edge could not keep up: latencies then grow with the queue.
        "answered_rps": round(state["measured_ok"] / (state["last_finish"] - measure_start), 1)
        if state["last_finish"] > measure_start
        else None,
        "timed": len(latencies),
        "p50_ms": _quantile(ordered, 0.50),
        "p90_ms": _quantile(ordered, 0.90),
        "p99_ms": _quantile(ordered, 0.99),
        "p999_ms": _quantile(ordered, 0.999),
        "max_ms": round(ordered[-1] * 1000, 3) if ordered else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--prefix", required=True, help="event id up to the 12-digit counter")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--progress", type=float, default=3.0)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        summary = asyncio.run(run(args))
        summary["wall_s"] = round(time.monotonic() - started, 3)
        Path(args.out).write_text(json.dumps(summary))
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
