"""`produce` on Apache Kafka: a batch per partition lands every record where aiokafka's own `send`
puts it, in order, with its headers; batches that fill up continue in the next; a record the
broker refuses for its size fails as `send` would, alone in its batch, so the records before it and
on other partitions still land; the producer stays idempotent."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError

from guardstream.topology.produce import produce

pytestmark = pytest.mark.integration
PARTITIONS = 4


async def topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        got = []
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {len(got)} of {count} records arrived"
            got += [r for records in batches.values() for r in records]
        return got
    finally:
        await consumer.stop()


async def test_records_land_where_send_puts_them_in_order_with_their_headers(broker):
    run = uuid.uuid4().hex[:8]
    batched, one_by_one = f"produce-{run}-batched", f"produce-{run}-sent"
    await topics(broker.bootstrap, batched, one_by_one)
    # 12 KB values against a 64 KB batch: each partition's records fill several batches
    records = [(f"conversation-{i % 37}".encode(), f"{i:06d}".encode() * 2000, [("n", str(i).encode())]) for i in range(300)]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True,
                                max_batch_size=64 * 1024)
    await producer.start()
    try:
        await produce(producer, [(batched, None, key, value, headers) for key, value, headers in records]
                      + [(batched, 2, b"pinned", b"to partition 2", None)])
        for key, value, headers in records:
            await producer.send(one_by_one, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    landed, sent = await read_all(broker.bootstrap, batched, 301), await read_all(broker.bootstrap, one_by_one, 300)
    where = {r.value: r.partition for r in sent}
    assert all(where[r.value] == r.partition for r in landed if r.key != b"pinned")
    assert len({r.partition for r in landed}) == PARTITIONS
    pinned = [r for r in landed if r.key == b"pinned"]
    assert [(r.partition, r.value) for r in pinned] == [(2, b"to partition 2")]
    for partition in range(PARTITIONS):
        mine = sorted((r for r in landed if r.partition == partition and r.key != b"pinned"), key=lambda r: r.offset)
        numbers = [int(dict(r.headers)["n"]) for r in mine]
        assert numbers == sorted(numbers) and all(r.value == f"{n:06d}".encode() * 2000 for r, n in zip(mine, numbers))
    assert len({r.timestamp for r in landed}) == 1  # one clock read for the whole call


async def test_a_record_too_large_fails_as_send_fails_and_the_other_partitions_still_land(broker):
    run = uuid.uuid4().hex[:8]
    topic = f"produce-{run}-large"
    await topics(broker.bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_batch_size=1 << 20,
                                max_request_size=4 << 20)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await produce(producer, [(topic, 0, b"k", b"fits", None), (topic, 0, b"k", b"x" * (2 << 20), None),
                                     (topic, 1, b"k", b"beside it", None)])
    finally:
        await producer.stop()
    landed = await read_all(broker.bootstrap, topic, 2)  # the large one alone in its batch: the rest were others'
    assert sorted((r.partition, r.value) for r in landed) == [(0, b"fits"), (1, b"beside it")]
