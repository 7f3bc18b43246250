"""Prometheus metrics and health probes of the worker process, on `--metrics-port` when set.

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

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

VERDICTS = Counter("guardstream_verdicts_total", "Verdicts counted by analytics (after de-duplication)",
                   ["tenant", "risk_level", "category"])
DEAD_LETTERS = Counter("guardstream_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "error_code"])
GEN_BATCH_SECONDS = Histogram("guardstream_gen_batch_seconds", "Time to moderate one Gen micro-batch",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STREAM_BATCH_SECONDS = Histogram("guardstream_stream_batch_seconds", "Time to judge one batch of reply chunks and "
                                 "deliver its verdicts (each chunk's time inside the worker)",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_RECORDS = Histogram("guardstream_batch_records", "Records per agent batch sent to the model pool", ["agent"],
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
ACTIONS = Counter("guardstream_actions_total", "Actions emitted by enforcement", ["tenant", "action"])
BATCH_FAILURES = Counter("guardstream_batch_failures_total",
                         "Batches (or single records) whose step failed permanently and was narrowed down", ["agent"])
RETRIES = Counter("guardstream_retries_total", "Transient failures retried while the agent held its offsets", ["agent"])
CONSUMER_LAG = Gauge("guardstream_consumer_lag", "Records after the last committed offset, per topic and partition",
                     ["topic", "partition"])
TABLE_ENTRIES = Gauge("guardstream_table_entries", "Keys held in a Faust table by this worker", ["table"])
CHANGELOG_BYTES = Counter("guardstream_changelog_bytes_total", "Bytes of table values written to changelogs", ["table"])
ACTOR_RSS = Gauge("guardstream_actor_rss_bytes", "Resident memory of each model actor, as it last reported",
                  ["kind", "actor"])
ACTOR_KV = Gauge("guardstream_actor_kv_bytes", "KV cache of each Stream actor: held by sessions (used), allocated "
                 "(reserved) and allowed (budget, stream_kv_cache_mb)", ["pool", "actor", "kind"])
KV_EVICTIONS = Gauge("guardstream_actor_kv_evictions", "Sessions each Stream actor closed to make room in its KV cache "
                     "(rebuilt when they come back)", ["pool", "actor"])
STREAM_REBUILDS = Counter("guardstream_stream_rebuilds_total", "Stream sessions sent again with their history because "
                          "their actor had lost them (restart, eviction) or held another number of tokens")
LATE_VERDICTS = Counter("guardstream_analytics_late_total",
                        "Verdicts not counted because their window ended more than the retention ago", ["tenant"])

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
