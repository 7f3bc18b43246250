"""`guardstream bench gateways`: what each gateway reads, and the CPU it spends, per request of its
own, as the number of gateways G grows. G `guardstream.client.Guard`s in this process each send
the same number of conversations to one worker (the no-op engine: the model is not what is
measured) through the embedded broker, in two modes measured in the same run:

- fixed partitions (the baseline): gateway i is given partition i of the replies topic
  (`reply_partition`), so none shares one;
- claimed partitions (the default): each gateway claims its own in the gateways' consumer group,
  which should cost the same per request (the claim fetches nothing).

Records and bytes are what each gateway's reader fetched; CPU is this process's CPU time over the
run (sending, reading, skipping and decoding, for all G gateways) per request sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guardstream.bench.timing import results_table
from guardstream.client import Guard, conversation
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.worker_process import WorkerProcess
from guardstream.topology.settings import Settings

MODES = ("fixed partitions", "claimed partitions")


@dataclass(frozen=True)
class GatewaysRun:
    mode: str
    gateways: int
    requests: int  # per gateway
    records: float  # fetched per gateway
    bytes: float
    decoded: float
    cpu_s: float  # this process's, all gateways together
    seconds: float

    def per_request(self, total: float) -> float:
        return total / self.requests


async def _run(settings: Settings, bootstrap: str, gateways: int, requests: int, claimed: bool, run: str) -> GatewaysRun:
    guards = [Guard(bootstrap, settings, timeout_s=120, reply_partition=None if claimed else i) for i in range(gateways)]
    for guard in guards:
        await guard.start()
    try:
        cpu, began = time.process_time(), time.monotonic()

        async def one(index: int, guard: Guard) -> None:
            for start in range(0, requests, 32):  # 32 in flight per gateway
                outcomes = await asyncio.gather(*(guard.moderate(conversation(f"{run}-{index}-{i}", "bench", "hello"))
                                                  for i in range(start, min(requests, start + 32))))
                if missing := [o for o in outcomes if o.verdict is None]:
                    raise RuntimeError(f"{len(missing)} requests of gateway {index} got no verdict ({missing[0].reason})")

        await asyncio.gather(*(one(i, g) for i, g in enumerate(guards)))
        cpu, seconds = time.process_time() - cpu, time.monotonic() - began
    finally:
        for guard in guards:
            await guard.stop()
    totals = {k: sum(g.read[k] for g in guards) / gateways for k in ("records", "bytes", "decoded")}
    return GatewaysRun(MODES[claimed], gateways, requests, totals["records"], totals["bytes"], totals["decoded"], cpu / gateways,
                       seconds)


def run_gateways_bench(counts: list[int], requests: int, home: Path, report: Callable[[GatewaysRun], None],
                       partitions: int = 16) -> list[GatewaysRun]:
    home.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    with EmbeddedBroker(log_path=home / "bench-gateways-broker.log") as broker:
        worker = WorkerProcess(broker.bootstrap, home / "bench-gateways-worker.log", app_id=f"bench-{run}",
                               topic_prefix=f"bench-{run}.", gen_backend="noop", agents="gen", gen_batch_size=64,
                               topic_partitions=partitions, reply_partitions=max(counts)).wait_ready()
        try:
            settings = worker.settings
            results = []
            for gateways in counts:
                for claimed in (False, True):
                    results.append(asyncio.run(_run(settings, broker.bootstrap, gateways, requests, claimed,
                                                    f"{run}-{gateways}-{int(claimed)}")))
                    report(results[-1])
        finally:
            worker.stop()
    return results


def gateways_table(results: list[GatewaysRun]):
    """Per gateway and request of its own; each mode next to the baseline of the same G."""
    baseline = {r.gateways: r for r in results if r.mode == MODES[0]}
    rows = []
    for r in results:
        base = baseline[r.gateways]
        rows.append((r.mode, str(r.gateways), f"{r.per_request(r.records):.2f}", f"{r.per_request(r.bytes):,.0f}",
                     f"{r.per_request(r.decoded):.2f}", f"{r.per_request(r.cpu_s) * 1e6:,.0f}",
                     f"{r.records / base.records:.2f}", f"{r.cpu_s / base.cpu_s:.2f}"))
    return results_table("Per gateway, per request of its own (no-op engine, one worker)", (
        "reader", "gateways", "records read", "bytes read", "decoded", "CPU µs", "× baseline records",
        "× baseline CPU"), rows)
