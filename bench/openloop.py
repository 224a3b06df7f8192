"""Open-loop HTTP load at a fixed offered rate; latency counted from each request's scheduled send time.

Runs as its own process (``python -m bench.openloop …``) so the benchmark's other work cannot delay it,
and without asyncio, so that it takes little of the CPU it shares with the stack it measures.
Requests are sent on schedule whatever the answers do; a request waiting for a free connection is
still timed from its scheduled moment, so a slow server cannot hide its queueing (no coordinated
omission). Prints progress, writes the acknowledged event ids and a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import selectors
import socket
import sys
import time
from collections import deque
from pathlib import Path

_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_READ_TIMEOUT_S = 10.0
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_CLOSE = re.compile(rb"(?i)\r\nconnection:\s*close")
_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def _requests(args: argparse.Namespace, total: int) -> list[bytes]:
    if args.request == "health":
        # The edge's floor: a GET Envoy turns into ingest's GetHealth, no event behind it.
        health = (
            f"GET /health HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUser-Agent: {_USER_AGENT}\r\n\r\n"
        ).encode()
        return [health] * total
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


class _Connection:
    """One keep-alive connection with at most one request in flight."""

    __slots__ = ("buffer", "deadline", "index", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.index = -1
        self.deadline = 0.0


def _answer(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """(head, body) once the buffer holds a whole answer; None while more bytes are due."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    match = _LENGTH.search(head)
    if match is None:
        raise ValueError("answer without Content-Length")
    length = int(match[1])
    if len(buffer) < end + 4 + length:
        return None
    return head, bytes(buffer[end + 4 : end + 4 + length])


def run(args: argparse.Namespace) -> dict[str, object]:
    """One thread, one selector, blocking sends of small requests: a few tens of µs of CPU each,
    so the load generator takes little of the machine it measures."""
    warmup_n = int(args.rate * args.warmup)
    total = warmup_n + int(args.rate * args.seconds)
    requests = _requests(args, total)
    selector = selectors.DefaultSelector()
    idle: list[_Connection] = []
    busy: set[_Connection] = set()
    backlog: deque[int] = deque()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    acked: list[bytes] = []
    finished_flags = bytearray(total)
    done = errors = connects = measured_ok = 0
    max_lag = last_finish = 0.0
    clock = time.monotonic
    start = clock() + 0.2
    measure_start = start + warmup_n / args.rate
    last_print, printed_done = start, 0

    def close(connection: _Connection) -> None:
        busy.discard(connection)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection.sock)
        connection.sock.close()

    def finish(index: int, status: str, finished: float) -> None:
        nonlocal done, measured_ok, last_finish
        done += 1
        finished_flags[index] = 1
        statuses[status] = statuses.get(status, 0) + 1
        if index >= warmup_n:
            latencies.append(finished - (start + index / args.rate))
            if status == "200":
                measured_ok += 1
                last_finish = max(last_finish, finished)

    def fail(index: int, error: str, connection: _Connection | None = None) -> None:
        nonlocal errors
        # A failed request counts with the time it waited: a lower bound, never left out.
        errors += 1
        finish(index, error, clock())
        if connection is not None:
            close(connection)

    def receive(connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
            if not data:
                raise ConnectionResetError("connection closed by the server")
            connection.buffer += data
            answer = _answer(connection.buffer)
        except (OSError, ValueError) as error:
            fail(connection.index, type(error).__name__, connection)
            return
        if answer is None:
            return
        head, body = answer
        status = head[9:12].decode()
        if status == "200" and args.request == "event" and (found := _ID.search(body)):
            acked.append(found[0])
        finish(connection.index, status, clock())
        if _CLOSE.search(head):
            close(connection)
            return
        connection.buffer.clear()
        busy.discard(connection)
        idle.append(connection)

    def send(index: int, now: float) -> None:
        nonlocal connects
        if idle:
            connection = idle.pop()
        else:
            try:
                sock = socket.create_connection((args.host, args.port), timeout=5)
            except OSError as error:
                fail(index, type(error).__name__)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            selector.register(sock, selectors.EVENT_READ, connection)
            connects += 1
        connection.index = index
        connection.deadline = now + _READ_TIMEOUT_S
        busy.add(connection)
        try:
            connection.sock.sendall(requests[index])
        except OSError as error:
            fail(index, type(error).__name__, connection)

    next_index = 0
    next_timeout_check = start
    drain_deadline: float | None = None
    send_end = start
    while True:
        now = clock()
        while next_index < total and start + next_index / args.rate <= now:
            max_lag = max(max_lag, now - (start + next_index / args.rate))
            backlog.append(next_index)
            next_index += 1
        while backlog and (idle or len(busy) < args.connections):
            send(backlog.popleft(), now)
        if now >= next_timeout_check:
            next_timeout_check = now + 0.1
            for connection in [c for c in busy if c.deadline < now]:
                fail(connection.index, "TimeoutError", connection)
        if now - last_print >= args.progress and next_index > 0:
            recent = sorted(latencies[-int(args.rate * args.progress) :])
            if not recent:
                print(f"[{args.label}] {now - start:6.1f}s sent={next_index:,} (warming up)", flush=True)
            else:
                print(
                    f"[{args.label}] {now - start:6.1f}s sent={next_index:,} answered={done:,} "
                    f"({(done - printed_done) / (now - last_print):,.0f}/s) errors={errors} "
                    f"recent p50={_quantile(recent, 0.5)} ms p99={_quantile(recent, 0.99)} ms",
                    flush=True,
                )
            last_print, printed_done = now, done
        if next_index >= total and not backlog:
            if drain_deadline is None:
                send_end = now
                drain_deadline = now + _READ_TIMEOUT_S * 2 + 5
            if not busy or now > drain_deadline:
                break
        wait = start + next_index / args.rate - now if next_index < total and not backlog else 0.05
        for key, _ in selector.select(min(max(wait, 0.0), 0.05)):
            receive(key.data)
    gave_up = clock()
    for connection in [*busy, *idle]:
        close(connection)
    unanswered = [i for i in range(warmup_n, total) if not finished_flags[i]]
    # Requests never answered count as slow as the time they were still waiting (a lower bound).
    latencies.extend(gave_up - (start + i / args.rate) for i in unanswered)
    Path(args.ids).write_bytes(b"".join(i + b"\n" for i in acked))
    ordered = sorted(latencies)
    measured = total - warmup_n
    return {
        "offered_rps": args.rate,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "sent": total,
        "answered": done,
        "ok": statuses.get("200", 0),
        "statuses": statuses,
        "errors": errors,
        "connections_opened": connects,
        "achieved_send_rps": round(total / (send_end - start), 1) if send_end > start else None,
        "max_schedule_lag_ms": round(max_lag * 1000, 3),
        "measured": measured,
        "unanswered": len(unanswered),
        # Below the offered rate means the edge could not keep up: latencies then grow with the queue.
        "answered_rps": round(measured_ok / (last_finish - measure_start), 1)
        if last_finish > measure_start
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
    parser.add_argument("--request", choices=("event", "health"), default="event")
    parser.add_argument("--site", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--prefix", default="", help="event id up to the 12-digit counter")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--progress", type=float, default=3.0)
    parser.add_argument("--label", default="http_latency", help="names the phase in progress lines")
    parser.add_argument("--ids", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.request == "event" and not (args.site and args.key and args.prefix):
        parser.error("--request event needs --site, --key and --prefix")
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        summary = run(args)
        summary["wall_s"] = round(time.monotonic() - started, 3)
        Path(args.out).write_text(json.dumps(summary))
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
