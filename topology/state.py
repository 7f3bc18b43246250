"""Faust tables written with an explicit changelog partition.

Faust's own table API takes the partition from the event being processed, so it cannot write
from a batch or a timer, and its windowed expiry neither writes tombstones nor expires keys
restored from the changelog. Here every stored value remembers its partition, so a write, a
delete (a tombstone to that partition) or an expiry pass works from anywhere, before and
after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import faust

from guardstream.workers import metrics


class PartitionedTable:
    def __init__(self, table: faust.Table):
        self.table = table
        self.written = metrics.CHANGELOG_BYTES.labels(table.name)

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.table.data.get(key)
        return default if entry is None else entry["v"]

    def put(self, partition: int, key: str, value: Any) -> None:
        entry = {"p": partition, "v": value}
        self.table.data[key] = entry
        encoded = json.dumps(entry).encode()  # once: sent as is, and counted; recovery reads it as JSON
        self.table.send_changelog(partition, key, encoded, value_serializer="raw")
        self.written.inc(len(key) + len(encoded))

    def delete(self, key: str) -> None:
        entry = self.table.data.pop(key, None)
        if entry is not None:
            self.table.send_changelog(entry["p"], key, None, value_serializer="raw")

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

    def expire(self, expired: Callable[[str, int, Any], bool]) -> list[str]:
        """Delete every key whose (key, partition, value) is expired; returns the deleted keys."""
        gone = [key for key, partition, value in self.items() if expired(key, partition, value)]
        for key in gone:
            self.delete(key)
        return gone
