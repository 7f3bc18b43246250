"""What every `guardstream bench` measurement needs: one measurement type, percentiles, a device
sync, timed batches, a worker's metrics, and the table each bench renders its results into."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

T = TypeVar("T")


def results_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """The first column names what was measured (left-aligned); the others are numbers."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def metric_totals(metrics_url: str) -> Callable[..., float]:
    """A worker's metrics, read once: `total(name, **labels)` sums the samples that match."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        samples = [s for f in text_string_to_metric_families(response.read().decode()) for s in f.samples]
    return lambda name, **labels: sum(s.value for s in samples
                                      if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Measurement:
    """One measured configuration: `count` items (requests, events or reply tokens) in `seconds`,
    and the latencies its items (or a stream's chunks) saw."""

    label: str  # the path or mode measured
    batch: int  # requests per batch, or concurrent streams
    count: int
    seconds: float
    latencies_ms: list[float]
    chunk: int | None = None  # Stream: tokens per chunk
    agree: float | None = None  # Gen: share of labels equal to the reference's (None: random weights)
    useful_flops: float = 0.0  # Gen: matmul FLOPs of the tokens after the shared prefix, the same for every path
    forwards: float | None = None  # Gen's scoring: sequential forwards per batch (the label's and the answer's)
    profile: tuple[tuple[str, float], ...] = ()  # py-spy's top functions by self samples, when profiled

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def useful_tflops(self) -> float:
        return self.useful_flops / self.seconds / 1e12


def device_sync(device: str) -> Callable[[], None]:
    """Waits for queued GPU work, so a timer stops when the work is done; nothing to wait for on a CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def time_batches(items: Sequence[T], batch: int, run: Callable[[Sequence[T]], object],
                 sync: Callable[[], None] = lambda: None) -> tuple[float, list[float]]:
    """`run` over consecutive batches: (seconds in all, each item's batch latency in ms)."""
    latencies: list[float] = []
    began = time.perf_counter()
    for start in range(0, len(items), batch):
        chosen = items[start : start + batch]
        t0 = time.perf_counter()
        run(chosen)
        sync()
        latencies += [(time.perf_counter() - t0) * 1000] * len(chosen)
    return time.perf_counter() - began, latencies
