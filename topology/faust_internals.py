"""Every private name of faust-streaming 0.15.3, mode, aiokafka and Faust's RocksDB store that
the worker uses, and nowhere else (the aiokafka names gateways need too are in
`wire/kafka_internals.py`).

Each is either a hook the pinned version calls (overridden here to call a public method that the
rest of the code overrides) or a field it keeps (read here, under a public name). A patch release
that renames one, stops calling it, or changes what it holds would break delivery without an
error; `tests/topology/test_faust_internals.py` checks each against the installed version, so such
a release fails there instead. The decisions (what to commit, what to fetch again, what to keep)
stay in `consumer.py`, `state.py` and `runtime.py`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import faust
from faust.stores import rocksdb
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from guardstream.wire.kafka_internals import group_errors_raised


class _NeverRemembered(dict):
    """Faust's last-read offsets (`Consumer._read_offset`), never kept: with one, Faust drops every
    record below the last one read and marks the offsets it jumped over as acked."""

    def __getitem__(self, tp: TP) -> None:
        return None

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = group_errors_raised(super()._create_worker_consumer(transport))
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms  # Faust hard-codes 1,500 ms; read at start()
        return consumer


class HookedConsumer(aiokafka_driver.Consumer):
    """Faust's consumer: no last-read offsets, the transport's fetch wait, its bookkeeping under
    public names, and two hooks (`commit_offset`, `fetched`) for a subclass to decide with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._read_offset = _NeverRemembered()

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- hooks: Faust calls the private name, a subclass overrides the public one -------------------
    def _new_offset(self, tp: TP) -> int | None:
        return self.commit_offset(tp)

    def commit_offset(self, tp: TP) -> int | None:
        """The offset to commit for `tp` now, or None; Faust's own rule by default."""
        return super()._new_offset(tp)

    async def _wait_next_records(self, timeout: float):
        records, active = await super()._wait_next_records(timeout)
        return await self.fetched(records, active), active

    async def fetched(self, records: dict, active: set[TP] | None) -> dict:
        """A fetch's records by partition, before Faust drops those of partitions not in `active`."""
        return records

    # -- Faust's bookkeeping ------------------------------------------------------------------------
    def committed(self, tp: TP) -> int | None:
        """The offset Faust takes as committed (where the next commit must start)."""
        return self._committed_offset.get(tp)

    def set_committed(self, tp: TP, offset: int) -> None:
        self._committed_offset[tp] = offset

    def acked(self, tp: TP) -> list[int]:
        """Offsets acked and not yet committed (Faust's own list: a commit rule consumes it)."""
        return self._acked[tp]

    def acked_index(self, tp: TP) -> set[int]:
        return self._acked_index[tp]

    def is_changelog(self, tp: TP) -> bool:
        return self._is_changelog_tp(tp)

    def fetching(self) -> set[TP]:
        """The partitions the next fetch asks for (Faust's own set: adding to it resumes one)."""
        return self._get_active_partitions()

    def paused(self) -> set[TP]:
        return self._paused_partitions

    def buffered(self) -> set[TP]:
        return self._buffered_partitions

    async def position(self, tp: TP) -> int | None:
        """Where the next fetch of `tp` starts."""
        return await self._thread.position(tp)


class HookedProducer(aiokafka_driver.Producer):
    def _settings_extra(self) -> dict:
        return self.client_settings(super()._settings_extra())

    def client_settings(self, extra: dict) -> dict:
        """The keyword arguments Faust adds to aiokafka's producer."""
        return extra


def queued_messages(flow_control) -> list:
    """The messages waiting in every queue that the app's flow control clears when it resumes."""
    found = []
    for queue in list(flow_control._queues):
        for item in list(queue._queue):
            if (message := getattr(item, "message", None)) is not None:
                found.append(message)
    return found


def before_clear(flow_control, hook: Callable[[], None]) -> None:
    """Run `hook` each time the flow control is about to clear its queues."""
    clear = flow_control.clear

    def hooked() -> None:
        hook()
        clear()

    flow_control.clear = hooked


class HookedStore(rocksdb.Store):
    def _open_for_partition(self, partition: int):
        return self.open_partition(partition, lambda: super(HookedStore, self)._open_for_partition(partition))

    def open_partition(self, partition: int, open_db: Callable[[], Any]) -> Any:
        """A partition's database, as `open_db` opens it."""
        return open_db()


def databases(store: rocksdb.Store) -> dict[int, Any]:
    """The store's open databases by partition (its own map: popping one forgets it)."""
    return store._dbs


def database(store: rocksdb.Store, partition: int) -> Any:
    """The partition's database, opened if it is not."""
    return store._db_for_partition(partition)


def agent_actors(agent: faust.types.AgentT) -> list:
    """The running instances of an agent (each has `crashed`)."""
    return agent._actors


class HookedWorker(faust.Worker):
    """Faust's worker, told of a stop signal before it starts stopping (`on_stop_signal`)."""

    def _on_sigint(self) -> None:
        self.on_stop_signal()
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self.on_stop_signal()
        super()._on_sigterm()

    def stop_as_signalled(self, signum: int) -> None:
        """Stop as mode does on SIGINT or SIGTERM (for a signal that arrived before its handlers)."""
        (self._on_sigint if signum == signal.SIGINT else self._on_sigterm)()

    def on_stop_signal(self) -> None:
        """SIGINT or SIGTERM arrived."""
