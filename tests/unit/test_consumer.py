"""StrictConsumer: it drops no record, and commits only a consecutive run of acked offsets that starts at the committed one."""

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

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


async def delivered_after_a_prefetched_record(consumer_class) -> set[int]:
    """Faust's own drain loop, fed as after a seek to committed offset 58 when a record fetched before
    the seek (83) comes first (faust-streaming #221); returns the offsets handed to the agents."""
    app = faust.App("drain-probe", broker="kafka://127.0.0.1:1", store="memory://")
    seen: set[int] = set()

    async def callback(message):
        seen.add(message.offset)

    consumer = consumer_class(StrictTransport(app.conf.broker_consumer, app), callback=callback,
                              on_partitions_revoked=None, on_partitions_assigned=None)
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
