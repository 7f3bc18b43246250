"""Faust tables written with an explicit changelog partition, and durably before any ack.

Faust's own table API takes the partition from the event being processed, so it cannot write
from a batch or a timer, and its windowed expiry neither writes tombstones nor expires keys
restored from the changelog. Its changelog writes also go through a buffer that the flush before
a commit can miss (a record taken from the buffer but not yet handed to the client), so a commit
could outrun the state it relied on. Here every stored value remembers its partition, and
`write` sends the changelog records itself and waits for the broker's acks before it changes
the table: what an agent acks afterwards is always restored with the state it left.

Recovery reads a changelog up to its high watermark, and Tansu (the development broker) reports
the base offset of the last batch there: every record but the first of that batch would be left
out. So before a worker reads the high watermarks it seals each changelog partition with a lone
tombstone for a key no one uses (`seal`, called by the consumer), a batch of its own: whatever a
worker wrote before it, even one killed mid-write, is then below the watermark. On Kafka it
costs one small record per partition and recovery, and writes pay no extra round trip.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
from faust.types import TP

from guardstream.topology import metrics


_SEAL_KEY = json.dumps("guardstream:seal").encode()  # never stored: recovery applies it as a delete


async def seal(producer, partitions: Iterable[TP]) -> None:
    """End each changelog partition with a lone record, acked, so its high watermark covers every
    record before it (on Tansu; see above)."""
    await asyncio.gather(*[await producer.send(tp.topic, _SEAL_KEY, None, tp.partition, None, None) for tp in partitions])


class PartitionedTable:
    def __init__(self, table: faust.Table):
        self.table = table
        self.written = metrics.CHANGELOG_BYTES.labels(table.name)

    @property
    def producer(self):
        return self.table.app.producer

    @property
    def topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.table.data.get(key)
        return default if entry is None else entry["v"]

    async def write(self, changes: Mapping[str, tuple[int, Any]]) -> None:
        """Apply `changes` (key → (partition, value); a None value deletes the key) once the
        changelog holds them. A key that is neither stored nor given a value needs no tombstone."""
        sends = []
        for key, (partition, value) in changes.items():
            stored = self.table.data.get(key)
            if value is None and stored is None:
                continue
            # serialised once, sent raw; recovery reads it as JSON, as Faust's json codec wrote it
            encoded = None if value is None else json.dumps({"p": partition, "v": value}, ensure_ascii=False).encode()
            target = stored["p"] if value is None else partition
            sends.append(await self.producer.send(self.topic, json.dumps(key).encode(), encoded, target, None, None))
            self.written.inc(len(key) + len(encoded or b""))
        await asyncio.gather(*sends)
        for key, (partition, value) in changes.items():
            if value is None:
                self.table.data.pop(key, None)
            else:
                self.table.data[key] = {"p": partition, "v": value}

    def items(self) -> Iterator[tuple[str, int, Any]]:
        """(key, partition, value) of every stored key."""
        return ((key, entry["p"], entry["v"]) for key, entry in list(self.table.data.items()))

    def __len__(self) -> int:
        return len(self.table.data)

    def keep_partitions(self, partitions: set[int]) -> None:
        """Forget (locally, without tombstones) what belongs to partitions this worker no longer owns."""
        for key, entry in list(self.table.data.items()):
            if entry["p"] not in partitions:
                del self.table.data[key]

    async def expire(self, expired: Callable[[str, int, Any], bool]) -> list[str]:
        """Delete every key whose (key, partition, value) is expired; returns the deleted keys."""
        gone = [key for key, partition, value in self.items() if expired(key, partition, value)]
        await self.write({key: (-1, None) for key in gone})
        return gone
