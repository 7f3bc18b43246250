"""Health probes and the metrics endpoint of a worker or pool process, on `--metrics-port` when set
(bound to `metrics_host`: loopback unless told otherwise; the chart binds the pod's addresses).
With `health_port` set, the probes answer there instead, on a server of their own: scrapers (and
whoever else reaches the metrics port) cannot take the connections kubelet's probes need, and the
chart's NetworkPolicy can admit the two from different sources.

`/metrics` (Prometheus), `/healthz` (liveness: the event loop turns and no agent has crashed
without recovering) and `/readyz` (readiness: partitions assigned and the model pool answering).
The server runs in a thread, so a stuck event loop is seen as a stale health snapshot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
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

    @contextmanager
    def busy(self, doing: str, every_s: float = 5.0) -> Iterator[None]:
        """While a long blocking step runs (loading models, waiting for the pool): alive, not ready,
        saying what it does, and kept fresh from a thread so the stale check does not fire."""
        done = threading.Event()

        def report() -> None:
            while not done.is_set():
                self.update(True, doing, False, doing)
                done.wait(every_s)

        reporter = threading.Thread(target=report, name="health-busy", daemon=True)
        reporter.start()
        try:
            yield
        finally:
            done.set()
            reporter.join()

    def probe(self, which: str) -> tuple[int, dict]:
        age = time.monotonic() - self.at
        if age > STALE_AFTER_S:
            return 503, {"ok": False, "detail": f"event loop has not reported for {age:.0f}s"}
        state = self.live if which == "healthz" else self.ready
        return (200 if state["ok"] else 503), state


HEALTH = Health()


def _endpoints(paths: tuple[str, ...]):
    """A server's whole app, as plain ASGI: these GET paths, nothing read from the request."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].strip("/")
        if path == "metrics" and path in paths:
            status, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
        elif path in ("healthz", "readyz") and path in paths:
            status, state = HEALTH.probe(path)
            body, kind = json.dumps(state).encode(), "application/json"
        else:
            status, body, kind = 404, f"try /{', /'.join(paths)}\n".encode(), "text/plain"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def _serve(paths: tuple[str, ...], port: int, host: str, connections: int) -> None:
    config = uvicorn.Config(_endpoints(paths), host=host, port=port, log_level="warning", log_config=None,
                            access_log=False, lifespan="off", loop="asyncio", timeout_keep_alive=5,
                            limit_concurrency=connections, h11_max_incomplete_event_size=16 * 1024)
    threading.Thread(target=uvicorn.Server(config).run, name=f"http-{paths[0]}", daemon=True).start()


def serve_metrics(port: int, host: str = "127.0.0.1", health_port: int = 0) -> None:
    """uvicorn, in threads with their own event loops (so a stuck worker loop shows as stale health),
    with short keep-alive and header limits: probes and scrapes are small and quick. The probes are
    on `health_port` when it is set (16 connections of their own), else beside the metrics (64)."""
    if health_port:
        _serve(("healthz", "readyz"), health_port, host, 16)
    if port:
        _serve(("metrics",) if health_port else ("metrics", "healthz", "readyz"), port, host, 64)
