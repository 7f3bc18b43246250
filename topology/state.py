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
out. So on Tansu, before a worker reads the high watermarks, it seals each changelog partition
with a lone tombstone for a key no one uses (`seal`, called by the consumer), a batch of its own:
whatever a worker wrote before it, even one killed mid-write, is then below the watermark. Kafka's
high watermark covers every acknowledged record, so there nothing is sealed.

Where the table lives is the app's store (`table_store`): in memory, restored from the whole
changelog at every start, or on disk (faust-streaming's `rocksdb://` store, one RocksDB per
partition) with the changelog offset it holds, so a restarted worker reads only the changelog's
tail. Either way the changelog is the truth: a local store that is ahead of its changelog (the
topic was recreated, as a restarted development broker does) is discarded (`discard_stale`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import time
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import faust
import rocksdict
from faust.stores import STORES, rocksdb
from faust.types import TP, EventT

from guardstream.wire import metrics
from guardstream.topology.faust_internals import HookedStore, database, databases
from guardstream.topology.outcomes import StoreError
from guardstream.wire.errors import describe

log = logging.getLogger(__name__)


def open_or_move_aside(path: Path, open_db: Callable[[], Any], table: str) -> Any:
    """A partition's database, opened; one that cannot be opened (corrupt, unreadable) is moved
    aside and a new one opened in its place, which recovery fills from the changelog. A database
    locked by another process is left alone (its error is raised)."""
    try:
        return open_db()
    except Exception as exc:  # noqa: BLE001 - rocksdict raises a bare Exception for every failure
        if "lock" in str(exc).lower() or not path.exists():
            raise
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        log.error("the local store %s cannot be opened (%s): moved aside to %s and rebuilt from its changelog "
                  "(delete the copy once it is no longer needed)", path, describe(exc), aside)
        path.rename(aside)
        metrics.STORE_REBUILT.labels(table).inc()
        return open_db()


class RebuildingStore(HookedStore):
    """Faust's RocksDB store, whose partitions that cannot be opened are rebuilt (`open_or_move_aside`)."""

    def open_partition(self, partition: int, open_db: Callable[[], Any]) -> Any:
        return open_or_move_aside(self.partition_path(partition), open_db, self.table.name)


STORES.aliases["guardstream-rocksdb"] = f"{__name__}:RebuildingStore"
STORE_URLS = {"rocksdb": "guardstream-rocksdb://", "memory": "memory://"}  # the app's `store`, by `table_store`


def state_bytes(directory: Path) -> int:
    """What the state directory holds on disk (RocksDB keeps few, large files: a quick walk)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # a file RocksDB removed meanwhile
    return total


_SEAL_KEY = json.dumps("guardstream:seal").encode()  # never stored: recovery applies it as a delete


async def seal(producer, partitions: Iterable[TP]) -> None:
    """End each changelog partition with a lone record, acked, so that Tansu's high watermark covers
    every record before it (see above)."""
    await asyncio.gather(*[await producer.send(tp.topic, _SEAL_KEY, None, tp.partition, None, None) for tp in partitions])


SCAN_STEP = 5_000  # entries a full scan reads between its turns on the event loop
# Per partition database, so that memory stays small whatever the state's size: memtables of 4 MiB
# (two), an 8 MiB block cache. Faust's defaults (3 × 64 MiB memtables and a 2 GiB cache, per
# partition and table) would outgrow a worker pod's limit long before its disk fills.
DISK_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}


class ReplayCountedTable(faust.Table):
    """A Faust table whose recovery counts the changelog records it applies: the cost of a restart."""

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        batch = list(batch)
        metrics.CHANGELOG_REPLAYED.labels(self.name).inc(len(batch))
        super().apply_changelog_batch(batch)


class Change(NamedTuple):
    """One key's change, as sent to the changelog: a None entry (and encoding) deletes it."""

    key: str
    partition: int
    entry: dict | None  # {"p": partition, "v": value}
    encoded: bytes | None  # the changelog record's value
    existed: bool


class MemoryEntries:
    """The local copy in Faust's memory store: key → {"p": partition, "v": value}."""

    def __init__(self, data):
        self.data = data

    def get(self, key: str, partition: int | None = None) -> dict | None:
        return self.data.get(key)

    def apply(self, changes: list[Change], offsets: Mapping[int, int]) -> None:
        for key, _, entry, _, _ in changes:
            if entry is None:
                self.data.pop(key, None)
            else:
                self.data[key] = entry

    def items(self) -> Iterator[tuple[str, dict]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    def keep_partitions(self, partitions: set[int]) -> None:
        for key, entry in list(self.data.items()):
            if entry["p"] not in partitions:
                del self.data[key]


class DiskEntries:
    """The local copy in Faust's RocksDB store, one database per partition holding the changelog's
    raw records (as its recovery writes them) and the offset of the last one applied. Written here
    per partition, not through the store's mapping, which takes the partition from the event being
    processed (there is none in a batch or a timer). Entry counts are kept per partition, counted
    once after each recovery, so the size gauge does not scan the disk."""

    def __init__(self, store: rocksdb.Store):
        self.store = store
        self.sizes: dict[int, int] = {}

    def get(self, key: str, partition: int | None = None) -> dict | None:
        """The key's entry: from its partition's database when the caller knows it, else from any."""
        raw = json.dumps(key).encode()
        dbs = databases(self.store)
        for db in [dbs[partition]] if partition in dbs else list(dbs.values()):
            try:
                value = db.get(raw)
            except Exception as exc:  # noqa: BLE001 - rocksdict raises a bare Exception for I/O errors
                raise StoreError(f"reading the local store of {self.store.table.name}: {exc}") from exc
            if value is not None:
                return json.loads(value)
        return None

    def apply(self, changes: list[Change], offsets: Mapping[int, int]) -> None:
        """Each partition's changes and its new changelog offset in one atomic write."""
        batches: dict[int, rocksdict.WriteBatch] = {}
        for key, partition, entry, encoded, existed in changes:
            batch = batches.setdefault(partition, rocksdict.WriteBatch(raw_mode=True))
            if encoded is None:
                batch.delete(json.dumps(key).encode())
            else:
                batch.put(json.dumps(key).encode(), encoded)
            if partition in self.sizes:
                self.sizes[partition] += (entry is not None) - existed
        for partition, batch in batches.items():
            batch.put(self.store.offset_key, str(offsets[partition]).encode())
            try:
                database(self.store, partition).write(batch)
            except Exception as exc:  # noqa: BLE001 - a full disk or an I/O error: retried, never the record's fault
                self.sizes.clear()  # counted again once it works
                raise StoreError(f"writing the local store of {self.store.table.name}[{partition}]: {exc}") from exc

    def _active(self) -> Iterator[tuple[int, Any]]:
        topic = self.store.table.changelog_topic.get_topic_name()
        actives = self.store.app.assignor.assigned_actives()
        return ((p, db) for p, db in list(databases(self.store).items()) if TP(topic, p) in actives)

    def items(self) -> Iterator[tuple[str, dict]]:
        for _, db in self._active():
            for raw, value in db.items():
                if raw != self.store.offset_key:
                    yield json.loads(raw), json.loads(value)

    def __len__(self) -> int:
        total = 0
        for partition, db in self._active():
            if partition not in self.sizes:
                self.sizes[partition] = sum(1 for raw in db.keys() if raw != self.store.offset_key)
            total += self.sizes[partition]
        return total

    def keep_partitions(self, partitions: set[int]) -> None:
        """Faust closes the databases of revoked partitions; recovery may have changed the others."""
        self.sizes.clear()
        opened = databases(self.store)
        for partition in set(opened) - partitions:
            opened.pop(partition)


def discard_stale(tables: Iterable[faust.Table], highwaters: Mapping[TP, int]) -> None:
    """Delete the on-disk partitions that hold changelog offsets past their changelog's end: they
    were written against another incarnation of the topic, and recovery must start from nothing."""
    for table in tables:
        store = table.data
        if not isinstance(store, rocksdb.Store):
            continue
        for tp, highwater in highwaters.items():
            if tp.topic != table.changelog_topic.get_topic_name():
                continue
            offset = store.persisted_offset(tp)
            if offset is not None and highwater is not None and offset >= highwater:
                log.warning("the local store of %s[%d] is at offset %d but its changelog ends at %d; "
                            "discarding it and restoring from the changelog", tp.topic, tp.partition, offset, highwater)
                databases(store).pop(tp.partition).close()
                gc.collect()
                shutil.rmtree(store.partition_path(tp.partition), ignore_errors=True)


class PartitionedTable:
    def __init__(self, table: faust.Table):
        self.table = table
        self.local = DiskEntries(table.data) if isinstance(table.data, rocksdb.Store) else MemoryEntries(table.data)
        self.written = metrics.CHANGELOG_BYTES.labels(table.name)
        self.lock = asyncio.Lock()  # one write at a time: a store's offset covers every write before it

    @property
    def producer(self):
        return self.table.app.producer

    @property
    def topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def get(self, key: str, default: Any = None, partition: int | None = None) -> Any:
        entry = self.local.get(key, partition)
        return default if entry is None else entry["v"]

    async def write(self, changes: Mapping[str, tuple[int, Any]]) -> None:
        """Apply `changes` (key → (partition, value); a None value deletes the key) once the
        changelog holds them. A key that is neither stored nor given a value needs no tombstone."""
        async with self.lock:
            applied, sends = [], []
            for key, (partition, value) in changes.items():
                stored = self.local.get(key)
                if value is None and stored is None:
                    continue
                entry = None if value is None else {"p": partition, "v": value}
                target = stored["p"] if value is None else partition
                # serialised once, sent raw; recovery reads it as JSON, as Faust's json codec wrote it
                encoded = None if entry is None else json.dumps(entry, ensure_ascii=False).encode()
                sends.append(await self.producer.send(self.topic, json.dumps(key).encode(), encoded, target, None, None))
                applied.append(Change(key, target, entry, encoded, stored is not None))
                self.written.inc(len(key) + len(encoded or b""))
            offsets: dict[int, int] = {}
            for sent in await asyncio.gather(*sends):
                offsets[sent.partition] = max(offsets.get(sent.partition, -1), sent.offset)
            self.local.apply(applied, offsets)

    def items(self) -> Iterator[tuple[str, int, Any]]:
        """(key, partition, value) of every stored key of the partitions this worker owns."""
        return ((key, entry["p"], entry["v"]) for key, entry in self.local.items())

    def __len__(self) -> int:
        return len(self.local)

    def keep_partitions(self, partitions: set[int]) -> None:
        """Forget (locally, without tombstones) what belongs to partitions this worker no longer owns."""
        self.local.keep_partitions(partitions)

    async def scan(self) -> AsyncIterator[tuple[str, int, Any]]:
        """`items()` for a pass over the whole table: it gives the other agents their turns as it goes."""
        for n, item in enumerate(self.items(), 1):
            yield item
            if n % SCAN_STEP == 0:
                await asyncio.sleep(0)

    async def expire(self, expired: Callable[[str, int, Any], bool]) -> list[str]:
        """Delete every key whose (key, partition, value) is expired; returns the deleted keys."""
        gone = [key async for key, partition, value in self.scan() if expired(key, partition, value)]
        await self.write({key: (-1, None) for key in gone})
        return gone
