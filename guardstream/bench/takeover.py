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
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardstream.bench.pipeline import VerdictClock, bench_events, produce_and_wait
from guardstream.bench.timing import percentile, results_table
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.worker_process import WorkerProcess


@dataclass(frozen=True)
class Phase:
    label: str
    delays_ms: list[float]


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
                    await produce_and_wait(settings, broker.bootstrap, clock, bench_events(64, f"{run}-warm"), 200,
                                           timeout_s)
                    report("both workers answer; producing, and killing one halfway")
                    sent, kill = await produce_and_wait(
                        settings, broker.bootstrap, clock, bench_events(int(seconds * rate), f"{run}-timed"), rate,
                        timeout_s, halfway=lambda: workers[1].process.send_signal(signal.SIGKILL))
                    return {e: (t - kill, (clock.arrived[e] - t) * 1000) for e, t in sent.items()}

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
