"""Records to the broker a batch at a time: one aiokafka record batch, and one future, per
partition, instead of a `send` (a future, a partitioner call, a timestamp) per record.

Each record goes where aiokafka's own `send` would put it (the producer's partitioner over the
key), in the order given within its partition, so a conversation's records stay in order. The
batches go through the producer's accumulator and sender like any other, so retries, idempotence
and `acks` are the producer's. A batch fills up to the producer's `max_batch_size`; a record
larger than that goes alone in a batch of its own, which the broker may refuse for its size
(`MessageSizeTooLargeError`, as a single `send` would raise)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from guardstream.topology.faust_internals import partition_of

Headers = list[tuple[str, bytes]]
Record = tuple[str, int | None, bytes | None, bytes, Headers | None]  # topic, partition (None: by key), key, value, headers


async def produce(producer: AIOKafkaProducer, records: Iterable[Record]) -> None:
    """Send every record and wait until the broker acked all of them; the first failure is raised
    once every batch's outcome is known."""
    timestamp_ms = int(time.time() * 1000)  # one clock read for the whole batch
    batches: dict[tuple[str, int], list] = {}
    known: set[str] = set()
    for topic, partition, key, value, headers in records:
        if partition is None:
            if topic not in known:
                await producer.partitions_for(topic)  # the topic's metadata, for the partitioner
                known.add(topic)
            partition = partition_of(producer, topic, key, value)
        chain = batches.setdefault((topic, partition), [producer.create_batch()])
        if chain[-1].append(timestamp=timestamp_ms, key=key, value=value, headers=headers or []) is None:
            chain.append(producer.create_batch())  # full: the record opens the next one (a first record always fits)
            chain[-1].append(timestamp=timestamp_ms, key=key, value=value, headers=headers or [])
    acked = []
    try:
        for (topic, partition), chain in batches.items():
            for batch in chain:
                acked.append(await producer.send_batch(batch, topic, partition=partition))
        outcomes = await asyncio.gather(*acked, return_exceptions=True)
    finally:
        for future in acked:  # a batch left unawaited (a failure before it, a cancellation) is still observed
            future.add_done_callback(_observed)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _observed(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
