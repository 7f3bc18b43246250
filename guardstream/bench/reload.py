"""`guardstream bench reload`: how soon a policy change decides verdicts. One worker (the no-op
engine, the Gen agent) takes a steady load for one tenant while `set_policy` (what `guardstream
policy set` calls) changes that tenant's policy again and again. Each change's delay runs from its
record's timestamp on the policies topic (when it was sent) to the first verdict, by the worker's
`produced_at`, that carries the new version. Next to it, the baseline of the same run: how long
a verdict of the steady load took after its event was sent (event record timestamp to
`produced_at`, both on this machine's clock)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from guardstream.bench.timing import percentile, results_table
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.worker_process import WorkerProcess
from guardstream.kafka_io import records, set_policy, topic_name
from guardstream.topology.settings import Settings

TENANT = "bench-reload"
DOCUMENTS = ({"mode": "loose"}, {"mode": "strict"})


async def _steady_load(settings: Settings, bootstrap: str, rate: float, stop: asyncio.Event) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, **settings.kafka.client_options())
    await producer.start()
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, began + sent / rate - loop.time()))
            event = {"event_id": f"load-{sent}", "conversation_id": f"c{sent % 64}", "tenant": TENANT,
                     "messages": [{"role": "user", "content": "hello"}]}
            await producer.send(topic_name(settings, "conversations"), json.dumps(event).encode(),
                                key=event["conversation_id"].encode())
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _stamps(settings: Settings, bootstrap: str, role: str, until: Callable[[], bool]) -> dict[str, float]:
    """Each record's timestamp in seconds, by its event id (conversations) or version (policies)."""
    found = {}
    async for message in records(settings, bootstrap, role, idle_timeout_s=2.0, until=until):
        if message.value is not None:
            value = json.loads(message.value)
            found[str(value.get("event_id", value.get("version")))] = message.timestamp / 1000
    return found


async def _measure(settings: Settings, bootstrap: str, changes: int, every_s: float, rate: float,
                   report: Callable[[str], None]) -> tuple[list[float], list[float]]:
    stop = asyncio.Event()
    load = asyncio.create_task(_steady_load(settings, bootstrap, rate, stop))
    await asyncio.sleep(3)  # the steady state before the first change
    versions = []
    for i in range(changes):
        versions.append(await set_policy(settings, bootstrap, TENANT, DOCUMENTS[i % 2], "bench"))
        if (i + 1) % 10 == 0:
            report(f"{i + 1}/{changes} policy changes sent")
        await asyncio.sleep(every_s)
    await asyncio.sleep(2)  # the last change's verdicts
    stop.set()
    sent = await load
    first: dict[str, float] = {}  # policy version → first verdict carrying it
    delays: list[float] = []
    events = await _stamps(settings, bootstrap, "conversations", lambda: False)
    verdicts = 0
    async for message in records(settings, bootstrap, "verdicts", idle_timeout_s=2.0, until=lambda: verdicts >= sent):
        verdict = json.loads(message.value)
        verdicts += 1
        produced = datetime.fromisoformat(verdict["produced_at"]).timestamp()
        version = verdict["policy_version"].split("@")[1]
        first[version] = min(first.get(version, produced), produced)
        delays.append((produced - events[verdict["source_event_id"]]) * 1000)
    policies = await _stamps(settings, bootstrap, "policies", lambda: False)
    missing = [v for v in versions if str(v) not in first]
    if missing:
        raise RuntimeError(f"no verdict carried policy versions {missing} (sent every {every_s:g}s at {rate:g} events/s: "
                           "raise --rate or --every)")
    return [(first[str(v)] - policies[str(v)]) * 1000 for v in versions], delays


def run_reload_bench(changes: int, every_s: float, rate: float, home: Path,
                     report: Callable[[str], None]) -> tuple[list[float], list[float]]:
    """(each change's delay in ms, each steady-load verdict's delay in ms)."""
    home.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    with EmbeddedBroker(log_path=home / "bench-reload-broker.log") as broker:
        worker = WorkerProcess(broker.bootstrap, home / "bench-reload-worker.log", app_id=f"reload-{run}",
                               topic_prefix=f"reload-{run}.", gen_backend="noop", agents="gen").wait_ready()
        try:
            report("worker ready; a steady load, then the policy changes")
            return asyncio.run(_measure(worker.settings, broker.bootstrap, changes, every_s, rate, report))
        finally:
            worker.stop()


def reload_table(change_ms: list[float], verdict_ms: list[float], title: str):
    base = percentile(verdict_ms, 0.99)
    rows = [(label, f"{len(values):,}", f"{percentile(values, 0.5):,.0f}", f"{percentile(values, 0.99):,.0f}",
             f"{max(values):,.0f}", f"{percentile(values, 0.99) / base:,.1f}")
            for label, values in (("a verdict after its event (steady load)", verdict_ms),
                                  ("the first verdict under a new policy version, after its record", change_ms))]
    return results_table(title, ("delay", "count", "p50 ms", "p99 ms", "max ms", "× steady p99"), rows)
