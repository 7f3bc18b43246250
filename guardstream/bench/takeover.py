"""`guardstream bench takeover`: how long the verdicts of events in flight wait when a worker is
SIGKILLed. Two workers of one app (the no-op engine, the Gen agent) share the conversation topic's
partitions; events arrive at a steady rate; halfway through, one worker is killed, and the other
takes its partitions over once the group notices (the session timeout) and rebalances. Every
event's delay is produce to verdict, read from the verdict topic like a client would:

- before the kill: the steady state, the baseline of the same run;
- in flight at the kill: the events produced in the `window_s` before it, which the killed worker
  had fetched, or was about to, and its successor replays;
- after the kill: those produced while the group rebalanced and the survivor caught up.

The worst of them is the longest a partition waited: the session timeout, the rebalance, and any
record lost on the way and fetched again (topology/consumer.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from guardstream.bench.pipeline import VerdictClock, bench_events
from guardstream.bench.timing import percentile, results_table
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.worker_process import WorkerProcess
from guardstream.kafka_io import topic_name


@dataclass(frozen=True)
class Phase:
    label: str
    delays_ms: list[float]


async def _produce(settings, bootstrap: str, clock: VerdictClock, events: list[dict], rate: float,
                   halfway: Callable[[], None], timeout_s: float) -> dict[str, tuple[float, float]]:
    """Produce `events` at `rate`, calling `halfway` at the middle one, and wait for every verdict:
    each event's (produced, seconds after the middle; delay to its verdict in ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, **settings.kafka_client_options())
    await producer.start()
    sent: dict[str, float] = {}
    middle = 0.0
    try:
        topic, began = topic_name(settings, "conversations"), time.monotonic()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            if i == len(events) // 2:
                halfway()
                middle = time.monotonic()
            sent[event["event_id"]] = time.monotonic()
            await producer.send(topic, json.dumps(event).encode(), key=event["conversation_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    deadline = time.monotonic() + timeout_s
    while (missing := [e for e in sent if e not in clock.arrived]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(sent)} events got no verdict within {timeout_s:.0f}s of the last")
    return {e: (t - middle, (clock.arrived[e] - t) * 1000) for e, t in sent.items()}


def phases(timed: dict[str, tuple[float, float]], window_s: float) -> list[Phase]:
    return [Phase(label, [delay for since, delay in timed.values() if keep(since)]) for label, keep in (
        ("before the kill", lambda t: t < -window_s),
        (f"in flight at the kill (last {window_s:g} s)", lambda t: -window_s <= t < 0),
        ("after the kill", lambda t: t >= 0))]


def run_takeover_bench(seconds: float, rate: float, window_s: float, home: Path, report: Callable[[str], None],
                       partitions: int = 8, timeout_s: float = 120) -> list[Phase]:
    home.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    common = dict(app_id=f"takeover-{run}", topic_prefix=f"takeover-{run}.", gen_backend="noop", agents="gen",
                  topic_partitions=partitions, kafka_session_timeout_s=6, kafka_rebalance_timeout_s=6)
    with EmbeddedBroker(log_path=home / "bench-takeover-broker.log") as broker:
        workers = [WorkerProcess(broker.bootstrap, home / f"bench-takeover-worker{i}.log", **common).wait_ready()
                   for i in range(2)]
        try:
            settings = workers[0].settings

            async def measure() -> dict[str, tuple[float, float]]:
                async with VerdictClock(settings, broker.bootstrap) as clock:
                    # both workers assigned and answering before the timed run
                    await _produce(settings, broker.bootstrap, clock, bench_events(64, f"{run}-warm"), 200,
                                   lambda: None, timeout_s)
                    report("both workers answer; producing, and killing one halfway")
                    return await _produce(settings, broker.bootstrap, clock, bench_events(int(seconds * rate), f"{run}-timed"),
                                          rate, lambda: workers[1].process.send_signal(signal.SIGKILL), timeout_s)

            return phases(asyncio.run(measure()), window_s)
        finally:
            for worker in workers:
                worker.stop()


def takeover_table(phases: list[Phase], title: str):
    base = percentile(phases[0].delays_ms, 0.99)
    rows = [(p.label, f"{len(p.delays_ms):,}", f"{percentile(p.delays_ms, 0.5):,.0f}",
             f"{percentile(p.delays_ms, 0.99):,.0f}", f"{max(p.delays_ms, default=float('nan')):,.0f}",
             f"{percentile(p.delays_ms, 0.99) / base:,.1f}") for p in phases]
    return results_table(title, ("events", "count", "p50 ms", "p99 ms", "max ms", "× p99 before"), rows)
