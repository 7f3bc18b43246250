"""Analytics: verdicts counted per tenant × risk × category in tumbling windows.

Two stages, each co-partitioned with its Faust table: verdicts (keyed by conversation) are
de-duplicated by verdict id, then re-keyed by window|tenant|risk|category onto an internal topic
where the counts live. So a redelivered verdict is not counted twice, and a rebalance moves
each count together with its key.
"""

from __future__ import annotations

from datetime import datetime, timezone

from guardstream.schemas import RiskLevel, VerdictEvent, WindowCount


def window_start(at: datetime, window_s: int) -> int:
    epoch = int(at.timestamp())
    return epoch - epoch % window_s


def count_keys(verdict: VerdictEvent, window_s: int) -> list[str]:
    start = window_start(verdict.produced_at, window_s)
    return [f"{start}|{verdict.tenant}|{verdict.risk_level.value}|{category}"
            for category in verdict.categories or ["None"]]


def window_count(key: str, count: int, window_s: int) -> WindowCount:
    start, tenant, risk, category = key.split("|", 3)
    begin = datetime.fromtimestamp(int(start), timezone.utc)
    return WindowCount(window_start=begin, window_end=datetime.fromtimestamp(int(start) + window_s, timezone.utc),
                       tenant=tenant, risk_level=RiskLevel(risk), category=category, count=count)


def key_window(key: str) -> int:
    return int(key.split("|", 1)[0])


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
