"""Analytics: verdicts counted per tenant × risk × category in tumbling windows.

Two stages, each co-partitioned with its Faust table: verdicts (keyed by conversation) are
de-duplicated by verdict id, then re-keyed by window|tenant|risk|category onto an internal topic
where the counts live. So a redelivered verdict is not counted twice, and a rebalance moves
each count together with its key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

from guardstream.schemas import RiskLevel, VerdictEvent, WindowCount


def window_start(at: datetime, window_s: int) -> int:
    epoch = int(at.timestamp())
    return epoch - epoch % window_s


class CountKey(NamedTuple):
    """What one count counts: a window (its start, epoch seconds), a tenant, a risk level and a
    category. On the wire (the analytics topic's key, the internal re-keyed topic) it is
    `window|tenant|risk|category`; none of the parts can hold a `|` (tenants are `[A-Za-z0-9_.:-]`)."""

    window: int
    tenant: str
    risk: str
    category: str

    def encode(self) -> str:
        return f"{self.window}|{self.tenant}|{self.risk}|{self.category}"

    @classmethod
    def decode(cls, text: str) -> CountKey:
        start, tenant, risk, category = text.split("|", 3)
        return cls(int(start), tenant, risk, category)

    def entry(self, verdict_id: str) -> str:
        """The count table's key for one verdict counted under this key: a replayed verdict finds
        itself already counted. The verdict id is last, so it may hold any character."""
        return f"{self.encode()}|{verdict_id}"

    @classmethod
    def of_entry(cls, entry: str) -> CountKey:
        start, tenant, risk, category, _ = entry.split("|", 4)
        return cls(int(start), tenant, risk, category)

    def count(self, count: int, window_s: int) -> WindowCount:
        begin = datetime.fromtimestamp(self.window, timezone.utc)
        return WindowCount(window_start=begin, window_end=datetime.fromtimestamp(self.window + window_s, timezone.utc),
                           tenant=self.tenant, risk_level=RiskLevel(self.risk), category=self.category, count=count)


def count_keys(verdict: VerdictEvent, window_s: int) -> list[CountKey]:
    start = window_start(verdict.produced_at, window_s)
    return [CountKey(start, verdict.tenant, verdict.risk_level.value, category) for category in verdict.categories or ["None"]]


class StreamTime:
    """Per-partition stream time, as Kafka Streams keeps it: the latest window end seen. A window
    is expired once stream time is `retention_s` past its end, so a backlog is never late: only
    data out of order by more than the retention is."""

    def __init__(self, window_s: int, retention_s: int):
        self.window_s, self.retention_s = window_s, retention_s
        self.latest: dict[int, int] = {}

    def advance(self, partition: int, window: int) -> None:
        self.latest[partition] = max(self.latest.get(partition, 0), window + self.window_s)

    def expired(self, partition: int, window: int) -> bool:
        return window + self.window_s < self.latest.get(partition, 0) - self.retention_s
