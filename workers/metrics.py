"""Prometheus metrics of the worker process (served on `--metrics-port` when set)."""

from prometheus_client import Counter, Histogram, start_http_server

VERDICTS = Counter("guardstream_verdicts_total", "Verdicts counted by analytics (after de-duplication)",
                   ["tenant", "risk_level", "category"])
DEAD_LETTERS = Counter("guardstream_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "error_code"])
GEN_BATCH_SECONDS = Histogram("guardstream_gen_batch_seconds", "Time to moderate one Gen micro-batch",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ACTIONS = Counter("guardstream_actions_total", "Actions emitted by enforcement", ["tenant", "action"])


def serve_metrics(port: int) -> None:
    if port:
        start_http_server(port, addr="0.0.0.0")
