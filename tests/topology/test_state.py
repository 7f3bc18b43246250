"""The tables' local copies without a broker: a fake producer acks each changelog record with the
next offset of its partition. Memory and disk hold the same entries after the same writes; the
disk keeps them, with the changelog offset they reach, across a reopen; and a disk store ahead of
its changelog is discarded."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from types import SimpleNamespace

import faust
import pytest
from faust.types import TP

from guardstream.wire import metrics
from guardstream.topology.outcomes import StoreError
from guardstream.topology.state import STORE_URLS, PartitionedTable, ReplayCountedTable, discard_stale, state_bytes

OWNED = {0, 1, 2}  # of 4 partitions: what partition 3 holds is not this worker's


class AckingProducer:
    def __init__(self):
        self.ends: Counter[int] = Counter()

    async def send(self, topic, key, value, partition, timestamp, headers):
        offset, self.ends[partition] = self.ends[partition], self.ends[partition] + 1
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(SimpleNamespace(partition=partition, offset=offset))
        return acked


def open_table(store: str, datadir, producer: AckingProducer) -> PartitionedTable:
    app = faust.App("state-test", store=STORE_URLS[store], datadir=str(datadir), Table=ReplayCountedTable)
    app.producer = producer
    table = PartitionedTable(app.Table("t", key_type=str, partitions=4))
    app.assignor.assigned_actives = lambda: {TP(table.topic, p) for p in OWNED}
    return table


def close(table: PartitionedTable) -> None:
    """What a stopped process leaves: the databases closed, their files on disk."""
    for db in table.table.data._dbs.values():
        db.close()
    table.table.data._dbs.clear()
    gc.collect()


async def write_some(table: PartitionedTable) -> None:
    await table.write({f"k{i}": (i % 3, {"n": i, "text": "é"}) for i in range(9)})
    await table.write({"k0": (0, {"n": 100}), "k1": (-1, None), "never-stored": (-1, None)})


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_the_same_writes_give_the_same_entries(store, tmp_path):
    table = open_table(store, tmp_path, producer := AckingProducer())
    asyncio.run(write_some(table))
    assert table.get("k0") == {"n": 100} and table.get("k1") is None and table.get("k4") == {"n": 4, "text": "é"}
    assert sorted(table.items()) == sorted([("k0", 0, {"n": 100})] +
                                           [(f"k{i}", i % 3, {"n": i, "text": "é"}) for i in range(2, 9)])
    assert len(table) == 8
    assert sum(producer.ends.values()) == 9 + 2, "a key never stored needs no tombstone"


def test_the_disk_keeps_entries_and_their_changelog_offsets_across_a_reopen(tmp_path):
    producer = AckingProducer()
    first = open_table("rocksdb", tmp_path, producer)
    asyncio.run(write_some(first))
    expected = sorted(first.items())
    close(first)

    again = open_table("rocksdb", tmp_path, producer)
    store = again.table.data
    offsets = {p: store.persisted_offset(TP(again.topic, p)) for p in OWNED}
    assert offsets == {p: producer.ends[p] - 1 for p in OWNED}  # the last record each partition was sent
    assert sorted(again.items()) == expected and len(again) == 8
    asyncio.run(again.write({"k2": (-1, None)}))
    assert again.get("k2") is None and len(again) == 7


def test_a_disk_store_ahead_of_its_changelog_is_discarded(tmp_path):
    producer = AckingProducer()
    table = open_table("rocksdb", tmp_path, producer)
    asyncio.run(write_some(table))  # the last records: offset 3 of partitions 0 and 1
    tp0, tp1 = TP(table.topic, 0), TP(table.topic, 1)
    discard_stale([table.table], {tp0: 3, tp1: 5})  # a recreated topic (its end is before 3), and an intact one
    store = table.table.data
    assert store.persisted_offset(tp0) is None and table.get("k0") is None and table.get("k3") is None
    assert store.persisted_offset(tp1) == 3 and table.get("k4") == {"n": 4, "text": "é"}


def test_a_corrupt_partition_store_is_moved_aside_and_started_anew_and_the_others_are_kept(tmp_path):
    producer = AckingProducer()
    first = open_table("rocksdb", tmp_path, producer)
    asyncio.run(write_some(first))
    path = first.table.data.partition_path(0)
    close(first)
    (path / "CURRENT").write_text("MANIFEST-999999\n")  # points at a manifest that is not there
    rebuilt = metrics.STORE_REBUILT.labels("t")._value.get()

    again = open_table("rocksdb", tmp_path, producer)
    for partition in OWNED:  # as recovery opens them
        again.table.data._db_for_partition(partition)
    assert again.get("k4", partition=1) == {"n": 4, "text": "é"}  # partition 1 is kept
    assert again.get("k0", partition=0) is None and again.get("k3", partition=0) is None  # recovery refills it
    assert again.table.data.persisted_offset(TP(again.topic, 0)) is None
    assert [p.name for p in tmp_path.rglob("*.unreadable-*")] and metrics.STORE_REBUILT.labels("t")._value.get() == rebuilt + 1
    assert state_bytes(tmp_path) > 0


def test_a_store_that_fails_a_write_raises_a_store_error_and_changes_nothing(tmp_path):
    table = open_table("rocksdb", tmp_path, AckingProducer())
    asyncio.run(write_some(table))

    class FullDisk:
        def write(self, batch):
            raise Exception("IO error: No space left on device")  # what rocksdict raises

        def get(self, key):
            return None

        def close(self):
            pass

    table.table.data._dbs[0] = FullDisk()
    with pytest.raises(StoreError, match="No space left on device"):
        asyncio.run(table.write({"k9": (0, {"n": 9})}))
