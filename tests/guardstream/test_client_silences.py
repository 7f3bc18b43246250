"""Every silence ends in the tenant's fail mode within the caller's timeout, and nothing a caller
awaits raises: a producer that fails or hangs, a reader that dies, a chunk without a verdict, one
tenant holding every slot. Fakes stand in for Kafka here; the fail-closed matrix against the real
broker and worker is `test_fail_closed.py`."""

import asyncio
import time

from aiokafka.errors import KafkaConnectionError, ProducerClosed, TopicAuthorizationFailedError

from guardstream.client import Guard, Slots, conversation
from guardstream.schemas import Action, StreamPosition
from guardstream.topology.settings import Settings
from guardstream.wire.policy import Policy, TenantPolicy

from tests.guardstream.test_client import verdict


class Producer:
    """`send` fails with `error`, hangs when `hang`, else is acked at once."""

    def __init__(self, error: Exception | None = None, hang: bool = False):
        self.error, self.hang, self.sent = error, hang, []

    async def send(self, topic, value, key=None):
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Consumer:
    """A reader's consumer that fails its next `getmany` when `fail` is set."""

    def __init__(self):
        self.fail, self.stopped = False, False

    async def getmany(self, timeout_ms=0):
        if self.fail:
            raise KafkaConnectionError("the connection to the broker broke")
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def stop(self):
        self.stopped = True


def a_guard(producer: Producer | None = None, **kw) -> Guard:
    policy = Policy(tenants={"open": TenantPolicy(fail_mode="open")})
    g = Guard("unused:9092", Settings.load({}, policy=policy), **kw)
    g._producer, g.verdicts.consumer = producer or Producer(), Consumer()
    g.verdicts._reading.set()
    g.verdicts._broker_answered_at = g._policies.current_at = time.monotonic()
    return g


def test_a_kafka_error_is_the_fail_mode_not_an_exception():
    async def run():
        outcomes = []
        for error in (TopicAuthorizationFailedError(), ProducerClosed(), ValueError("cannot serialize")):
            g = a_guard(Producer(error))
            outcomes += [await g.moderate(conversation("c", "acme", "hi"), timeout=5),
                         await g.moderate(conversation("c", "open", "hi"), timeout=5)]
        return outcomes

    outcomes = asyncio.run(run())
    assert [o.action for o in outcomes] == [Action.block, Action.allow] * 3
    assert all(o.timed_out and o.reason.startswith("error: ") for o in outcomes)


def test_a_dead_reader_fails_every_waiter_at_once_and_is_restarted():
    async def run():
        g = a_guard()
        reopened = asyncio.Event()

        async def open_reader():  # the restart: a new consumer at the topic's end
            g.verdicts._reading.set()
            reopened.set()
            return Consumer()

        g.verdicts.open = open_reader
        reader = asyncio.create_task(g.verdicts.keep_reading())
        waiting = [asyncio.create_task(g.moderate(conversation(f"c{i}", t, "hi"), timeout=30))
                   for i, t in enumerate(["acme", "open"])]
        async with g.stream("s", "hi", tenant="acme", chunk_timeout=30) as closed, \
                g.stream("s", "hi", tenant="open", chunk_timeout=30) as open_:
            await closed.push("a")
            await open_.push("a")
            await asyncio.sleep(0.1)
            began = time.monotonic()
            g.verdicts.consumer.fail = True
            outcomes = await asyncio.gather(*waiting)
            answered_in = time.monotonic() - began
            down = g.readiness()
            late = await g.moderate(conversation("c9", "acme", "hi"), timeout=30)  # asked while the reader is down
            await asyncio.wait_for(reopened.wait(), 10)
            back = g.readiness()
            final = await closed.finish(timeout=30)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return outcomes, answered_in, down, late, back, closed, open_, final

    outcomes, answered_in, down, late, back, closed, open_, final = asyncio.run(run())
    assert [(o.action, o.reason) for o in outcomes] == [(Action.block, "reader_down"), (Action.allow, "reader_down")]
    assert answered_in < 2 and not down[0] and "reader" in down[1]
    assert late.action is Action.block and late.reason == "reader_down"
    assert back == (True, "reading verdicts")
    assert closed.stopped.is_set() and closed.stop_reason == "reader_down" and not open_.stopped.is_set()
    assert final.action is Action.block and final.reason == "reader_down"


def test_a_chunk_without_a_verdict_in_time_stops_a_fail_closed_stream():
    async def run():
        g = a_guard()
        at = lambda seq: StreamPosition(stream_id="s", seq=seq, token_offset=seq, token_count=1)  # noqa: E731
        async with g.stream("c", "hi", tenant="acme", stream_id="s", chunk_timeout=0.3) as judged, \
                g.stream("c", "hi", tenant="acme", stream_id="silent", chunk_timeout=0.3) as silent, \
                g.stream("c", "hi", tenant="open", stream_id="silent", chunk_timeout=0.3) as open_:
            for s in (judged, silent, open_):
                await s.push("a")
            g.verdicts.deliver(verdict("s-0", stream=at(0), nonce=judged.nonce))  # only the first stream's chunk is judged
            began = time.monotonic()
            await asyncio.wait_for(silent.stopped.wait(), 2)
            stopped_in = time.monotonic() - began
            await asyncio.sleep(0.4)
        return judged, silent, open_, stopped_in

    judged, silent, open_, stopped_in = asyncio.run(run())
    assert silent.stop_reason == "timeout" and silent.stop_token is None and stopped_in < 0.6
    assert not judged.stopped.is_set() and not open_.stopped.is_set()  # judged in time; fail-open goes on


def test_a_push_that_cannot_be_sent_returns_within_its_timeout():
    async def run():
        g = a_guard(Producer(hang=True))
        async with g.stream("c", "hi", tenant="acme", chunk_timeout=0.2) as closed, \
                g.stream("c", "hi", tenant="open", chunk_timeout=0.2) as open_:
            began = time.monotonic()
            sent = [await closed.push("a"), await open_.push("a")]
            sent += [await open_.push("b") for _ in range(20)]  # after a piece that was not sent: none waits
            took = time.monotonic() - began
            outcomes = [await closed.finish(timeout=5), await open_.finish(timeout=5)]
            finished_in = time.monotonic() - began - took
        return closed, open_, sent, took, outcomes, finished_in

    closed, open_, sent, took, outcomes, finished_in = asyncio.run(run())
    assert not any(sent) and took < 1 and finished_in < 0.1
    assert closed.stop_reason == "timeout" and not open_.stopped.is_set()
    assert [(o.action, o.timed_out) for o in outcomes] == [(Action.block, True), (Action.allow, True)]


def test_one_tenant_cannot_take_every_slot():
    async def run():
        slots, forever = Slots(total=8, tenant_share=0.25), asyncio.Event()
        hogs = [asyncio.create_task(slots.run("noisy", forever.wait)) for _ in range(20)]
        await asyncio.sleep(0.05)
        served = await asyncio.wait_for(slots.run("quiet", lambda: asyncio.sleep(0, "served")), 1)
        held = 8 - slots.total._value  # noqa: SLF001 - the slots the noisy tenant holds
        forever.set()
        await asyncio.gather(*hogs)
        return served, held, (len(slots._users), slots._tenants)

    served, held, users = asyncio.run(run())
    assert served == "served" and held == 2 and users == (0, {})  # idle tenants are forgotten


def test_readiness_fails_while_the_policies_reader_is_behind_past_its_bound():
    g = a_guard()
    assert g.readiness() == (True, "reading verdicts")
    g._policies.current_at = time.monotonic() - g.settings.policy_max_stale_s - 1  # the fail modes may be stale
    ok, detail = g.readiness()
    assert not ok and "policies topic has not been read to its end" in detail
