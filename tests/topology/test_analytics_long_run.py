"""Analytics that runs for ever, compressed: 1 s windows, 2 s retention, a minute of traffic.

A worker running only the analytics agents reads verdicts produced straight to the verdict
topic (some of them twice, as after a crash). It must stay up, count each distinct verdict once
in its window, keep its table small while it runs (expiry on stream time), and after a restart
count no replay again and expire what it restored from the changelog.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer

import pytest

from guardstream.dev.broker import free_port
from guardstream.kafka_io import topic_name
from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent, verdict_id
from guardstream.workers.sinks.analytics import window_start

from tests.helpers.pipeline import start_worker, wait_drained
from tests.helpers.kafka_helpers import read_all
from tests.helpers.metrics import scrape, table_metric
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

SECONDS, RATE = 62, 25  # verdicts per second
RISKS = [(RiskLevel.safe, []), (RiskLevel.unsafe, ["Violent"]), (RiskLevel.unsafe, ["PII", "Violent"]),
         (RiskLevel.controversial, ["Politically Sensitive Topics"])]


def verdict(i: int) -> VerdictEvent:
    risk, categories = RISKS[i % len(RISKS)]
    tenant, conversation = f"lr-{i % 3}", f"lr-conv-{i % 40}"
    return VerdictEvent(verdict_id=verdict_id(tenant, conversation, f"lr-{i}", "m", Moderate.prompt, str(i), None),
                        source_event_id=f"lr-{i}", conversation_id=conversation, tenant=tenant, moderate=Moderate.prompt,
                        model_id="m", model_variant="gen", risk_level=risk, categories=categories, action=Action.allow,
                        policy="p", latency_ms=1.0)


async def produce_steadily(settings, bootstrap: str) -> dict[str, VerdictEvent]:
    """RATE verdicts a second for SECONDS; one in ten is sent again half a second later (a replay)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent: dict[str, VerdictEvent] = {}
    replays: list[tuple[float, VerdictEvent]] = []
    topic, rng = topic_name(settings, "verdicts"), random.Random(7)
    try:
        began = time.monotonic()
        for i in range(SECONDS * RATE):
            await asyncio.sleep(max(0.0, began + i / RATE - time.monotonic()))
            v = verdict(i)
            sent[v.verdict_id] = v
            batch = [v] + [r for at, r in replays if at <= time.monotonic()]
            replays = [(at, r) for at, r in replays if at > time.monotonic()]
            if rng.random() < 0.1:
                replays.append((time.monotonic() + 0.5, v.model_copy(update={"produced_at": datetime.now(timezone.utc)})))
            for item in batch:
                await producer.send_and_wait(topic, item.model_dump_json().encode(), key=item.conversation_id.encode())
    finally:
        await producer.stop()
    return sent


def counted_entries(port: int) -> float:
    return table_metric(port, "guardstream_table_entries", "analytics-counted") or 0.0


def latest_counts(settings, bootstrap: str) -> dict[tuple, int]:
    latest = {}
    for u in read_all(settings, bootstrap, "analytics", lambda u: u["tenant"].startswith("lr-")):
        latest[(u["window_start"], u["tenant"], u["risk_level"], u["category"])] = u["count"]
    return latest


def test_analytics_counts_each_window_for_a_minute_and_forgets_what_it_should(broker, tiny, tmp_path):
    port = free_port()
    # one data directory for both incarnations, as a restarted container keeps its pod's volume: the successor
    # recovers from the tables on disk and replays only the changelogs' tails
    env = dict(app_id="gs-long", topic_prefix="lr.", agents="analytics", analytics_window_s=1, analytics_retention_s=2,
               data_dir=str(tmp_path / "data"))
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "first.log", metrics_port=port, **env)
    try:
        sizes = []

        async def run() -> dict[str, VerdictEvent]:
            producing = asyncio.create_task(produce_steadily(worker.settings, broker.bootstrap))
            while not producing.done():
                await asyncio.sleep(5)
                sizes.append(await asyncio.to_thread(counted_entries, port))
            return await producing

        sent = asyncio.run(run())
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "verdicts"))
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "analytics_by_key"))
        assert worker.process.poll() is None, "the worker died"
        late = sum(scrape(port, "guardstream_analytics_late_total").values())
    finally:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(30)

    expected = Counter()
    for v in sent.values():
        start = datetime.fromtimestamp(window_start(v.produced_at, 1), timezone.utc).isoformat().replace("+00:00", "Z")
        for category in v.categories or ["None"]:
            expected[(start, v.tenant, v.risk_level.value, category)] += 1
    counts = latest_counts(worker.settings, broker.bootstrap)
    normalise = {(datetime.fromisoformat(k[0].replace("Z", "+00:00")).isoformat(), *k[1:]): n for k, n in counts.items()}
    assert late == 0, f"{late} verdicts arrived after their window's retention"
    assert normalise == {(datetime.fromisoformat(k[0].replace("Z", "+00:00")).isoformat(), *k[1:]): n
                         for k, n in expected.items()}
    # expiry kept the table to the last few seconds of traffic, not the whole minute
    per_window = RATE * 1.1 * 1.5  # verdicts a window, with replays, times categories per verdict
    assert max(sizes) < per_window * 6, sizes
    assert len(sent) > SECONDS * RATE * 0.99

    # A successor restores the table (from disk and the changelog's tail) and counts no replay
    # again; once fresh traffic moves stream time on, the restored keys expire like any other.
    second = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "second.log", metrics_port=port, **env)
    try:
        asyncio.run(wait_drained(second.settings, broker.bootstrap, "analytics_by_key"))
        restored = eventually(lambda: counted_entries(port), 30, "a health report of the restored table")
        replayed = {t: table_metric(port, "guardstream_changelog_replayed_total", t) or 0
                    for t in ("analytics-counted", "analytics-routed")}
        fresh = asyncio.run(produce_fresh(second.settings, broker.bootstrap))
        asyncio.run(wait_drained(second.settings, broker.bootstrap, "verdicts"))
        asyncio.run(wait_drained(second.settings, broker.bootstrap, "analytics_by_key"))
        fresh_entries = sum(len(v.categories or ["None"]) for v in fresh)
        counted_entries_after_restart = eventually(  # an expiry pass and a health report
            lambda: (n := counted_entries(port)) <= fresh_entries and (n,), 30, "the restored keys to expire")[0]
        old_windows = {k: n for k, n in latest_counts(second.settings, broker.bootstrap).items() if k in counts}
        assert second.process.poll() is None and "Traceback" not in second.log()
    finally:
        second.stop()
    assert old_windows == counts
    assert restored > 0, "nothing was restored"
    # each partition's tail is at most the seals written since its last write (Tansu; none on Kafka); the whole changelog
    # (what a memory store replays) holds every entry ever counted and its tombstone
    tail = 2 * second.settings.kafka.topic_partitions
    assert all(replayed[t] <= tail for t in ("analytics-counted", "analytics-routed")), replayed
    assert counted_entries_after_restart <= fresh_entries < restored, (restored, counted_entries_after_restart)


async def produce_fresh(settings, bootstrap: str) -> list[VerdictEvent]:
    """Ten verdicts a second for five seconds, after the others."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    fresh = []
    try:
        for i in range(50):
            v = verdict(100_000 + i)
            fresh.append(v)
            await producer.send_and_wait(topic_name(settings, "verdicts"), v.model_dump_json().encode(),
                                         key=v.conversation_id.encode())
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return fresh
