"""Analytics: verdicts → counts per window, tenant, risk level and category, each verdict counted once."""

from __future__ import annotations

from collections import Counter

import faust

from guardstream.schemas import VerdictEvent
from guardstream.schemas.intake import RawRecord, decode
from guardstream.topology.state import PartitionedTable
from guardstream.topology.wiring import VERDICT_BATCH, Wiring, guarded
from guardstream.topology import metrics
from guardstream.workers.sinks.analytics import StreamTime, count_keys, key_window, window_count


def register(w: Wiring) -> None:
    app, settings, deliver, settled, restore_owned = w.app, w.settings, w.deliver, w.settled, w.restore_owned
    verdicts, by_count_key, analytics = w.verdicts, w.by_count_key, w.analytics

    # Two stages, each co-partitioned with the table it keeps. `analytics-route` remembers each
    # verdict id it routed (`routed`), so a verdict produced again after a crash, even in a later
    # window, is not routed twice; it re-keys the rest by window|tenant|risk|category (value:
    # the verdict id). `analytics-count` keeps one entry per (count key, verdict id) in `counted`,
    # so a replay of either stage counts nothing twice, and derives `tally` (the counts) from
    # those entries, also after a restart. Both expire on stream time (`StreamTime`).
    window_s, retention_s = settings.analytics_window_s, settings.analytics_retention_s
    routed, counted = w.table("analytics-routed"), w.table("analytics-counted")
    route_time, count_time = StreamTime(window_s, retention_s), StreamTime(window_s, retention_s)
    tally: Counter[str] = Counter()

    async def route(records: list[RawRecord]) -> None:
        fresh: dict[str, tuple[int, list[str]]] = {}  # verdict id → (partition, count keys)
        for record in records:
            verdict = decode(record, VerdictEvent, settings.max_event_bytes)
            if not isinstance(verdict, VerdictEvent):
                continue  # enforcement already dead-letters bad verdict records
            keys = count_keys(verdict, window_s)
            route_time.advance(record.partition, key_window(keys[0]))
            if routed.get(verdict.verdict_id) is None and not route_time.expired(record.partition, key_window(keys[0])):
                fresh.setdefault(verdict.verdict_id, (record.partition, keys))
        await deliver([(by_count_key, key, verdict_id.encode()) for verdict_id, (_, keys) in fresh.items()
                       for key in keys])
        # after delivery: a retry routes them again
        await routed.write({verdict_id: (partition, key_window(keys[0])) for verdict_id, (partition, keys) in fresh.items()})

    async def count(records: list[RawRecord]) -> None:
        touched, entries = set(), {}
        for record in records:
            key, verdict_id = record.key.decode(), record.value.decode()
            window = key_window(key)
            count_time.advance(record.partition, window)
            if count_time.expired(record.partition, window):
                metrics.LATE_VERDICTS.labels(key.split("|", 2)[1]).inc()
                continue
            touched.add(key)
            if counted.get(entry := f"{key}|{verdict_id}") is None:
                entries[entry] = (record.partition, window)
        await counted.write(entries)  # counted only once stored: a retried batch counts nothing twice
        for entry in entries:
            tally[entry.rsplit("|", 1)[0]] += 1
        updates = {key: window_count(key, tally[key], window_s) for key in touched}
        for entry in entries:
            update = updates[entry.rsplit("|", 1)[0]]
            metrics.VERDICTS.labels(update.tenant, update.risk_level.value, update.category).inc()
        # every key of the batch is published, so a retried batch republishes what it counted
        await deliver([(analytics, key, update.model_dump_json().encode()) for key, update in updates.items()])

    def restored(table: PartitionedTable, topic: faust.TopicT, clock: StreamTime) -> None:
        """After a rebalance's recovery: keep only owned partitions, and resume stream time from the data."""
        restore_owned(table, topic)
        for _, partition, window in table.items():
            clock.advance(partition, window)

    @routed.table.on_recover
    async def restore_routed() -> None:
        restored(routed, verdicts, route_time)

    @counted.table.on_recover
    async def restore_counted() -> None:
        restored(counted, by_count_key, count_time)
        tally.clear()
        tally.update(entry.rsplit("|", 1)[0] for entry, _, _ in counted.items())

    async def expire_analytics() -> None:
        """Forget windows past the retention, with tombstones; a verdict for them is no longer counted."""
        await routed.expire(lambda _, partition, window: route_time.expired(partition, window))
        for entry in await counted.expire(lambda _, partition, window: count_time.expired(partition, window)):
            key = entry.rsplit("|", 1)[0]
            tally[key] -= 1
            if tally[key] <= 0:
                del tally[key]

    @app.agent(verdicts, name="analytics-route")
    async def analytics_route(stream):
        await settled("analytics-route", stream, VERDICT_BATCH, 0.05, route)

    @app.agent(by_count_key, name="analytics-count")
    async def analytics_count(stream):
        await settled("analytics-count", stream, VERDICT_BATCH, 0.05, count)

    app.timer(interval=min(window_s, 10))(guarded("expire_analytics", expire_analytics))
