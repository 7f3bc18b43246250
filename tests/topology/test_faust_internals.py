"""Each private name `topology/faust_internals.py` uses, against the installed faust-streaming,
mode, aiokafka and Faust RocksDB store: a release that renames one, stops calling it or changes
what it holds fails here, not silently in delivery. Where a behaviour can be run it is; where it
is a call deep in a library's loop, the library's own source is read for it.

(`tests/topology/test_consumer.py` runs what the consumer relies on besides: Faust dropping
records below the last one read, a fetch's records checked against the partitions active after
it, and the flow control clearing its queues on resume.)"""

from __future__ import annotations

import asyncio
import inspect
import signal

import aiokafka
import faust
import mode
from faust.stores import rocksdb
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from guardstream.topology import faust_internals
from guardstream.topology.consumer import StrictTransport
from guardstream.topology.faust_internals import HookedConsumer, HookedProducer, HookedStore, HookedWorker


def source(function) -> str:
    return inspect.getsource(function)


def an_app(store: str = "memory://", **kw) -> faust.App:
    app = faust.App("internals-probe", broker="kafka://127.0.0.1:1", store=store, **kw)
    app.transport = StrictTransport(app.conf.broker_consumer, app)
    return app


def test_faust_commits_the_offset_its_new_offset_hook_gives():
    class Fixed(HookedConsumer):
        def commit_offset(self, tp):
            return 7

    app = an_app()
    consumer, tp = Fixed(app.transport, callback=lambda *_: None, on_partitions_revoked=None,
                         on_partitions_assigned=None), TP("t", 0)
    assert consumer._filter_committable_offsets({tp}) == {tp: 7}


def test_the_bookkeeping_the_consumer_reads_is_faust_s_own():
    consumer, tp = an_app().consumer, TP("t", 0)
    assert consumer.committed(tp) is None and consumer.acked(tp) == [] and consumer.acked_index(tp) == set()
    consumer.set_committed(tp, 5)
    assert consumer._committed_offset[tp] == 5 and consumer.acked(tp) is consumer._acked[tp]
    assert "self._committed_offset[tp]" in source(faust_consumer.Consumer.ack)
    assert "acked_index.add(offset)" in source(faust_consumer.Consumer.ack)
    assert isinstance(consumer.fetching(), set) and isinstance(consumer.paused(), set)
    assert isinstance(consumer.buffered(), set)
    # the set a fetch is checked against, and the one resuming a partition adds to, is this one
    assert "self._get_active_partitions()" in source(faust_consumer.Consumer._wait_next_records)
    assert "self._get_active_partitions()" in source(faust_consumer.Consumer.resume_partitions)


def test_no_last_read_offset_is_kept_where_faust_drops_records_by_it():
    consumer, tp = an_app().consumer, TP("t", 0)
    consumer._read_offset[tp] = 10
    assert consumer._read_offset[tp] is None
    assert "self._read_offset" in source(faust_consumer.Consumer._drain_messages)


def test_the_fetch_hook_sees_every_fetch_before_faust_filters_it():
    assert "await self._wait_next_records(" in source(faust_consumer.Consumer.getmany)
    assert inspect.iscoroutinefunction(faust_consumer.Consumer._wait_next_records)


async def test_positions_come_from_the_consumer_thread():
    assert inspect.iscoroutinefunction(aiokafka_driver.AIOKafkaConsumerThread.position)
    assert "self._thread = self._new_consumer_thread()" in source(aiokafka_driver.Consumer.__init__)


def test_the_fetch_wait_reaches_the_aiokafka_consumer_at_its_start():
    assert "self._create_worker_consumer(" in source(aiokafka_driver.AIOKafkaConsumerThread._create_consumer)
    assert "self._fetch_max_wait_ms" in source(aiokafka.AIOKafkaConsumer.start)
    app = an_app()
    app.transport.fetch_max_wait_ms = 20
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, faust_internals._ConsumerThread)


def test_the_producer_settings_hook_reaches_aiokafka():
    assert "**self._settings_extra()" in source(aiokafka_driver.Producer._new_producer)

    class Marked(HookedProducer):
        def client_settings(self, extra):
            return {**extra, "marked": True}

    app = an_app()
    assert Marked(app.transport)._settings_extra()["marked"] is True


async def test_the_flow_control_clear_empties_the_queues_it_holds():
    assert "self.clear()" in source(FlowControlEvent.resume)
    flow, seen = FlowControlEvent(initially_suspended=False), []
    queue = FlowControlQueue(maxsize=4, flow_control=flow, clear_on_resume=True)

    class Item:
        message = "m"

    queue.put_nowait(Item())
    assert faust_internals.queued_messages(flow) == ["m"]
    faust_internals.before_clear(flow, lambda: seen.append(faust_internals.queued_messages(flow)))
    flow.resume()
    assert seen == [["m"]] and queue.empty()


def test_the_rocksdb_store_opens_partitions_through_the_hook_and_keeps_them_in_its_map(tmp_path):
    opened = []

    class Watched(HookedStore):
        def open_partition(self, partition, open_db):
            opened.append(partition)
            return open_db()

    app = an_app(store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("probe", partitions=2)
    store = Watched("rocksdb://", app, table)
    db = faust_internals.database(store, 1)
    assert opened == [1] and faust_internals.databases(store) == {1: db}
    assert isinstance(store, rocksdb.Store)
    faust_internals.databases(store).pop(1)
    db.close()


def test_an_agent_s_running_instances_say_whether_they_crashed():
    app = an_app()

    @app.agent()
    async def probe(stream):
        async for _ in stream:
            pass

    assert len(faust_internals.agent_actors(probe)) == 0 and "self._actors = WeakSet()" in source(faust.Agent.__init__)
    assert "self._actors.add(" in source(faust.Agent._prepare_actor)
    assert issubclass(faust.agents.actor.Actor, mode.Service)
    assert isinstance(inspect.getattr_static(mode.Service, "crashed"), property)


def test_mode_s_signal_handlers_are_the_hooks_the_worker_overrides():
    installs = source(mode.Worker._install_signal_handlers_unix)
    assert "self._on_sigint" in installs and "self._on_sigterm" in installs
    told = []

    class Told(HookedWorker):
        def on_stop_signal(self):
            told.append(True)

        def _schedule_shutdown(self, *args, **kwargs):  # mode's, which would stop the loop
            pass

    worker = Told(an_app(), loglevel="warning", redirect_stdouts=False, loop=asyncio.new_event_loop())
    worker._on_sigterm()
    worker.stop_as_signalled(signal.SIGINT)
    assert told == [True, True]
    # where a worker starts: the signal a start remembered is acted on once these handlers are in
    assert "self.default_on_first_start()" in source(faust.Worker.on_first_start)
    assert "self.install_signal_handlers()" in source(mode.Worker.default_on_first_start)
