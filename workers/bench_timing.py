"""What every `guardstream bench` measurement needs: percentiles, a device sync, timed batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


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
