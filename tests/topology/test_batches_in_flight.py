"""`Wiring.settled` with two batches in flight, on a fake stream and producer: the next batch is
judged while the one before it is still being judged, yet sends only once that one has all its
outcomes, and acks only after it acked; with one in flight nothing overlaps. A batch whose
judging fails is narrowed as before, and its successor still waits for its outcomes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust

from guardstream.topology.settings import Settings
from guardstream.topology.wiring import Wiring
from guardstream.wire.policy import PoliciesInForce


class FakeStream:
    def __init__(self, batches: list[list[int]]):
        self.batches, self.acked = batches, []
        self.done = asyncio.Event()

    async def noack_take(self, size, wait_s):
        for offsets in self.batches:
            yield [SimpleNamespace(message=SimpleNamespace(topic="in", partition=0, offset=o, key=b"k", value=b"v"))
                   for o in offsets]
        await asyncio.Event().wait()  # a stream never ends

    async def ack(self, event) -> None:
        self.acked.append(event.message.offset)
        if len(self.acked) == sum(map(len, self.batches)):
            self.done.set()


async def run(in_flight: int, slow_first: float, poison: int | None = None) -> tuple[list, list, FakeStream]:
    w = Wiring(faust.App("in-flight-test", broker="kafka://127.0.0.1:1", store="memory://"), Settings(), "x",
               PoliciesInForce())
    log, sent = [], []

    class Producer:
        async def send(self, topic, key, value, partition, timestamp, headers):
            sent.append(value)
            acked = asyncio.get_running_loop().create_future()
            acked.set_result(None)
            return acked

    w.app.producer = Producer()

    async def step(records) -> None:
        first = records[0].offset
        log.append(("judging", first))
        await asyncio.sleep(slow_first if first == 0 else 0.01)
        if poison in [r.offset for r in records]:
            if len(records) > 1 or records[0].offset == poison:
                raise ValueError("poison")
        log.append(("judged", first))
        await w.deliver([(w.verdicts, "k", str(r.offset).encode()) for r in records])

    stream = FakeStream([[0, 1, 2], [3, 4], [5]])
    loop = asyncio.create_task(w.settled("gen", stream, 3, 0.01, step, in_flight))
    await asyncio.wait_for(stream.done.wait(), 10)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    return log, sent, stream


async def test_two_in_flight_overlap_their_judging_yet_send_and_ack_in_order():
    log, sent, stream = await run(2, slow_first=0.3)
    assert log.index(("judging", 3)) < log.index(("judged", 0))  # the second was judged while the first was
    assert sent[:3] == [b"0", b"1", b"2"] and sent[3:] == [b"3", b"4", b"5"]  # ...yet sent after it
    assert stream.acked == [0, 1, 2, 3, 4, 5]


async def test_one_in_flight_judges_a_batch_only_after_the_last_one_acked():
    log, sent, stream = await run(1, slow_first=0.3)
    assert log == [("judging", 0), ("judged", 0), ("judging", 3), ("judged", 3), ("judging", 5), ("judged", 5)]
    assert sent == [b"0", b"1", b"2", b"3", b"4", b"5"] and stream.acked == [0, 1, 2, 3, 4, 5]


async def test_a_narrowed_batch_keeps_its_successor_waiting_for_every_outcome():
    log, sent, stream = await run(2, slow_first=0.2, poison=1)
    letters = [v for v in sent if v.startswith(b"{")]
    assert len(letters) == 1 and b'"offset":1' in letters[0] and b"poison" in letters[0]
    verdicts = [v for v in sent if not v.startswith(b"{")]
    assert verdicts == [b"0", b"2", b"3", b"4", b"5"] and sent.index(letters[0]) < sent.index(b"3")
    assert stream.acked == [0, 1, 2, 3, 4, 5]


async def test_a_batch_whose_acks_fail_stops_the_agent_at_once_though_no_batch_follows():
    """As it did when batches settled inline: the failure is raised, not held until the next batch."""
    w = Wiring(faust.App("in-flight-test", broker="kafka://127.0.0.1:1", store="memory://"), Settings(), "x",
               PoliciesInForce())

    class Refusing(FakeStream):
        async def ack(self, event) -> None:
            raise RuntimeError("the consumer was closed under this batch")

    async def step(records) -> None:
        await asyncio.sleep(0.05)

    stream = Refusing([[0, 1, 2]])  # and then nothing, ever
    agent = asyncio.create_task(w.settled("gen", stream, 3, 0.01, step, in_flight=2))
    done, _ = await asyncio.wait([agent], timeout=5)
    assert done, "the agent went on waiting for a batch after its last one failed"
    assert "consumer was closed" in str(agent.exception())
