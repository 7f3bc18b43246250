"""Reading a worker's Prometheus endpoint in integration tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, name: str) -> dict[tuple, float]:
    """Every sample of `name`, keyed by its sorted (label, value) pairs."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def table_metric(port: int, name: str, table: str) -> float | None:
    """One table's sample of `name` (None before the worker reported it)."""
    return scrape(port, name).get((("table", table),))
