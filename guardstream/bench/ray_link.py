"""`guardstream bench ray-link`: what it costs a worker to reach the model pool through Ray Client
(`ray://head:10001`, a process outside the cluster, as a pod is unless it runs a Ray node) versus as
a driver on a Ray node (the GCS address `head:6379`), on one `ray start` cluster of this machine.

- per call: a driver makes an actor with one method that returns what it is sent, and calls it with
  a Gen-batch-sized payload (32 conversations), one call at a time (round trip) and 256 calls in
  flight (throughput); each link in its own driver process, since a process connects once.
- pipeline: `bench pipeline`'s worker (broker → Faust → Ray → engine → verdicts) on each link, with
  the tiny Gen checkpoint and with the no-op engine, where the link's share of the cost is largest.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardstream.bench.pipeline import bench_events, measure_pipeline
from guardstream.bench.timing import Measurement, percentile, results_table
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.ray_cluster import ray_cluster

LINKS = ("driver", "client")  # a driver on a Ray node (GCS address), Ray Client
IN_FLIGHT = 256


@dataclass(frozen=True)
class CallCost:
    link: str
    round_trips_ms: list[float]  # one call at a time
    calls_per_s: float  # IN_FLIGHT calls at a time


def probe(address: str, calls: int) -> dict:
    """Runs in its own process: connects to `address`, then times calls of an echo actor."""
    import ray

    from guardstream.runtime import start_ray
    from guardstream.topology.settings import Settings

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, batch: list[dict]) -> list[dict]:
            return batch

    start_ray(Settings.load({}, ray_address=address))  # as a worker connects, retries included
    echo, batch = Echo.remote(), bench_events(32, "probe")
    ray.get([echo.echo.remote(batch) for _ in range(32)])  # warm-up: the actor starts, the connection settles
    round_trips = []
    for _ in range(calls):
        began = time.perf_counter()
        ray.get(echo.echo.remote(batch))
        round_trips.append((time.perf_counter() - began) * 1000)
    began, done = time.perf_counter(), 0
    while done < calls:
        ray.get([echo.echo.remote(batch) for _ in range(min(IN_FLIGHT, calls - done))])
        done += min(IN_FLIGHT, calls - done)
    calls_per_s = calls / (time.perf_counter() - began)
    ray.shutdown()
    return {"round_trips_ms": round_trips, "calls_per_s": calls_per_s}


def measure_calls(link: str, address: str, calls: int) -> CallCost:
    done = subprocess.run([sys.executable, "-m", "guardstream.bench.ray_link", address, str(calls)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"the {link} probe of {address} failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return CallCost(link, found["round_trips_ms"], found["calls_per_s"])


def run_ray_link_bench(model: str, calls: int, events: int, batch: int, noop_events: int, noop_batch: int,
                       home: Path, report: Callable[[str], None],
                       timeout_s: float = 600) -> tuple[list[CallCost], list[tuple[str, Measurement]]]:
    home.mkdir(parents=True, exist_ok=True)
    token = home / "bench-ray-token"  # token authentication on, as in the chart
    token.write_text(secrets.token_hex(16))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    costs, runs = [], []
    with ray_cluster(head_cpus=3) as (gcs, client):
        addresses = {"driver": gcs, "client": client}
        for link in LINKS:
            costs.append(measure_calls(link, addresses[link], calls))
            report(f"{link}: round trip p50 {percentile(costs[-1].round_trips_ms, 0.5):.2f} ms, "
                   f"{costs[-1].calls_per_s:,.0f} calls/s with {IN_FLIGHT} in flight")
        with EmbeddedBroker(log_path=home / "bench-broker.log") as broker:
            for label, count, size, extra in (("tiny Gen", events, batch, {}),
                                              ("no-op engine", noop_events, noop_batch, {"gen_backend": "noop"})):
                for link in LINKS:
                    run = uuid.uuid4().hex[:6]
                    try:
                        m = measure_pipeline(f"{label}, {link}", broker.bootstrap, home / f"bench-worker-{link}.log",
                                             model, count, size, 1, timeout_s, run=run, agents="gen",
                                             ray_address=addresses[link], **extra)
                    finally:  # the worker made its pool on the cluster; it would hold the CPUs of the next run
                        subprocess.run([sys.executable, "-m", "guardstream.cli", "pool", "--down", "--ray-address",
                                        gcs, "--app-id", f"bench-{run}"], capture_output=True, timeout=120)
                    runs.append((link, m))
                    report(f"{m.label}: {m.per_second:,.1f} events/s, p50 {m.percentile(0.5):.1f} ms")
    return costs, runs


def ray_link_tables(costs: list[CallCost], runs: list[tuple[str, Measurement]]):
    """Each link next to the driver's numbers from the same run."""
    driver = costs[0]
    calls = results_table("Per call: an echo of a 32-conversation batch", (
        "link", "round trip p50 ms", "p99 ms", "calls/s, 256 in flight", "× driver calls/s"),
        [(c.link, f"{percentile(c.round_trips_ms, 0.5):.2f}", f"{percentile(c.round_trips_ms, 0.99):.2f}",
          f"{c.calls_per_s:,.0f}", f"{c.calls_per_s / driver.calls_per_s:.2f}") for c in costs])
    baseline = {m.label.split(",")[0]: m for link, m in runs if link == "driver"}
    pipeline = results_table("bench pipeline on each link (one worker, Gen agent)", (
        "path", "batch", "events", "events/s", "p50 ms", "p99 ms", "× driver events/s"),
        [(m.label, str(m.batch), f"{m.count:,}", f"{m.per_second:,.1f}", f"{m.percentile(0.5):.1f}",
          f"{m.percentile(0.99):.1f}", f"{m.per_second / baseline[m.label.split(',')[0]].per_second:.2f}")
         for _, m in runs])
    return calls, pipeline


if __name__ == "__main__":  # the per-call probe, in a process of its own
    print(json.dumps(probe(sys.argv[1], int(sys.argv[2]))))
