"""The policy feed alone, over a fake consumer: what it puts in force and what it refuses, and that
Kafka's log cleaner (simulated: the last record of each key, tombstones dropped) changes neither."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from guardstream.schemas.events import MAX_POLICY_VERSION
from guardstream.wire.policy_feed import PoliciesUnavailable, PolicyFeed
from guardstream.wire.settings import KafkaSettings
from guardstream.wire import metrics, policy_feed


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
        if self.batches:
            return {partition: self.batches.pop(0)}
        await asyncio.sleep(0.05)  # an idle poll
        return {}

    def highwater(self, partition):
        return self.end


def feed_of(batches, end: int) -> PolicyFeed:
    feed = PolicyFeed(KafkaSettings(), "127.0.0.1:1")
    feed._consumer = lambda: FakeConsumer(batches, end)
    return feed


async def test_valid_records_are_put_in_force_and_bad_ones_refused_with_the_previous_kept():
    rejected = metrics.POLICY_REJECTED._value.get()
    feed = feed_of([[record(0, "acme/1/a", entry("acme", 1, mode="loose")),
                     record(1, "acme/2/b", entry("acme", 2, mode="lenient")),  # not a tenant policy
                     record(2, "acme/1/c", entry("acme", 1, mode="strict")),  # not newer
                     record(3, "acme/3/d", entry("globex", 3, mode="strict")),  # key is not its own
                     record(4, "acme", entry("acme", 4, mode="strict")),  # nor this one
                     record(5, "acme/5/e", b"{not json"),
                     record(6, "acme/2/b", None),  # a tombstone of a key not in force: nothing changes
                     record(7, "globex/1/g", entry("globex", 1, mode="observe"))],
                    [record(8, "globex/1/g", None)]], end=9)
    assert await feed.catch_up() == 9
    assert feed.policies.version("acme") == "acme@1" and feed.policies.for_tenant("acme").mode == "loose"
    assert feed.policies.version("globex") == "default@0"  # the tombstone of its key in force lifted its entry
    assert metrics.POLICY_REJECTED._value.get() - rejected == 5 and feed.position == 9
    assert feed.stale == {"acme/1/c", "acme/3/d", "acme", "acme/5/e"}  # what `policy set` tombstones next


def test_the_record_in_force_read_again_is_no_refusal():
    feed = PolicyFeed(KafkaSettings(), "127.0.0.1:1")
    again = record(0, "acme/1/a", entry("acme", 1, mode="loose"))
    assert feed.apply(again) is None and feed.apply(record(1, "acme/1/a", json.loads(again.value))) is None
    assert feed.policies.version("acme") == "acme@1" and not feed.stale


def test_a_version_beyond_any_sane_bound_is_refused():
    feed = PolicyFeed(KafkaSettings(), "127.0.0.1:1")
    version = MAX_POLICY_VERSION + 1
    letter = feed.apply(record(0, f"acme/{version}/a", entry("acme", version, mode="loose")))
    assert letter is not None and "less than or equal" in letter.error and feed.policies.version("acme") == "default@0"


def cleaned(log: list[ConsumerRecord]) -> list[ConsumerRecord]:
    """What Kafka's cleaner leaves once it has run and the tombstones' retention passed: the last
    record of each key, in the order of the log, without tombstones."""
    last = {r.key: r.offset for r in log}
    return [r for r in log if last[r.key] == r.offset and r.value is not None]


def in_force(log: list[ConsumerRecord]) -> tuple[dict[str, int], set[str]]:
    feed = PolicyFeed(KafkaSettings(), "127.0.0.1:1")
    for r in log:
        feed.apply(r)
    return feed.policies.set_versions(), feed.stale


class Topic:
    """The policies topic as `policy set` writes it (read it whole, send the next version under its
    own key, tombstone what it superseded or found refused), with other writers' bad records."""

    def __init__(self):
        self.log: list[ConsumerRecord] = []

    def send(self, key: str, value: dict | bytes | None) -> None:
        self.log.append(record(len(self.log), key, value))

    def policy_set(self, tenant: str, mode: str, nonce: str) -> None:
        versions, _ = in_force(self.log)
        self.send(f"{tenant}/{versions.get(tenant, 0) + 1}/{nonce}", entry(tenant, versions.get(tenant, 0) + 1, mode=mode))
        _, stale = in_force(self.log)
        for key in sorted(stale):
            self.send(key, None)


TENANTS = st.sampled_from(["acme", "globex", "default"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("set"), TENANTS, st.sampled_from(["strict", "loose", "observe"])),
    st.tuples(st.just("invalid"), TENANTS, st.sampled_from(["lenient", "strict"])),  # an invalid document
    st.tuples(st.just("older"), TENANTS, st.just("loose")),  # a valid document under a version not newer
    st.tuples(st.just("raced"), TENANTS, st.just("strict")),  # a second writer's same version (it lost)
    st.tuples(st.just("tenant-key"), TENANTS, st.just("loose")),  # keyed by the tenant alone
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(STEPS, st.integers(0, 40))
def test_the_cleaner_never_changes_what_is_in_force(steps, cut):
    topic = Topic()
    for i, (kind, tenant, mode) in enumerate(steps):
        versions, _ = in_force(topic.log)
        current = versions.get(tenant, 0)
        if kind == "set":
            topic.policy_set(tenant, mode, f"n{i}")
        elif kind == "invalid":
            topic.send(f"{tenant}/{current + 1}/x{i}", entry(tenant, current + 1, mode=mode + "-not-a-mode"))
        elif kind == "older" and current:
            topic.send(f"{tenant}/{current}/o{i}", entry(tenant, current, mode=mode))
        elif kind == "raced" and current:  # its writer tombstones it once it finds it lost (see set_policy)
            topic.send(f"{tenant}/{current}/r{i}", entry(tenant, current, mode=mode))
            if i % 2:
                topic.send(f"{tenant}/{current}/r{i}", None)
        elif kind == "tenant-key":
            topic.send(tenant, entry(tenant, current + 1, mode=mode))
    expected, _ = in_force(topic.log)
    # the cleaner may have run at any point: over a prefix of the log, the rest still as written
    prefix = min(cut, len(topic.log))
    assert in_force(cleaned(topic.log[:prefix]) + topic.log[prefix:])[0] == expected
    assert in_force(cleaned(topic.log))[0] == expected
    if steps and all(kind == "set" for kind, *_ in steps):  # only `policy set`: one record per tenant is left
        assert len(cleaned(topic.log)) == len(expected)


async def test_catching_up_ends_at_the_end_found_at_start_however_much_keeps_coming():
    trickle = [[record(i, f"acme/{i + 1}/n", entry("acme", i + 1, mode="loose"))] for i in range(50)]
    feed = feed_of(trickle, end=3)  # three records when it started; the fake keeps returning more
    assert await feed.catch_up() == 3 and feed.position == 3 and feed.policies.version("acme") == "acme@3"


async def test_a_topic_that_cannot_be_read_to_its_end_stops_the_start():
    with pytest.raises(PoliciesUnavailable, match="could not be read to its end"):
        await feed_of([], end=5).catch_up(timeout_s=0.5)


async def test_a_refused_record_whose_dead_letter_cannot_be_sent_holds_back_no_later_change(monkeypatch):
    monkeypatch.setattr(policy_feed, "REJECT_WAIT_S", 0.2)
    feed = feed_of([[record(0, "acme/1/a", entry("acme", 1, mode="lenient"))],  # refused
                    [record(1, "acme/2/b", entry("acme", 2, mode="loose"))]], end=2)

    async def dead_letter_topic_down(letter):
        await asyncio.Event().wait()  # never delivered

    following = asyncio.create_task(feed.follow(dead_letter_topic_down))
    for _ in range(100):
        if feed.position == 2:
            break
        await asyncio.sleep(0.05)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    assert feed.position == 2 and feed.policies.version("acme") == "acme@2"


async def test_readiness_fails_once_the_reader_has_been_behind_the_topics_end_past_the_bound():
    feed = feed_of([], end=0)
    feed.max_stale_s = 0.3
    assert not feed.readiness()[0]  # never caught up
    await feed.catch_up()
    assert feed.readiness() == (True, "policies current")
    following = asyncio.create_task(feed.follow())
    await asyncio.sleep(0.5)
    assert feed.readiness()[0]  # idle, and at the end: current
    feed._consumer = lambda: FakeConsumer([], end=5)  # the topic moved on, and this reader cannot read it
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    following = asyncio.create_task(feed.follow())
    await asyncio.sleep(0.6)
    ok, detail = feed.readiness()
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    assert not ok and "GUARDSTREAM_POLICY_MAX_STALE_S=0.3" in detail
