"""Replies routed to the gateway that asked, on the real broker and worker: two gateways with
fixed reply partitions and one that claims its own each read only their own verdicts, the sinks'
verdict topic keeps them all, a chunk from another gateway cannot move a stream's replies, and a
gateway stopped mid-request answers within its timeout while a new one on the same partition
carries on."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from guardstream.client import Guard, conversation
from guardstream.kafka_io import produce_lines, records
from guardstream.schemas import Action, VerdictEvent

from tests.guardstream.test_client_pipeline import client_settings
from tests.helpers.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration
TIMEOUT_S = 120


async def replies_by_partition(settings, bootstrap: str) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    async for message in records(settings, bootstrap, "replies", idle_timeout_s=3):
        found.setdefault(message.partition, []).append(json.loads(message.value))
    return found


async def ask(guard: Guard, name: str, count: int) -> list:
    return await asyncio.gather(*(guard.moderate(conversation(f"rr-{name}-{i}", "gw-strict", f"hello {i}"))
                                  for i in range(count)))


async def guarded_stream(guard: Guard, name: str):
    async with guard.stream(f"rr-{name}-s", "hi", tenant="gw-strict", stream_id=f"rr-{name}-stream") as s:
        await s.push("hello there, ")
        return await s.finish("how are you?", timeout=TIMEOUT_S)


def test_each_gateway_reads_its_own_replies_and_the_sinks_read_every_verdict(worker):
    settings = client_settings()

    async def run():
        async with Guard(worker.bootstrap, settings, timeout_s=TIMEOUT_S, reply_partition=3) as a, \
                Guard(worker.bootstrap, settings, timeout_s=TIMEOUT_S, reply_partition=4) as b, \
                Guard(worker.bootstrap, settings, timeout_s=TIMEOUT_S) as claimed:
            outcomes = await asyncio.gather(ask(a, "a", 12), ask(b, "b", 12), ask(claimed, "all", 6),
                                            guarded_stream(a, "a"), guarded_stream(b, "b"))
            return outcomes, a.read, b.read, claimed.read, claimed.reply_partition, \
                await replies_by_partition(settings, worker.bootstrap)

    (from_a, from_b, from_all, stream_a, stream_b), read_a, read_b, read_c, home, replies = asyncio.run(run())
    for name, outcomes in (("a", from_a), ("b", from_b), ("all", from_all)):
        assert not [o for o in outcomes if o.verdict is None], f"gateway {name} timed out"
        assert [o.verdict.conversation_id for o in outcomes] == [f"rr-{name}-{i}" for i in range(len(outcomes))]
    assert stream_a.verdict.stream.final and stream_b.verdict.stream.final

    # each reply partition holds one gateway's verdicts only, and that gateway read nothing else
    assert home not in (None, 3, 4)
    mine = {3: "rr-a-", 4: "rr-b-", home: "rr-all-"}
    for partition, prefix in mine.items():
        held = [v for v in replies.get(partition, []) if v["conversation_id"].startswith("rr-")]
        assert held and all(v["conversation_id"].startswith(prefix) and v["reply_to"] == partition for v in held)
    assert not [v for p, vs in replies.items() if p not in mine for v in vs if v["conversation_id"].startswith("rr-")]
    for read, partition in ((read_a, 3), (read_b, 4), (read_c, home)):
        assert read["records"] <= len(replies[partition])  # its own partition only
        assert 0 < read["decoded"] <= read["records"]
    assert read_c["decoded"] == len(from_all)

    # the sinks' verdict topic has every verdict, routed or not
    verdicts = read_all(settings, worker.bootstrap, "verdicts", lambda v: v["conversation_id"].startswith("rr-"))
    for prefix, count in (("rr-a-", 12), ("rr-b-", 12), ("rr-all-", 6)):
        assert len({v["source_event_id"] for v in verdicts if v["conversation_id"].startswith(prefix)
                    and v["stream"] is None}) == count


def test_a_claim_outside_the_replies_topic_still_gets_its_verdict_on_the_verdict_topic(worker):
    settings = client_settings()
    event = conversation("rr-far", "gw-strict", "hello").model_copy(update={"reply_to": 4000})
    produce(settings, worker.bootstrap, [json.loads(event.model_dump_json())])
    deadline = time.monotonic() + TIMEOUT_S
    while not (found := read_all(settings, worker.bootstrap, "verdicts", lambda v: v["conversation_id"] == "rr-far")):
        assert time.monotonic() < deadline, "no verdict for a request whose reply partition does not exist"
    assert VerdictEvent.model_validate(found[0]).reply_to == 4000
    assert not [d for d in read_all(settings, worker.bootstrap, "dlq") if d.get("key") == "rr-far"]


def test_a_gateway_stopped_mid_request_answers_in_time_and_its_successor_reads_the_partition(worker):
    settings = client_settings()

    async def run():
        guard = Guard(worker.bootstrap, settings, timeout_s=3, reply_partition=5)
        await guard.start()
        asked = asyncio.create_task(guard.moderate(conversation("rr-gone", "gw-strict", "hello")))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await guard.stop()  # the process going down while the request waits
        outcome = await asked
        waited = time.monotonic() - began
        async with Guard(worker.bootstrap, settings, timeout_s=TIMEOUT_S, reply_partition=5) as successor:
            after = await successor.moderate(conversation("rr-after", "gw-strict", "hello"))
        return outcome, waited, after

    outcome, waited, after = asyncio.run(run())
    assert waited < 3 + 1 and (outcome.verdict is not None or outcome.action is Action.block)  # gw-strict fails closed
    assert after.verdict is not None and after.verdict.conversation_id == "rr-after"


def test_a_chunk_from_another_gateway_cannot_move_a_streams_replies(worker):
    settings = client_settings()

    async def run():
        async with Guard(worker.bootstrap, settings, timeout_s=TIMEOUT_S, reply_partition=5) as owner:
            async with owner.stream("rr-hijacked", "hi", tenant="gw-strict", stream_id="rr-hijacked-s") as s:
                await s.push("hello there, ")
                base = {"event_id": "rr-hijack-1", "conversation_id": "rr-hijacked", "stream_id": "rr-hijacked-s",
                        "tenant": "gw-strict", "seq": 1, "text_delta": "x", "reply_to": 6}
                await produce_lines(settings, worker.bootstrap, "chunks", [json.dumps(base), json.dumps({**base, "nonce": "0" * 32})])
                await asyncio.sleep(1)
                await s.push("how are ")
                return await s.finish("you?", timeout=TIMEOUT_S), await replies_by_partition(settings, worker.bootstrap)

    final, replies = asyncio.run(run())
    assert final.verdict is not None and final.verdict.stream.final and final.verdict.stream.token_count > 0
    ours = [v for p, vs in replies.items() for v in vs if v["conversation_id"] == "rr-hijacked"]
    assert ours and all(v["reply_to"] == 5 for v in ours)  # nothing was sent to the hijacker's partition
    letters = read_all(settings, worker.bootstrap, "dlq", lambda d: "rr-hijack-1" in d["raw_value"])
    assert len(letters) == 2 and all("does not carry the nonce of the stream's first chunk" in d["error"] for d in letters)
