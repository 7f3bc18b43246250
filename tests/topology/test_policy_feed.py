"""The policy feed alone, over a fake consumer: what it puts in force and what it refuses."""

from __future__ import annotations

import json

import pytest
from aiokafka.structs import ConsumerRecord

from guardstream.topology.policy_feed import PoliciesUnavailable, PolicyFeed
from guardstream.topology.settings import Settings
from guardstream.topology import metrics


def record(offset: int, key: str, value: dict | bytes | None) -> ConsumerRecord:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return ConsumerRecord("guard.policies", 0, offset, 0, 0, key.encode(), raw, None, len(key), len(raw or b""), ())


def entry(tenant: str, version: int, **policy) -> dict:
    return {"tenant": tenant, "version": version, "set_by": "test", "policy": policy}


class FakeConsumer:
    def __init__(self, batches: list[list[ConsumerRecord]], end: int):
        self.batches, self.end = batches, end

    async def start(self):
        pass

    async def stop(self):
        pass

    def assign(self, partitions):
        self.partition = partitions[0]

    def seek(self, partition, offset):
        pass

    async def end_offsets(self, partitions):
        return {self.partition: self.end}

    async def getmany(self, partition, timeout_ms):
        return {partition: self.batches.pop(0)} if self.batches else {}


def feed_of(batches, end: int) -> PolicyFeed:
    feed = PolicyFeed(Settings(), "127.0.0.1:1")
    feed._consumer = lambda: FakeConsumer(batches, end)
    return feed


async def test_valid_records_are_put_in_force_and_bad_ones_refused_with_the_previous_kept():
    rejected = metrics.POLICY_REJECTED._value.get()
    feed = feed_of([[record(0, "acme", entry("acme", 1, mode="loose")),
                     record(1, "acme", entry("acme", 2, mode="lenient")),  # not a tenant policy
                     record(2, "acme", entry("acme", 1, mode="strict")),  # not newer
                     record(3, "acme", entry("globex", 3, mode="strict")),  # key is not its tenant
                     record(4, "acme", b"{not json"),
                     record(5, "globex", entry("globex", 1, mode="observe"))],
                    [record(6, "globex", None)]], end=7)
    assert await feed.catch_up() == 7
    assert feed.policy.version("acme") == "acme@1" and feed.policy.for_tenant("acme").mode == "loose"
    assert feed.policy.version("globex") == "default@0"  # its tombstone lifted its entry
    assert metrics.POLICY_REJECTED._value.get() - rejected == 4 and feed.position == 7


async def test_a_topic_that_cannot_be_read_to_its_end_stops_the_start():
    with pytest.raises(PoliciesUnavailable, match="could not be read to its end"):
        await feed_of([], end=5).catch_up(timeout_s=0.5)
