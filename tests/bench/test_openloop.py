"""The open-loop client against a small HTTP server: what it sends, what it counts, which ids it keeps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = "0f0e0d0c-0b0a-4000-8000-000000000001"
PREFIX = "0000abcd-0400-4000-8000-"


class _Edge(BaseHTTPRequestHandler):
    """Answers like the edge: GET /health with a status, POST /api/event with the event's id."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    seen: list[tuple[str, str, str]] = []

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("x-api-key", "")))
        self._answer(b'{"status":"ok"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, self.headers.get("x-api-key", "")))
        self._answer(json.dumps({"event_id": json.loads(body)["event_id"]}).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def edge() -> Iterator[int]:
    _Edge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Edge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _open_loop(port: int, tmp_path: Path, *extra: str) -> tuple[dict[str, object], list[str]]:
    ids, out = tmp_path / "ids.txt", tmp_path / "out.json"
    command = [sys.executable, "-m", "bench.openloop", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--rate", "200", "--seconds", "1", "--warmup", "0", "--connections", "4"]
    command += ["--progress", "5", "--ids", str(ids), "--out", str(out), *extra]
    subprocess.run(command, cwd=REPO, check=True, timeout=60, capture_output=True)
    return json.loads(out.read_text()), ids.read_text().split()


def test_events_are_posted_with_the_key_and_their_acknowledged_ids_kept(edge: int, tmp_path: Path) -> None:
    summary, ids = _open_loop(edge, tmp_path, "--site", SITE, "--key", "k-1", "--prefix", PREFIX)
    assert summary["sent"] == summary["ok"] == 200
    assert summary["statuses"] == {"200": 200}
    assert sorted(ids) == [f"{PREFIX}{n:012x}" for n in range(200)]  # in the order answers came
    assert set(_Edge.seen) == {("POST", "/api/event", "k-1")}


def test_the_health_floor_sends_gets_and_keeps_no_ids(edge: int, tmp_path: Path) -> None:
    summary, ids = _open_loop(edge, tmp_path, "--request", "health", "--label", "http_floor")
    assert summary["sent"] == summary["ok"] == 200
    assert isinstance(summary["p99_ms"], float)
    assert ids == []
    assert _Edge.seen == [("GET", "/health", "")] * 200


def test_events_need_a_site_a_key_and_an_id_prefix(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.openloop", "--host", "127.0.0.1", "--port", "1", "--rate", "1"]
    command += ["--seconds", "1", "--ids", str(tmp_path / "i"), "--out", str(tmp_path / "o")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert re.search(r"--request event needs --site, --key and --prefix", done.stderr)
