"""Health probes and the metrics endpoint of a worker or pool process, on `--metrics-port` when set.

`/metrics` (Prometheus), `/healthz` (liveness: the event loop turns and no agent has crashed
without recovering) and `/readyz` (readiness: partitions assigned and the model pool answering).
The server runs in a thread, so a stuck event loop is seen as a stale health snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

STALE_AFTER_S = 30  # a health snapshot older than this means the event loop is stuck


@dataclass
class Health:
    """Snapshots written by the worker's event loop, read by the probe thread."""

    live: dict = field(default_factory=lambda: {"ok": False, "detail": "starting"})
    ready: dict = field(default_factory=lambda: {"ok": False, "detail": "starting"})
    at: float = field(default_factory=time.monotonic)

    def update(self, live_ok: bool, live_detail: str, ready_ok: bool, ready_detail: str) -> None:
        self.live, self.ready = {"ok": live_ok, "detail": live_detail}, {"ok": ready_ok, "detail": ready_detail}
        self.at = time.monotonic()

    def probe(self, which: str) -> tuple[int, dict]:
        age = time.monotonic() - self.at
        if age > STALE_AFTER_S:
            return 503, {"ok": False, "detail": f"event loop has not reported for {age:.0f}s"}
        state = self.live if which == "healthz" else self.ready
        return (200 if state["ok"] else 503), state


HEALTH = Health()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0].strip("/")
        if path == "metrics":
            status, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
        elif path in ("healthz", "readyz"):
            status, state = HEALTH.probe(path)
            body, kind = json.dumps(state).encode(), "application/json"
        else:
            status, body, kind = 404, b"try /metrics, /healthz or /readyz\n", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # probes every few seconds would flood the log
        pass


def serve_metrics(port: int) -> None:
    if port:
        server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
