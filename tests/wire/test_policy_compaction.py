"""The policies topic on Apache Kafka with short segments and an eager log cleaner: `policy set`
many times across tenants, interleaved with refused and older records from other writers, and
racing writers. Every process started at any point puts the same versions in force as the one
that followed the topic live, and once the cleaner ran, catching up reads a few records per
tenant: one each, and the active segment's (the cleaner never touches the segment being written)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from guardstream import kafka_io
from guardstream.kafka_io import PolicyConflict, records, set_policy, topic_name
from guardstream.wire.policy_feed import PoliciesUnavailable, PolicyFeed, check_policies_topic
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics

pytestmark = pytest.mark.integration

TENANTS = [f"tenant-{i}" for i in range(10)]
SETS = 400  # about 40 per tenant, 80 records of other writers, 8 races and 4 processes started mid-way
MODES = ["strict", "loose", "observe"]
# the cleaner may compact a segment as soon as it rolls (every 100 ms), and drop tombstones at once
# (AlterConfigs replaces every setting of the topic, so its cleanup policy is named again)
EAGER = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0",
         "min.compaction.lag.ms": "0", "file.delete.delay.ms": "0"}


async def fresh_feed(settings: Settings, bootstrap: str) -> tuple[dict[str, int], int]:
    """What a process started now puts in force, and how many records it read to get there."""
    feed = PolicyFeed(settings.kafka, bootstrap)
    read = await feed.catch_up()
    return feed.policies.set_versions(), read


async def make_eager(settings: Settings, bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name(settings, "policies"), EAGER)])
    finally:
        await admin.close()


async def scenario(settings: Settings, bootstrap: str, sets: int) -> dict:
    await ensure_topics(settings.kafka, bootstrap)
    await make_eager(settings, bootstrap)
    topic = topic_name(settings, "policies")
    live = PolicyFeed(settings.kafka, bootstrap)
    await live.catch_up()
    follower = asyncio.create_task(live.follow())
    rogue = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await rogue.start()
    rng = random.Random(7)
    snapshots, conflicts = [], 0
    try:
        for i in range(sets):
            tenant = rng.choice(TENANTS)
            await set_policy(settings, bootstrap, tenant, {"mode": rng.choice(MODES)}, "test")
            if i % 5 == 0:  # another writer: an invalid document under the next version, and an older version
                current = live.policies.set_versions().get(tenant, 1)
                bad = {"tenant": tenant, "version": current + 1, "set_by": "rogue", "policy": {"mode": "lenient"}}
                old = {"tenant": tenant, "version": current, "set_by": "rogue", "policy": {"mode": "loose"}}
                await rogue.send_and_wait(topic, json.dumps(bad).encode(), key=f"{tenant}/{current + 1}/bad{i}".encode())
                await rogue.send_and_wait(topic, json.dumps(old).encode(), key=f"{tenant}/{current}/old{i}".encode())
            if i % 50 == 0:  # two writers at once: one is told it lost, or they took consecutive versions
                results = await asyncio.gather(*[set_policy(settings, bootstrap, "racer", {"mode": mode}, "test")
                                                 for mode in ("strict", "loose")], return_exceptions=True)
                won = sorted(r for r in results if isinstance(r, int))
                lost = [r for r in results if isinstance(r, PolicyConflict)]
                assert (len(won), len(lost)) == (1, 1) or (len(won) == 2 and won[1] == won[0] + 1), results
                conflicts += len(lost)
            if i % 100 == 99:  # a process started mid-way agrees with the live one
                snapshots.append((await fresh_feed(settings, bootstrap))[0] == live.policies.set_versions())
        # the cleaner catches up with the last segments; a process started then reads little
        expected, final = live.policies.set_versions(), []
        for i in range(30):  # the active segment is never cleaned: it keeps the last moments' records
            versions, read = await fresh_feed(settings, bootstrap)
            final.append((versions == expected, read))
            if read <= 4 * len(expected):
                break
            # a tombstone goes only in a pass after the one that cleaned it, and the cleaner passes
            # only over new records: a live topic has them, this one gets a tombstone of no tenant's
            await rogue.send_and_wait(topic, None, key=f"nudge/{i}".encode())
            await asyncio.sleep(1)
        return {"expected": expected, "snapshots": snapshots, "final": final, "conflicts": conflicts}
    finally:
        follower.cancel()
        await rogue.stop()


def test_restarted_processes_put_the_same_versions_in_force_before_and_after_the_cleaner(broker):
    settings = Settings.load({}, topic_prefix="pcompact.")
    result = asyncio.run(scenario(settings, broker.bootstrap, sets=SETS))
    expected = result["expected"]
    assert set(expected) == set(TENANTS) | {"racer"}
    assert result["snapshots"] and all(result["snapshots"])
    assert all(agrees for agrees, _ in result["final"]), result["final"]
    read = result["final"][-1][1]
    assert read <= 4 * len(expected), f"catching up still reads {read} records for {len(expected)} tenants"
    print(f"\npolicies compaction: {SETS} sets over {len(TENANTS)} tenants and {result['conflicts']} races; "
          f"catching up read {[r for _, r in result['final']]} records until the cleaner ran")


def test_a_policies_topic_that_is_not_one_compacted_partition_stops_the_start(broker):
    settings = Settings.load({}, topic_prefix="pbad.")

    async def check() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic_name(settings, "policies"), 3, 1)])
        finally:
            await admin.close()
        with pytest.raises(PoliciesUnavailable) as refused:
            await check_policies_topic(settings.kafka, broker.bootstrap)
        return str(refused.value)

    message = asyncio.run(check())
    assert "has 3 partition(s) and cleanup.policy=delete" in message and "cleanup.policy=compact" in message


def test_a_policy_set_that_loses_its_version_to_another_writer_is_told_and_leaves_no_record_in_force(broker, monkeypatch):
    """Another writer's version N+1 lands between this `policy set`'s read and its write."""
    settings = Settings.load({}, topic_prefix="prace.")
    topic = topic_name(settings, "policies")
    first_read = kafka_io.PolicyFeed.catch_up
    interposed = []

    async def catch_up_then_another_writer(feed, *args, **kwargs):
        read = await first_read(feed, *args, **kwargs)
        if not interposed and feed.kafka.topic_prefix == "prace.":
            interposed.append(True)
            version = feed.policies.set_versions().get("acme", 0) + 1
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            await producer.start()
            try:
                other = {"tenant": "acme", "version": version, "set_by": "bob", "policy": {"mode": "loose"}}
                await producer.send_and_wait(topic, json.dumps(other).encode(), key=f"acme/{version}/bob".encode())
            finally:
                await producer.stop()
        return read

    async def scenario():
        await set_policy(settings, broker.bootstrap, "acme", {"mode": "strict"}, "alice")
        monkeypatch.setattr(kafka_io.PolicyFeed, "catch_up", catch_up_then_another_writer)
        with pytest.raises(PolicyConflict, match="took version 2 first"):
            await set_policy(settings, broker.bootstrap, "acme", {"mode": "observe"}, "carol")
        monkeypatch.setattr(kafka_io.PolicyFeed, "catch_up", first_read)
        keys = [(m.key.decode(), m.value is None) async for m in records(settings, broker.bootstrap, "policies",
                                                                           idle_timeout_s=1.5)]
        versions, _ = await fresh_feed(settings, broker.bootstrap)
        return keys, versions

    keys, versions = asyncio.run(scenario())
    assert versions == {"acme": 2}  # bob's version 2, never carol's
    carol = [key for key, _ in keys if key.startswith("acme/2/") and key != "acme/2/bob"]
    assert carol and (carol[0], True) in keys  # carol's record, then its tombstone
