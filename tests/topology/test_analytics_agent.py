"""The analytics agent's two stages without a broker: a fake wiring records what they deliver, a
dict stands in for each table. A verdict is routed and counted once, however often it comes."""

from __future__ import annotations

from datetime import datetime, timezone

from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent
from guardstream.schemas.intake import RawRecord
from guardstream.topology.agents.analytics import Analytics
from guardstream.topology.settings import Settings
from guardstream.wire.policy import PoliciesInForce


class DictTable:
    def __init__(self):
        self.data: dict[str, tuple[int, object]] = {}

    def get(self, key, default=None, partition=None):
        return self.data.get(key, (None, default))[1]

    async def write(self, changes):
        for key, (partition, value) in changes.items():
            self.data.pop(key, None) if value is None else self.data.__setitem__(key, (partition, value))

    def items(self):
        return [(k, p, v) for k, (p, v) in list(self.data.items())]

    async def expire(self, expired):
        gone = [k for k, p, v in self.items() if expired(k, p, v)]
        await self.write({k: (-1, None) for k in gone})
        return gone


class FakeWiring:
    verdicts, by_count_key, analytics = "verdicts", "by-count-key", "analytics"

    def __init__(self):
        self.settings = Settings.load({}, analytics_window_s=60, analytics_retention_s=120)
        self.policies = PoliciesInForce(self.settings.policy)
        self.sent: list[tuple[str, str, bytes]] = []

    def table(self, name):
        return DictTable()

    async def deliver(self, sends):
        self.sent += sends


def verdict_record(i: int, minute: int, offset: int) -> RawRecord:
    v = VerdictEvent(verdict_id=f"v-{i}", source_event_id=f"e-{i}", conversation_id="c", tenant="acme",
                     moderate=Moderate.prompt, model_id="m", model_variant="gen", risk_level=RiskLevel.unsafe,
                     categories=["Violent", "PII"], action=Action.block, policy="p", latency_ms=1,
                     produced_at=datetime(2026, 1, 1, 12, minute, 30, tzinfo=timezone.utc))
    return RawRecord("verdicts", 0, offset, b"c", v.model_dump_json().encode())


async def test_replays_of_either_stage_count_nothing_twice_and_old_windows_expire():
    w = FakeWiring()
    analytics = Analytics(w)
    await analytics.route([verdict_record(1, 0, 0), verdict_record(2, 0, 1)])
    await analytics.route([verdict_record(1, 0, 2)])  # the same verdict, produced again after a crash
    routed = [(key, value) for topic, key, value in w.sent if topic == "by-count-key"]
    assert len(routed) == 4 and {k.split("|", 1)[1] for k, _ in routed} == {"acme|Unsafe|Violent", "acme|Unsafe|PII"}
    records = [RawRecord("by-count-key", 0, i, k.encode(), v) for i, (k, v) in enumerate(routed)]
    await analytics.count(records)
    await analytics.count(records[:2])  # a retried batch
    published = {key: value for topic, key, value in w.sent if topic == "analytics"}
    assert sorted(published) == sorted({k for k, _ in routed})
    assert all(b'"count":2' in value for value in published.values())
    before = len(w.sent)
    await analytics.route([verdict_record(3, 10, 3)])  # stream time moves 10 minutes on
    await analytics.count([RawRecord("by-count-key", 0, 9, k.encode(), v) for _, k, v in w.sent[before:]])
    await analytics.expire()
    assert analytics.routed.get("v-1") is None and analytics.routed.get("v-3") is not None
    assert {key.window for key in analytics.tally} == {int(datetime(2026, 1, 1, 12, 10, tzinfo=timezone.utc).timestamp())}
    assert all("|v-3" in entry for entry in analytics.counted.data)
    published = len(w.sent)
    await analytics.count(records[:1])  # a verdict for an expired window is late: not counted again
    assert w.sent[published:] == [] and len(analytics.counted.data) == 2


def test_expiry_runs_every_quarter_retention_capped_at_a_minute_but_never_more_often_than_a_window():
    w = FakeWiring()
    for window_s, retention_s, interval_s in ((60, 3600, 60), (1, 2, 1), (10, 100, 25), (1, 600, 60), (300, 3600, 300)):
        w.settings = Settings.load({}, analytics_window_s=window_s, analytics_retention_s=retention_s)
        assert Analytics(w).expiry_interval_s() == interval_s
