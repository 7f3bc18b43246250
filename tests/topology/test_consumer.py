"""StrictConsumer: it drops no record, commits only a consecutive run of acked offsets that starts at the
committed one, and fetches again a head that never reached the agents."""

import asyncio

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

from guardstream.topology import consumer as consumer_module
from guardstream.topology.consumer import StrictConsumer, StrictTransport, committable


def run(acked, committed):
    acked, index = list(acked), set(acked)
    return committable(acked, index, committed), acked, index


def test_a_run_from_the_committed_offset_is_committed():
    assert run([10, 11, 12], 10) == (13, [], set())
    assert run([12, 10, 11, 15, 16], 10) == (13, [15, 16], {15, 16})


def test_an_unacked_record_at_the_head_holds_the_commit():
    # faust-streaming lets exactly this through (min(acked) - committed == 1)
    assert run([11, 12, 13], 10)[0] is None
    assert run([1, 2, 3], 0)[0] is None  # and skips its check when the committed offset is 0


def test_offsets_already_committed_are_dropped():
    assert run([8, 9, 10, 11], 10) == (12, [], set())


def test_without_a_committed_offset_the_first_run_is_committed():
    assert run([0, 1, 2, 5], None) == (3, [5], {5})
    assert run([], 4)[0] is None


def a_consumer(consumer_class=StrictConsumer, callback=lambda message: None):
    """A consumer of an app whose broker is never reached: its bookkeeping is driven by hand."""
    app = faust.App("consumer-probe", broker="kafka://127.0.0.1:1", store="memory://")
    return consumer_class(StrictTransport(app.conf.broker_consumer, app), callback=callback,
                          on_partitions_revoked=None, on_partitions_assigned=None)


async def delivered_after_a_prefetched_record(consumer_class) -> set[int]:
    """Faust's own drain loop, fed as after a seek to committed offset 58 when a record fetched before
    the seek (83) comes first (faust-streaming #221); returns the offsets handed to the agents."""
    seen: set[int] = set()

    async def callback(message):
        seen.add(message.offset)

    consumer = a_consumer(consumer_class, callback)
    tp, fetcher = TP("t", 0), faust.Service()
    consumer._read_offset[tp] = 57

    async def getmany(timeout):
        for offset in [83, *range(58, 90)]:
            yield tp, Message("t", 0, offset, 0.0, 0, {}, b"k", b"v", None)
        fetcher._stopped.set()

    consumer.getmany = getmany
    await consumer._drain_messages(fetcher)
    return seen


async def test_no_record_is_dropped_when_a_prefetched_one_arrives_first():
    assert set(range(58, 83)) - await delivered_after_a_prefetched_record(aiokafka_driver.Consumer), \
        "faust drops these (the bug this consumer exists for)"
    assert await delivered_after_a_prefetched_record(StrictConsumer) == set(range(58, 90))


async def test_a_head_that_never_reaches_the_agents_is_fetched_again(monkeypatch):
    consumer, tp, now, seeks = a_consumer(), TP("t", 0), [100.0], []
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})

    async def seek(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(consumer, "seek", seek)
    consumer._committed_offset[tp] = 10
    consumer._acked[tp], consumer._acked_index[tp] = [11, 12], {11, 12}
    assert consumer._new_offset(tp) is None
    now[0] += consumer_module.REFETCH_AFTER_S - 1
    assert consumer._new_offset(tp) is None
    await asyncio.sleep(0)
    assert seeks == []  # a head still on its way is given time
    now[0] += 1
    assert consumer._new_offset(tp) is None
    await asyncio.sleep(0)
    assert seeks == [(tp, 10)]
    consumer._acked[tp].append(10)  # the record fetched again is acked: the whole run commits
    consumer._acked_index[tp].add(10)
    assert consumer._new_offset(tp) == 13


async def test_a_head_acked_in_time_is_never_fetched_again(monkeypatch):
    consumer, tp, now, seeks = a_consumer(), TP("t", 0), [100.0], []
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(consumer, "seek", lambda *a: seeks.append(a))
    consumer._committed_offset[tp] = 10
    consumer._acked[tp], consumer._acked_index[tp] = [11], {11}
    assert consumer._new_offset(tp) is None
    consumer._acked[tp].append(10)
    consumer._acked_index[tp].add(10)
    assert consumer._new_offset(tp) == 12
    consumer._acked[tp], consumer._acked_index[tp] = [13], {13}  # a later gap starts its own clock
    now[0] += consumer_module.REFETCH_AFTER_S
    assert consumer._new_offset(tp) is None
    await asyncio.sleep(0)
    assert seeks == []


async def test_a_partition_with_nothing_committed_starts_at_its_earliest_offset(monkeypatch):
    consumer, tp, changelog = a_consumer(), TP("t", 0), TP("app-table-changelog", 0)

    async def seek_to_committed():
        return {}

    async def earliest_offsets(*tps):
        return {t: 5 for t in tps}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp, changelog})
    monkeypatch.setattr(consumer, "_is_changelog_tp", lambda t: t == changelog)
    await consumer.perform_seek()
    assert consumer._committed_offset[tp] == 5 and consumer._committed_offset[changelog] is None
    consumer._acked[tp], consumer._acked_index[tp] = [6, 7], {6, 7}
    assert consumer._new_offset(tp) is None  # Faust would have committed 8 past the unacked 5


async def test_a_partition_whose_earliest_offset_is_unknown_commits_nothing_until_it_is_known(monkeypatch):
    consumer, tp = a_consumer(), TP("t", 0)
    answers = [OSError("broker away"), {tp: 5}]

    async def seek_to_committed():
        return {}

    async def earliest_offsets(*tps):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "_is_changelog_tp", lambda t: False)
    await consumer.perform_seek()
    consumer._acked[tp], consumer._acked_index[tp] = [6, 7], {6, 7}
    assert consumer._new_offset(tp) is None  # the head (5) is unknown: the run 6-7 would skip it
    await consumer._learn_heads()  # the timer asks again, and now the broker answers
    assert consumer._committed_offset[tp] == 5 and consumer._new_offset(tp) is None
    consumer._acked[tp].append(5)
    consumer._acked_index[tp].add(5)
    assert consumer._new_offset(tp) == 8


async def test_a_partition_whose_head_stops_moving_is_fetched_again(monkeypatch):
    """Nothing after the head acked either: records beyond a head that has not moved for
    STUCK_AFTER_S bring the partition back into the fetch, from its head."""
    consumer, tp, idle, now, seeks = a_consumer(), TP("t", 0), TP("t", 1), [100.0], []
    ends = {tp: 40, idle: 7}
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(consumer, "assignment", lambda: {tp, idle})

    async def highwaters(*tps):
        return {t: ends[t] for t in tps}

    async def seek(partition, offset):
        seeks.append((partition, offset))

    async def position(t):
        return None  # the client cannot say: the high watermarks decide

    monkeypatch.setattr(consumer, "highwaters", highwaters)
    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer._thread, "position", position)
    consumer._committed_offset.update({tp: 10, idle: 7})  # `idle` has nothing beyond its head
    consumer._get_active_partitions().discard(tp)  # as when Faust left it out of the fetch
    await consumer._fetch_stuck_heads()
    now[0] += consumer_module.STUCK_AFTER_S - 1
    await consumer._fetch_stuck_heads()
    assert seeks == []
    consumer._committed_offset[tp] = 12  # it moved: its clock starts again
    now[0] += 2
    await consumer._fetch_stuck_heads()
    assert seeks == []
    now[0] += consumer_module.STUCK_AFTER_S
    await consumer._fetch_stuck_heads()
    assert seeks == [(tp, 12)] and tp in consumer._get_active_partitions()
    ends[tp] = 12  # everything is committed: nothing to wait for
    for _ in range(2):
        await consumer._fetch_stuck_heads()
        now[0] += consumer_module.STUCK_AFTER_S
    assert seeks == [(tp, 12)] and not consumer._stuck


async def test_records_fetched_past_a_head_count_where_the_high_watermark_lags(monkeypatch):
    """Tansu's high watermark can lag its last records: a head that records were fetched past (and
    never acked: lost on the way to the agents) is fetched again although the watermark says
    there is nothing beyond it."""
    consumer, tp, now, seeks = a_consumer(), TP("t", 0), [100.0], []
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})

    async def highwaters(*tps):
        return {t: 10 for t in tps}  # no further than the head

    async def position(t):
        return 12  # two records fetched past it

    async def seek(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(consumer, "highwaters", highwaters)
    monkeypatch.setattr(consumer._thread, "position", position)
    monkeypatch.setattr(consumer, "seek", seek)
    consumer._committed_offset[tp] = 10
    await consumer._fetch_stuck_heads()
    now[0] += consumer_module.STUCK_AFTER_S
    await consumer._fetch_stuck_heads()
    assert seeks == [(tp, 10)]


async def fetched_while_paused(consumer_class, monkeypatch) -> tuple[list[int], list[tuple]]:
    """Faust's own getmany, over a fetch during which the partition is paused (as recovery pauses
    the partitions it restores): the offsets handed on, and the seeks made."""
    from aiokafka.structs import ConsumerRecord

    consumer, tp, seeks = a_consumer(consumer_class), TP("t", 0), []
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "highwater", lambda partition: 100)

    async def fetch(active_partitions, timeout):
        consumer.pause_partitions({tp})  # meanwhile, in another coroutine
        return {tp: [ConsumerRecord("t", 0, offset, 0, 0, b"k", b"v", None, 1, 1, ()) for offset in (40, 41)]}

    async def seek(partition, offset):
        seeks.append((partition, offset))

    monkeypatch.setattr(consumer, "_getmany", fetch)
    monkeypatch.setattr(consumer, "seek", seek)
    consumer._set_active_tps({tp})
    consumer.flow_active = True
    return [message.offset async for _, message in consumer.getmany(1.0)], seeks


async def test_records_of_a_partition_paused_during_their_fetch_are_fetched_again(monkeypatch):
    """Faust checks a fetch's records against the active partitions as they are after the fetch
    (the same set, which pausing changes) and drops those of a partition paused meanwhile, with its
    position already past them: lost until the next rebalance seeks it back."""
    assert await fetched_while_paused(aiokafka_driver.Consumer, monkeypatch) == ([], []), \
        "faust drops them without a seek (what this consumer mends)"
    assert await fetched_while_paused(StrictConsumer, monkeypatch) == ([], [(TP("t", 0), 40)])


async def test_records_faust_clears_from_its_queues_when_flow_resumes_are_fetched_again(monkeypatch):
    """Faust's flow control empties every channel queue when it resumes, as recovery does after
    putting the stream partitions back in the fetch: what was queued is dropped, its partition's
    position past it. Here its partition is sent back to the first record dropped: what the agents
    took before it (acked or not yet, the committed offset behind) is not handled twice."""
    from mode.utils.queues import FlowControlQueue

    from guardstream.topology.consumer import refetch_cleared

    app = faust.App("flow-probe", broker="kafka://127.0.0.1:1", store="memory://")
    app.transport = StrictTransport(app.conf.broker_consumer, app)
    # Faust's messages carry the partition as aiokafka gave it (TopicPartition), equal to TP but not one
    tp, fetched_as, seeks = TP("t", 0), TopicPartition("t", 0), []
    queue = FlowControlQueue(maxsize=10, flow_control=app.flow_control, clear_on_resume=True)

    async def seek(partition, offset):
        seeks.append((partition, offset))

    def queued(*offsets):
        for offset in offsets:
            queue.put_nowait(faust.Event(app, b"k", b"v", {}, Message("t", 0, offset, 0.0, 0, {}, b"k", b"v", None,
                                                                      tp=fetched_as)))

    monkeypatch.setattr(app.consumer, "seek", seek)
    monkeypatch.setattr(app.consumer, "assignment", lambda: {tp})
    app.consumer._committed_offset[tp] = 50
    queued(50, 51)
    app.flow_control.resume()
    assert queue.empty() and seeks == [], "faust clears the queue and nothing fetches those records again"
    refetch_cleared(app)
    queued(52, 53)
    app.flow_control.resume()
    await asyncio.sleep(0)
    assert queue.empty() and seeks == [(tp, 52)]
