"""Analytics: verdicts → counts per window, tenant, risk level and category, each verdict counted once.

Two stages, each co-partitioned with the table it keeps. `analytics-route` remembers each verdict
id it routed (`routed`), so a verdict produced again after a crash, even in a later window, is not
routed twice; it re-keys the rest by `CountKey` (value: the verdict id). `analytics-count` keeps
one entry per (count key, verdict id) in `counted`, so a replay of either stage counts nothing
twice, and derives `tally` (the counts) from those entries, also after a restart. Both expire on
stream time (`StreamTime`).
"""

from __future__ import annotations

from collections import Counter

import faust

from guardstream.schemas import VerdictEvent
from guardstream.schemas.intake import RawRecord, decode
from guardstream.wire import metrics
from guardstream.topology.state import PartitionedTable
from guardstream.topology.wiring import VERDICT_BATCH, Wiring, guarded
from guardstream.workers.sinks.analytics import CountKey, StreamTime, count_keys


class Analytics:
    def __init__(self, w: Wiring):
        self.w = w
        self.window_s, retention_s = w.settings.sinks.analytics_window_s, w.settings.sinks.analytics_retention_s
        self.routed, self.counted = w.table("analytics-routed"), w.table("analytics-counted")
        self.route_time, self.count_time = StreamTime(self.window_s, retention_s), StreamTime(self.window_s, retention_s)
        self.tally: Counter[CountKey] = Counter()

    async def route(self, records: list[RawRecord]) -> None:
        fresh: dict[str, tuple[int, list[CountKey]]] = {}  # verdict id → (partition, count keys)
        for record in records:
            verdict = decode(record, VerdictEvent, self.w.settings.max_event_bytes)
            if not isinstance(verdict, VerdictEvent):
                continue  # enforcement already dead-letters bad verdict records
            keys = count_keys(verdict, self.window_s)
            self.route_time.advance(record.partition, keys[0].window)
            if self.routed.get(verdict.verdict_id, partition=record.partition) is None and not self.route_time.expired(record.partition, keys[0].window):
                fresh.setdefault(verdict.verdict_id, (record.partition, keys))
        await self.w.deliver([(self.w.by_count_key, key.encode(), verdict_id.encode())
                              for verdict_id, (_, keys) in fresh.items() for key in keys])
        # after delivery: a retry routes them again
        await self.routed.write({verdict_id: (partition, keys[0].window) for verdict_id, (partition, keys) in fresh.items()})

    async def count(self, records: list[RawRecord]) -> None:
        touched: set[CountKey] = set()
        entries: dict[str, tuple[int, CountKey]] = {}  # count table key → (partition, what it counts)
        for record in records:
            key = CountKey.decode(record.key.decode())
            self.count_time.advance(record.partition, key.window)
            if self.count_time.expired(record.partition, key.window):
                metrics.LATE_VERDICTS.labels(self.w.policies.metric_tenant(key.tenant)).inc()
                continue
            touched.add(key)
            if self.counted.get(entry := key.entry(record.value.decode()), partition=record.partition) is None:
                entries[entry] = (record.partition, key)
        # counted only once stored: a retried batch counts nothing twice
        await self.counted.write({entry: (partition, key.window) for entry, (partition, key) in entries.items()})
        for _, key in entries.values():
            self.tally[key] += 1
            metrics.VERDICTS.labels(self.w.policies.metric_tenant(key.tenant), key.risk,
                                    metrics.category(key.category)).inc()
        # every key of the batch is published, so a retried batch republishes what it counted
        await self.w.deliver([(self.w.analytics, key.encode(), key.count(self.tally[key], self.window_s).model_dump_json().encode())
                              for key in touched])

    def _restored(self, table: PartitionedTable, topic: faust.TopicT, clock: StreamTime) -> None:
        """After a rebalance's recovery: keep only owned partitions, and resume stream time from the data."""
        self.w.restore_owned(table, topic)
        for _, partition, window in table.items():
            clock.advance(partition, window)

    async def restore_routed(self) -> None:
        self._restored(self.routed, self.w.verdicts, self.route_time)

    async def restore_counted(self) -> None:
        self._restored(self.counted, self.w.by_count_key, self.count_time)
        self.tally = Counter(CountKey.of_entry(entry) for entry, _, _ in self.counted.items())

    def expiry_interval_s(self) -> float:
        """Expiry reads every entry, so it runs every quarter retention, capped at a minute, but
        never more often than once a window: entries outlive the retention by one interval at most."""
        return max(self.window_s, min(self.w.settings.sinks.analytics_retention_s / 4, 60))

    async def expire(self) -> None:
        """Forget windows past the retention, with tombstones; a verdict for them is no longer counted."""
        await self.routed.expire(lambda _, partition, window: self.route_time.expired(partition, window))
        for entry in await self.counted.expire(lambda _, partition, window: self.count_time.expired(partition, window)):
            key = CountKey.of_entry(entry)
            self.tally[key] -= 1
            if self.tally[key] <= 0:
                del self.tally[key]


def register(w: Wiring) -> None:
    analytics = Analytics(w)
    analytics.routed.table.on_recover(analytics.restore_routed)
    analytics.counted.table.on_recover(analytics.restore_counted)

    @w.app.agent(w.verdicts, name="analytics-route")
    async def analytics_route(stream):
        await w.settled("analytics-route", stream, VERDICT_BATCH, 0.05, analytics.route)

    @w.app.agent(w.by_count_key, name="analytics-count")
    async def analytics_count(stream):
        await w.settled("analytics-count", stream, VERDICT_BATCH, 0.05, analytics.count)

    w.app.timer(interval=analytics.expiry_interval_s())(guarded("expire_analytics", analytics.expire))
